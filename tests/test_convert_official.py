"""The official-checkpoint converter against an independent re-implementation of the official forward pass.

A tiny synthetic checkpoint is written with the official key names and layout (`model.` prefix, EVA post-norm tower
with `q_bias`/`v_bias`, Llama decoder layers under `.decoder_layer.`, gated cross-attention blocks before layers 3
and 7, the duplicate alias keys, a hub-style `config.json` and tokenizer files). The converted model's logits are
compared with a plain-torch forward written here from the official tensors:

* the EVA post-norm ViT (`x = x + norm1(attn(x)); x = x + norm2(mlp(x))`), last block output, CLS kept;
* the window position embedding of the official `construct_position_encoding` (column half, then row half);
  the thumbnail gets a zero embedding, which is this package's convention (the official thumbnail handling is
  unknown);
* the official masked cross-attention (einsum formula, `text_time == media_time`, rows before any image zeroed)
  and the per-sample `flag`;
* transformers' `LlamaForCausalLM` loaded from the official `lang_encoder` tensors for the decoder itself, with the
  cross-attention blocks run by forward pre-hooks before layers 3 and 7.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from infimm_hd import InfiMMHDForConditionalGeneration, InfiMMHDVisionConfig
from infimm_hd import convert_official as co
from infimm_hd.byte_tokenizer import byte_level_tokenizer
from infimm_hd.vision_tower import VisionTower

EOC_ID, IMAGE_ID, VOCAB = 259, 260, 261  # the byte tokenizer's 259 tokens + the two appended, as 32000/32001 in 32002
VISION = dict(image_size=56, patch=14, width=224, heads=2, depth=2, mlp=448, head_out=64)  # head dim 112 as EVA-E
TEXT = dict(hidden=256, heads=2, kv_heads=1, intermediate=512, layers=8)  # head dim 128 as Vicuna
CROSS = dict(layers=(3, 7), heads=12, head_dim=64, every_n=4)
GRID = (2, 2)  # one image: thumbnail + a 2x2 grid of windows = 5 crops
TOKENS_PER_CROP = (VISION["image_size"] // VISION["patch"]) ** 2 + 1  # 17


# -- the synthetic official checkpoint -------------------------------------------------------------------------------
class Rand:
    """Deterministic random tensors: weights ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1^2), biases/gates as asked."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=self.g)

    def linear(self, out_dim: int, in_dim: int) -> torch.Tensor:
        return self.normal(out_dim, in_dim, std=in_dim**-0.5)


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Official key names and shapes (section 5.4 of the design notes), under `model.`, aliases included."""
    r = Rand(seed)
    D, H = VISION["width"], VISION["mlp"]
    grid = VISION["image_size"] // VISION["patch"]
    sd: dict[str, torch.Tensor] = {
        "vision_encoder.cls_token": r.normal(1, 1, D, std=0.5),
        "vision_encoder.pos_embed": r.normal(1, 1 + grid * grid, D, std=0.5),
        "vision_encoder.patch_embed.proj.weight": r.normal(D, 3, VISION["patch"], VISION["patch"], std=0.05),
        "vision_encoder.patch_embed.proj.bias": r.normal(D, std=0.1),
        "vision_encoder.norm.weight": r.normal(D, mean=1.0, std=0.1),
        "vision_encoder.norm.bias": r.normal(D, std=0.1),
        "vision_encoder.head.weight": r.linear(VISION["head_out"], D),
        "vision_encoder.head.bias": r.normal(VISION["head_out"], std=0.1),
    }
    for i in range(VISION["depth"]):
        p = f"vision_encoder.blocks.{i}."
        sd |= {
            p + "norm1.weight": r.normal(D, mean=1.0, std=0.1),
            p + "norm1.bias": r.normal(D, std=0.1),
            p + "attn.q_bias": r.normal(D, std=0.2),
            p + "attn.v_bias": r.normal(D, std=0.2),
            p + "attn.qkv.weight": r.linear(3 * D, D),
            p + "attn.proj.weight": r.linear(D, D),
            p + "attn.proj.bias": r.normal(D, std=0.1),
            p + "norm2.weight": r.normal(D, mean=1.0, std=0.1),
            p + "norm2.bias": r.normal(D, std=0.1),
            p + "mlp.fc1.weight": r.linear(H, D),
            p + "mlp.fc1.bias": r.normal(H, std=0.1),
            p + "mlp.fc2.weight": r.linear(D, H),
            p + "mlp.fc2.bias": r.normal(D, std=0.1),
        }
    E, head_dim = TEXT["hidden"], TEXT["hidden"] // TEXT["heads"]
    kv, inner = TEXT["kv_heads"] * head_dim, CROSS["heads"] * CROSS["head_dim"]
    sd["lang_encoder.model.embed_tokens.weight"] = r.normal(VOCAB, E)
    for j in range(TEXT["layers"]):
        p = f"lang_encoder.model.layers.{j}.decoder_layer."
        layer = {
            "self_attn.q_proj.weight": r.linear(E, E),
            "self_attn.k_proj.weight": r.linear(kv, E),
            "self_attn.v_proj.weight": r.linear(kv, E),
            "self_attn.o_proj.weight": r.linear(E, E),
            "mlp.gate_proj.weight": r.linear(TEXT["intermediate"], E),
            "mlp.up_proj.weight": r.linear(TEXT["intermediate"], E),
            "mlp.down_proj.weight": r.linear(E, TEXT["intermediate"]),
            "input_layernorm.weight": r.normal(E, mean=1.0, std=0.1),
            "post_attention_layernorm.weight": r.normal(E, mean=1.0, std=0.1),
        }
        for name, value in layer.items():
            sd[p + name] = value
            sd[f"lang_encoder.old_decoder_blocks.{j}.{name}"] = value  # the same tensor: a shared module
        if j in CROSS["layers"]:
            block = {
                "attn_gate": r.normal(E),  # random, non-zero: the blocks must matter
                "ff_gate": r.normal(E),
                "attn.norm.weight": r.normal(E, mean=1.0, std=0.1),
                "attn.norm.bias": r.normal(E, std=0.1),
                "attn.to_q.weight": r.linear(inner, E),
                "attn.to_kv.weight": r.linear(2 * inner, D),
                "attn.to_out.weight": r.linear(E, inner),
                "ff.0.weight": r.normal(E, mean=1.0, std=0.1),
                "ff.0.bias": r.normal(E, std=0.1),
                "ff.1.weight": r.linear(E, E),
                "ff.3.weight": r.linear(E, E),
            }
            for name, value in block.items():
                sd[f"lang_encoder.model.layers.{j}.gated_cross_attn_layer.{name}"] = value
                sd[f"lang_encoder.gated_cross_attn_layers.{j}.{name}"] = value
    sd["lang_encoder.model.norm.weight"] = r.normal(E, mean=1.0, std=0.1)
    sd["lang_encoder.lm_head.weight"] = r.linear(VOCAB, E)
    return {"model." + key: value for key, value in sd.items()}


def official_language() -> dict:
    """The `language` section as transformers 4.35 wrote it for Vicuna (legacy keys included), scaled down."""
    return {
        "_name_or_path": "lmsys/vicuna-13b-v1.5",
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": TEXT["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": TEXT["intermediate"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "num_attention_heads": TEXT["heads"],
        "num_hidden_layers": TEXT["layers"],
        "num_key_value_heads": TEXT["kv_heads"],
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.32.0.dev0",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def official_config_json() -> dict:
    """The hub `config.json` layout (section 5.2) for the tiny model."""
    return {
        "_name_or_path": "./",
        "architectures": ["InfiMMHDModel"],
        "auto_map": {
            "AutoConfig": "configuration_infimm_hd.InfiMMHDConfig",
            "AutoModelForCausalLM": "modeling_infimm_hd.InfiMMHDModel",
        },
        "model_type": "infimm-hd",
        "seq_length": 4096,
        "tokenizer_type": "LlamaTokenizer",
        "torch_dtype": "float32",
        "transformers_version": "4.35.2",
        "use_cache": True,
        "use_flash_attn": False,
        "cross_attn_every_n_layers": CROSS["every_n"],
        "use_grad_checkpoint": False,
        "freeze_llm": True,
        "image_token_id": IMAGE_ID,
        "eoc_token_id": EOC_ID,
        "visual": {
            "image_size": VISION["image_size"],
            "layers": VISION["depth"],
            "width": VISION["width"],
            "head_width": VISION["width"] // VISION["heads"],
            "patch_size": VISION["patch"],
            "mlp_ratio": VISION["mlp"] / VISION["width"],
            "eva_model_name": "eva-clip-4b-14-x",
            "drop_path_rate": 0.0,
            "xattn": False,
            "postnorm": True,
            "fusedLN": False,
            "embed_dim": VISION["head_out"],
        },
        "language": official_language(),
    }


def write_official_repo(folder: Path, state: dict[str, torch.Tensor] | None = None, tokenizer: bool = True) -> Path:
    """A folder laid out like the hub repo: config.json, pytorch_model.bin (torch.save pickle), tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(official_state() if state is None else state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(official_config_json(), indent=2))
    if tokenizer:
        tok = byte_level_tokenizer()
        tok.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
        assert tok.convert_tokens_to_ids(["<|endofchunk|>", "<image>"]) == [EOC_ID, IMAGE_ID]
        tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def official_repo(tmp_path_factory) -> Path:
    return write_official_repo(tmp_path_factory.mktemp("official") / "infimm-hd")


@pytest.fixture(scope="module")
def converted(official_repo: Path, tmp_path_factory) -> tuple[Path, co.ConversionReport]:
    dst = tmp_path_factory.mktemp("converted") / "out"
    return dst, co.convert(official_repo, dst)


@pytest.fixture(scope="module")
def converted_model(converted) -> InfiMMHDForConditionalGeneration:
    return InfiMMHDForConditionalGeneration.from_pretrained(converted[0]).eval()


# -- the independent official forward --------------------------------------------------------------------------------
def unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("model."): value for key, value in state.items()}


def eva_forward(sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """EVA post-norm ViT from the official tensors: (N, 3, S, S) -> last block output (N, 1 + grid**2, D), no norm."""
    v = "vision_encoder."
    D, heads = VISION["width"], VISION["heads"]
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=VISION["patch"])
    x = x.flatten(2).transpose(1, 2)  # (N, grid**2, D)
    x = torch.cat([sd[v + "cls_token"].expand(len(x), -1, -1), x], dim=1) + sd[v + "pos_embed"]  # (N, L, D)
    N, L, _ = x.shape
    for i in range(VISION["depth"]):
        p = f"{v}blocks.{i}."
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(D), sd[p + "attn.v_bias"]])  # zero key bias
        qkv = (x @ sd[p + "attn.qkv.weight"].T + bias).reshape(N, L, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        q, k, v_ = qkv[0], qkv[1], qkv[2]  # (N, heads, L, hd)
        attn = ((q * (D // heads) ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
        out = (attn @ v_).transpose(1, 2).reshape(N, L, D) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + F.layer_norm(out, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        hidden = F.gelu(x @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        mlp = hidden @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + F.layer_norm(mlp, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    return x


def sinusoid(n_position: int, d_hid: int) -> torch.Tensor:
    """The Transformer table of the official `get_sinusoid_encoding_table`: sin on even dims, cos on odd ones."""
    table = torch.tensor(
        [[pos / 10000 ** (2 * (j // 2) / d_hid) for j in range(d_hid)] for pos in range(n_position)],
        dtype=torch.float64,
    )
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float()


def window_pe(rows: int, cols: int, dim: int) -> torch.Tensor:
    """The official `construct_position_encoding`: (rows*cols, dim), window (r, c) = cat(table[c], table[r])."""
    table = sinusoid(max(rows, cols), dim // 2)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([table[c.reshape(-1)], table[r.reshape(-1)]], dim=-1)


def official_media(sd: dict[str, torch.Tensor], pixels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One image's keys (1, crops * L, D): thumbnail (zero PE, this package's convention) then windows row-major."""
    tokens = eva_forward(sd, pixels)  # (1 + rows*cols, L, D)
    pe = torch.cat([torch.zeros(1, VISION["width"]), window_pe(*grid, VISION["width"])])  # (1 + rows*cols, D)
    return (tokens + pe[:, None, :]).reshape(1, -1, VISION["width"])


def official_cross_attention_block(
    sd: dict[str, torch.Tensor], j: int, x: torch.Tensor, media: torch.Tensor, media_locations: torch.Tensor
) -> torch.Tensor:
    """The official GatedCrossAttentionBlock for one sample: x (1, T, E), media (1, T_img * n, D), one image."""
    p = f"lang_encoder.model.layers.{j}.gated_cross_attn_layer."
    E, heads, hd = TEXT["hidden"], CROSS["heads"], CROSS["head_dim"]
    flag = float(media_locations.any())  # per sample: any <image> at all
    T_img, n = 1, media.shape[1]

    h = F.layer_norm(x, (E,), sd[p + "attn.norm.weight"], sd[p + "attn.norm.bias"], eps=1e-5)
    q = (h @ sd[p + "attn.to_q.weight"].T).reshape(1, -1, heads, hd).transpose(1, 2)  # (1, h, T, hd)
    k, v = (media @ sd[p + "attn.to_kv.weight"].T).chunk(2, dim=-1)
    k = k.reshape(1, -1, heads, hd).transpose(1, 2)  # (1, h, T_img*n, hd)
    v = v.reshape(1, -1, heads, hd).transpose(1, 2)
    q = q * hd**-0.5
    sim = torch.einsum("... i d, ... j d -> ... i j", q, k)  # (1, h, T, T_img*n)
    text_time = media_locations.long().cumsum(dim=-1)  # (1, T)
    media_time = torch.arange(T_img) + 1
    key_time = media_time.repeat_interleave(n)  # (T_img*n,)
    mask = text_time[:, None, :, None] == key_time[None, None, None, :]  # only the immediately preceding image
    sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    attn = sim.softmax(dim=-1)
    attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)  # text before any image attends to nothing
    out = torch.einsum("... i j, ... j d -> ... i d", attn, v).transpose(1, 2).reshape(1, -1, heads * hd)
    x = flag * (out @ sd[p + "attn.to_out.weight"].T) * torch.tanh(sd[p + "attn_gate"]) + x
    ff = F.layer_norm(x, (E,), sd[p + "ff.0.weight"], sd[p + "ff.0.bias"], eps=1e-5)
    ff = F.gelu(ff @ sd[p + "ff.1.weight"].T) @ sd[p + "ff.3.weight"].T
    return flag * ff * torch.tanh(sd[p + "ff_gate"]) + x


def official_llm(sd: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """transformers' Llama with the official lang_encoder tensors (no cross-attention: the hooks add it)."""
    llm = LlamaForCausalLM(LlamaConfig.from_dict(official_language()))
    state = {}
    for key, value in sd.items():
        if not key.startswith("lang_encoder.") or "gated_cross_attn" in key or "old_decoder_blocks" in key:
            continue
        state[key.removeprefix("lang_encoder.").replace(".decoder_layer.", ".")] = value
    llm.load_state_dict(state, strict=True)
    return llm.eval()


@torch.no_grad()
def official_logits(
    state: dict[str, torch.Tensor], input_ids: torch.Tensor, pixels: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Logits (B, T, V) of the official model; rows are run one at a time (each has its own media and flag)."""
    sd = unprefixed(state)
    llm = official_llm(sd)
    media = official_media(sd, pixels, grid)
    rows = []
    for ids in input_ids:
        locations = (ids == IMAGE_ID)[None]  # (1, T)
        row_media = media if locations.any() else torch.zeros(1, 1, VISION["width"])
        handles = []
        for j in CROSS["layers"]:

            def hook(module, args, kwargs, j=j, media=row_media, locations=locations):
                hidden = args[0] if args else kwargs.pop("hidden_states")
                hidden = official_cross_attention_block(sd, j, hidden, media, locations)
                return (hidden, *args[1:]), kwargs

            handles.append(llm.model.layers[j].register_forward_pre_hook(hook, with_kwargs=True))
        try:
            rows.append(llm(input_ids=ids[None]).logits[0])
        finally:
            for handle in handles:
                handle.remove()
    return torch.stack(rows)


def crops(seed: int = 1) -> torch.Tensor:
    """Normalised-looking pixels of one image: thumbnail + 2x2 windows, (5, 3, 56, 56)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1 + GRID[0] * GRID[1], 3, VISION["image_size"], VISION["image_size"], generator=g)


def text_ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, EOC_ID, (length,), generator=torch.Generator().manual_seed(seed))


# -- equivalence -----------------------------------------------------------------------------------------------------
def test_converted_logits_match_the_official_forward(converted_model) -> None:
    """Row 0: `<image>` then text (every token follows the image); row 1: text only (the blocks are off)."""
    image_row = torch.cat([torch.tensor([IMAGE_ID]), text_ids(10, 2), torch.tensor([EOC_ID]), text_ids(4, 3)])
    input_ids = torch.stack([image_row, text_ids(len(image_row), 4)])  # (2, 16)
    pixels = crops()
    expected = official_logits(official_state(), input_ids, pixels, GRID)
    with torch.no_grad():
        got = converted_model(input_ids=input_ids, pixel_values=pixels, image_grids=torch.tensor([GRID])).logits
    assert got.shape == expected.shape == (2, 16, VOCAB)
    assert (got - expected).abs().max() < 1e-4

    # The comparison has teeth: the image and the gates move the logits well beyond the tolerance.
    with torch.no_grad():
        other = converted_model(input_ids=input_ids, pixel_values=crops(9), image_grids=torch.tensor([GRID])).logits
    assert (other[0] - expected[0]).abs().max() > 1e-2
    assert torch.equal(other[1], got[1])  # the text-only row ignores the image


def test_text_before_the_image_matches_the_official_forward(converted_model) -> None:
    """The official prompt format puts BOS and the system prompt before `<image>`; the official block runs its
    gated FFN on those tokens too (per-sample flag), which converted checkpoints reproduce through
    `config.ffn_before_first_image`."""
    assert converted_model.config.ffn_before_first_image
    input_ids = torch.cat([torch.tensor([1]), text_ids(6, 5), torch.tensor([IMAGE_ID]), text_ids(6, 6)])[None]
    pixels = crops()
    expected = official_logits(official_state(), input_ids, pixels, GRID)
    with torch.no_grad():
        got = converted_model(input_ids=input_ids, pixel_values=pixels, image_grids=torch.tensor([GRID])).logits
    assert (got - expected).abs().max() < 1e-4


def test_vision_tokens_match_the_official_eva(converted_model) -> None:
    """The converted tower is timm's post-norm Eva and returns the last block's tokens, before the final norm."""
    tower = converted_model.vision_tower
    assert type(tower.model).__name__ == "Eva" and type(tower.model.blocks[0]).__name__ == "EvaBlockPostNorm"
    pixels = crops()
    with torch.no_grad():
        got = tower(pixels)
    expected = eva_forward(unprefixed(official_state()), pixels)
    assert got.shape == (5, TOKENS_PER_CROP, VISION["width"])
    assert (got - expected).abs().max() < 1e-4
    assert not tower.model.blocks[0].attn.k_bias.any()  # the zero key bias survived from_pretrained


# -- output format ---------------------------------------------------------------------------------------------------
def test_only_safetensors_are_written(converted) -> None:
    dst, report = converted
    files = sorted(p.name for p in dst.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [name for name in files if Path(name).suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert {Path(name).suffix for name in files} <= {".safetensors", ".json", ".jinja", ".model", ".md"}


def test_report_counts(converted, converted_model) -> None:
    _, report = converted
    num_params = sum(p.numel() for p in converted_model.parameters())
    assert report.tensors == len(converted_model.state_dict())
    assert report.parameters == num_params
    aliases = TEXT["layers"] * 9 + len(CROSS["layers"]) * 11
    assert len(report.aliases_dropped) == aliases and not report.aliases_promoted
    assert sorted(report.unused_dropped) == [
        "vision_encoder.head.bias",
        "vision_encoder.head.weight",
        "vision_encoder.norm.bias",
        "vision_encoder.norm.weight",
    ]


def test_config_of_the_converted_model(converted_model) -> None:
    cfg = converted_model.config
    assert cfg.cross_attention_layers == list(CROSS["layers"])
    assert (cfg.cross_attention_heads, cfg.cross_attention_head_dim, cfg.cross_attention_ff_mult) == (12, 64, 1.0)
    assert cfg.only_attend_immediate_media
    assert (cfg.image_token_id, cfg.end_of_chunk_token_id) == (IMAGE_ID, EOC_ID)
    assert cfg.window_size == VISION["image_size"]
    vision = cfg.vision_config
    assert (vision.architecture, vision.block_norm, vision.qkv_bias, vision.post_norm) == ("eva", "post", True, False)
    assert (vision.depth, vision.width, vision.num_heads, vision.feature_layer) == (2, 224, 2, -1)
    assert cfg.text_config.vocab_size == VOCAB and cfg.text_config.num_key_value_heads == TEXT["kv_heads"]


def test_tokenizer_is_copied_with_the_special_ids(converted) -> None:
    dst, report = converted
    assert "tokenizer.json" in report.tokenizer_files
    tok = AutoTokenizer.from_pretrained(dst)
    assert tok.convert_tokens_to_ids(["<|endofchunk|>", "<image>"]) == [EOC_ID, IMAGE_ID]


def test_tokenizer_with_other_ids_is_rejected(tmp_path: Path) -> None:
    src = write_official_repo(tmp_path / "src", tokenizer=False)
    tok = byte_level_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<|endofchunk|>"]})  # swapped order
    tok.save_pretrained(src)
    with pytest.raises(ValueError, match="<|endofchunk|>"):
        co.convert(src, tmp_path / "dst")


# -- other inputs ----------------------------------------------------------------------------------------------------
def test_single_bin_with_inferred_config(official_repo: Path, converted_model, tmp_path: Path) -> None:
    """A bare `.bin`: the config comes from the tensor shapes (EVA-E / Vicuna head sizes) and matches config.json."""
    state = torch.load(official_repo / "pytorch_model.bin", map_location="cpu", weights_only=True)
    inferred, from_json = co.infer_config(state), co.official_config(official_config_json(), state)
    assert inferred.vision_config.to_dict() == from_json.vision_config.to_dict()
    for name in ("cross_attention_layers", "cross_attention_heads", "cross_attention_ff_mult", "image_token_id"):
        assert getattr(inferred, name) == getattr(from_json, name)
    assert inferred.end_of_chunk_token_id == from_json.end_of_chunk_token_id
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert getattr(inferred.text_config, name) == getattr(from_json.text_config, name)

    co.convert(official_repo / "pytorch_model.bin", tmp_path / "dst")
    model = InfiMMHDForConditionalGeneration.from_pretrained(tmp_path / "dst")
    reference = converted_model.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


def test_sharded_checkpoint_without_prefix(converted_model, tmp_path: Path) -> None:
    """`pytorch_model.bin.index.json` with two shards, keys without `model.`, aliases split across shards."""
    state = unprefixed(official_state())
    keys = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    src = tmp_path / "src"
    src.mkdir()
    for name, shard_keys in shards.items():
        torch.save({key: state[key].clone() for key in shard_keys}, src / name)
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (src / "config.json").write_text(json.dumps(official_config_json()))
    report = co.convert(src, tmp_path / "dst")
    assert report.tensors == len(converted_model.state_dict()) and not report.tokenizer_files
    model = InfiMMHDForConditionalGeneration.from_pretrained(tmp_path / "dst")
    reference = converted_model.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


# -- strictness ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config():
    return co.official_config(official_config_json())


def test_missing_key_is_named(config) -> None:
    state = official_state()
    del state["model.vision_encoder.blocks.1.mlp.fc2.bias"]
    with pytest.raises(KeyError, match=re.escape("vision_tower.model.blocks.1.mlp.fc2.bias")):
        co.convert_state_dict(state, config)
    state = official_state()
    del state["model.lang_encoder.lm_head.weight"]
    with pytest.raises(KeyError, match=re.escape("language_model.lm_head.weight")):
        co.convert_state_dict(state, config)


def test_extra_key_is_named(config, tmp_path: Path) -> None:
    state = official_state()
    state["model.perceiver.latents"] = torch.zeros(64, VISION["width"])
    with pytest.raises(KeyError, match=re.escape("perceiver.latents")):
        co.convert_state_dict(state, config)
    state = official_state()
    state["model.vision_encoder.blocks.0.attn.k_bias"] = torch.zeros(VISION["width"])
    src = write_official_repo(tmp_path / "src", state, tokenizer=False)
    with pytest.raises(KeyError, match=re.escape("vision_encoder.blocks.0.attn.k_bias")):
        co.convert(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()  # nothing written for a rejected checkpoint
    assert co.main([str(src), str(tmp_path / "dst")]) == 1


def test_differing_alias_is_rejected(config) -> None:
    state = official_state()
    key = "model.lang_encoder.old_decoder_blocks.5.mlp.up_proj.weight"
    state[key] = state[key].clone()
    co.convert_state_dict(state, config)  # an equal copy (not shared storage) is fine
    state[key][0, 0] += 1.0
    with pytest.raises(ValueError, match=re.escape("old_decoder_blocks.5.mlp.up_proj.weight")):
        co.convert_state_dict(state, config)
    state = official_state()
    key = "model.lang_encoder.gated_cross_attn_layers.7.attn_gate"
    state[key] = state[key] + 1
    with pytest.raises(ValueError, match=re.escape("gated_cross_attn_layers.7.attn_gate")):
        co.convert_state_dict(state, config)


def test_shape_mismatch_is_named(config) -> None:
    state = official_state()
    state["model.vision_encoder.blocks.1.attn.qkv.weight"] = torch.zeros(512, VISION["width"])
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.qkv\.weight.*\(512, 224\).*\(672, 224\)"):
        co.convert_state_dict(state, config)


def test_alias_only_checkpoint_and_scalar_gates(config) -> None:
    """A deduplicated file that kept the alias names, and Flamingo-style scalar gates, both still convert."""
    state = unprefixed(official_state())
    for key in [k for k in state if ".decoder_layer." in k and k.startswith("lang_encoder.model.layers.2.")]:
        del state[key]
    state["lang_encoder.model.layers.3.gated_cross_attn_layer.ff_gate"] = torch.tensor([0.5])
    del state["lang_encoder.gated_cross_attn_layers.3.ff_gate"]
    out = co.convert_state_dict(state, config)
    assert torch.equal(
        out["language_model.model.layers.2.mlp.up_proj.weight"],
        state["lang_encoder.old_decoder_blocks.2.mlp.up_proj.weight"],
    )
    assert torch.equal(out["language_model.model.layers.3.cross_attn.ff_gate"], torch.full((TEXT["hidden"],), 0.5))


def test_feature_layer_drops_later_vision_blocks() -> None:
    cfg_json = official_config_json()
    config = co.official_config(cfg_json)
    config.vision_config.feature_layer = -2
    out = co.convert_state_dict(official_state(), config)
    assert not [key for key in out if key.startswith("vision_tower.model.blocks.1.")]
    assert "vision_tower.model.blocks.0.attn.qkv.weight" in out


def test_tensors_are_not_copied(config) -> None:
    state = official_state()
    out = co.convert_state_dict(state, config)
    src = state["model.lang_encoder.model.layers.3.decoder_layer.self_attn.q_proj.weight"]
    assert out["language_model.model.layers.3.decoder_layer.self_attn.q_proj.weight"] is src
    assert out["language_model.model.layers.2.self_attn.q_proj.weight"].data_ptr() == (
        state["model.lang_encoder.model.layers.2.decoder_layer.self_attn.q_proj.weight"].data_ptr()
    )


# -- safety ----------------------------------------------------------------------------------------------------------
def test_torch_load_is_only_called_with_weights_only(official_repo: Path, monkeypatch) -> None:
    calls = []
    real_load = torch.load

    def guarded_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded_load)
    state, config_json = co.load_official_checkpoint(official_repo)
    assert calls and config_json is not None and len(state) == len(official_state())

    # the converter is a package: scan every one of its modules
    source = "\n".join(path.read_text() for path in sorted(Path(co.__file__).parent.glob("*.py")))
    loads = re.findall(r"torch\.load\((.*?)\)\n", source)
    assert loads and all("weights_only=True" in call for call in loads)
    assert not re.search(r"import pickle|pickle\.loads?\(|weights_only=False|Unpickler", source)


def test_cli(official_repo: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        co.main(["--help"])
    assert exit_info.value.code == 0
    assert "SRC" in capsys.readouterr().out.upper()

    assert co.main([str(official_repo), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"converted \d+ tensors", out) and "alias" in out
    assert co.main([str(official_repo), str(tmp_path / "out")]) == 1  # refuses a non-empty destination
    assert "not an empty folder" in capsys.readouterr().err
    assert co.main([str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 1


def test_paper_scale_config_from_the_hub_json() -> None:
    """The real config.json (13B shapes) gives the paper's layout; built on meta, the model has ~18B parameters."""
    cfg_json = official_config_json()
    cfg_json["visual"] = {
        "image_size": 448,
        "layers": 64,
        "width": 1792,
        "head_width": 112,
        "patch_size": 14,
        "mlp_ratio": 8.571428571428571,
        "eva_model_name": "eva-clip-4b-14-x",
        "drop_path_rate": 0.0,
        "xattn": False,
        "postnorm": True,
        "fusedLN": False,
        "embed_dim": 1024,
    }
    cfg_json["language"] |= dict(
        hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_hidden_layers=40, num_key_value_heads=40
    )
    cfg_json["language"]["vocab_size"] = 32002
    cfg_json |= {"image_token_id": 32001, "eoc_token_id": 32000}
    config = co.official_config(cfg_json)
    assert config.cross_attention_layers == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    with torch.device("meta"):
        model = InfiMMHDForConditionalGeneration(config)
    mlp = model.vision_tower.model.blocks[0].mlp.fc1
    assert mlp.out_features == 15360 and model.vision_tower.tokens_per_crop == 1025
    total = sum(p.numel() for p in model.parameters())
    assert math.isclose(total / 1e9, 18.0, abs_tol=0.3)


# -- the explicit EVA vision tower the converter targets -------------------------------------------------------------
def tiny_vision_config(**overrides) -> InfiMMHDVisionConfig:
    base = {"width": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 4.0, "image_size": 56, "patch_size": 14}
    return InfiMMHDVisionConfig(**{**base, **overrides})


def vision_pixels(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))  # (N, 3, S, S)


def manual_eva(model: torch.nn.Module, x: torch.Tensor, post_norm_blocks: bool) -> torch.Tensor:
    """An EVA tower written out from its parameters: fused qkv with (q_bias, 0, v_bias), GELU MLP, pre/post-norm."""
    tokens = torch.nn.functional.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=14)
    tokens = tokens.flatten(2).transpose(1, 2)  # (N, grid**2, D)
    tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1) + model.pos_embed  # (N, L, D)
    N, L, D = tokens.shape
    for block in model.blocks:
        attn, heads = block.attn, block.attn.num_heads

        def attention(h: torch.Tensor, attn=attn, heads=heads) -> torch.Tensor:
            bias = torch.cat([attn.q_bias, torch.zeros(D), attn.v_bias])
            q, k, v = (h @ attn.qkv.weight.T + bias).reshape(N, L, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
            weights = (q @ k.transpose(-1, -2) * (D // heads) ** -0.5).softmax(-1)  # (N, heads, L, L)
            return attn.proj((weights @ v).transpose(1, 2).reshape(N, L, D))

        def mlp(h: torch.Tensor, block=block) -> torch.Tensor:
            return block.mlp.fc2(torch.nn.functional.gelu(block.mlp.fc1(h)))

        if post_norm_blocks:
            tokens = tokens + block.norm1(attention(tokens))
            tokens = tokens + block.norm2(mlp(tokens))
        else:
            tokens = tokens + attention(block.norm1(tokens))
            tokens = tokens + mlp(block.norm2(tokens))
    return tokens


@pytest.mark.parametrize("block_norm", ["pre", "post"])
def test_explicit_eva_tower_matches_manual_forward(block_norm: str) -> None:
    """`architecture="eva"` is timm's Eva with separate q/v biases (zero k bias) and the requested block norm."""
    torch.manual_seed(0)
    tower = VisionTower(tiny_vision_config(architecture="eva", block_norm=block_norm))
    expected_block = "EvaBlockPostNorm" if block_norm == "post" else "EvaBlock"
    assert type(tower.model).__name__ == "Eva" and type(tower.model.blocks[0]).__name__ == expected_block
    with torch.no_grad():
        for block in tower.model.blocks:  # timm initialises the q/v biases to zero: make them matter
            block.attn.q_bias.normal_()
            block.attn.v_bias.normal_()
        x = vision_pixels(2, 56)
        expected = manual_eva(tower.model, x, post_norm_blocks=block_norm == "post")
        assert (tower(x) - expected).abs().max() < 1e-4
    keys = set(tower.model.state_dict())
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.attn.qkv.weight"} <= keys
    assert "blocks.0.attn.k_bias" not in keys and "blocks.0.attn.qkv.bias" not in keys
    assert "norm.weight" not in keys  # the final norm is pruned (post_norm=False): features come before it


def test_explicit_vit_post_norm_blocks() -> None:
    tower = VisionTower(tiny_vision_config(block_norm="post"))
    assert type(tower.model.blocks[0]).__name__ == "ResPostBlock"
    block, x = tower.model.blocks[0], torch.randn(2, 17, 32)
    with torch.no_grad():
        h = x + block.norm1(block.attn(x))
        assert (block(x) - (h + block.norm2(block.mlp(h)))).abs().max() < 1e-5


def test_named_eva02_enormous_is_the_explicit_post_norm_eva() -> None:
    """timm's `eva02_enormous_patch14_clip_224` (open_clip EVA02-E-14) is already a post-norm, rope-free Eva: the
    explicit description used for converted official checkpoints builds the same parameters."""
    explicit = InfiMMHDVisionConfig(architecture="eva", block_norm="post", image_size=448)
    named = InfiMMHDVisionConfig(backend="timm", model_name="eva02_enormous_patch14_clip_224", image_size=448)
    with torch.device("meta"):
        a, b = VisionTower(explicit), VisionTower(named)
    assert type(b.model.blocks[0]).__name__ == "EvaBlockPostNorm" and b.model.rope is None
    shapes_a = {k: v.shape for k, v in a.model.state_dict().items()}
    shapes_b = {k: v.shape for k, v in b.model.state_dict().items()}
    assert shapes_a == shapes_b
    assert shapes_a["blocks.63.mlp.fc1.weight"] == (15360, 1792) and shapes_a["pos_embed"] == (1, 1025, 1792)


def test_non_persistent_buffers_are_rebuilt_after_a_loader_replaces_them() -> None:
    """Meta-device loaders (transformers' from_pretrained) refill non-persistent buffers with torch.empty_like."""
    tower = VisionTower(tiny_vision_config(architecture="eva", block_norm="post"))
    x = vision_pixels(1, 56)
    with torch.no_grad():
        expected = tower(x)
        for block in tower.model.blocks:
            block.attn.k_bias = torch.full_like(block.attn.k_bias, 1e3)  # what an uninitialised buffer may hold
        got = tower(x)
    assert torch.equal(got, expected)
    assert not any(block.attn.k_bias.any() for block in tower.model.blocks)


def test_explicit_architecture_needs_timm_for_eva() -> None:
    """Rejected when the config is built (the strict dataclass runs `validate_architecture` as a class validator)."""
    with pytest.raises(StrictDataclassError, match="backend='timm'"):
        tiny_vision_config(backend="open_clip", architecture="eva")
    with pytest.raises(StrictDataclassError, match="backend='timm'"):
        tiny_vision_config(backend="open_clip", block_norm="post")
    with pytest.raises(StrictDataclassError):
        tiny_vision_config(architecture="swin")
