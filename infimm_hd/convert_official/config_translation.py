"""Convert the official InfiMM-HD checkpoint (`Infi-MM/infimm-hd`) into this package's safetensors format.

The official weights are one pickled `pytorch_model.bin` (36 GB, bf16) of the `Flamingo` module tree, optionally
under a `model.` prefix (the HF wrapper's attribute), with these parts (see the design notes, section 5.4):

    vision_encoder.*                                  EVA-CLIP-E: post-norm blocks, fused qkv + q_bias/v_bias
    lang_encoder.model.layers.{j}.decoder_layer.*     every Llama decoder layer, under the FlamingoLayer wrapper
    lang_encoder.model.layers.{j}.gated_cross_attn_layer.*   the gated cross-attention block before layer j
    lang_encoder.model.{embed_tokens,norm}.*, lang_encoder.lm_head.weight
    lang_encoder.old_decoder_blocks.{j}.*             alias of ...layers.{j}.decoder_layer.* (shared modules)
    lang_encoder.gated_cross_attn_layers.{j}.*        alias of ...layers.{j}.gated_cross_attn_layer.*

They map onto `InfiMMHDForConditionalGeneration` as follows:

    vision_encoder.X                           -> vision_tower.model.X      (timm `Eva` uses the EVA-CLIP names)
    lang_encoder.model.layers.{j}.decoder_layer.X
                                               -> language_model.model.layers.{j}.decoder_layer.X  (j cross layer)
                                               -> language_model.model.layers.{j}.X                (other layers)
    lang_encoder.model.layers.{j}.gated_cross_attn_layer.X -> language_model.model.layers.{j}.cross_attn.X
    lang_encoder.X                             -> language_model.X

Dropped on purpose: the aliases (after checking they hold the same values as their canonical twins), the tower's
final `norm` (unless `post_norm`) and CLIP projection `head`, vision blocks after `feature_layer`, and any rotary
`inv_freq` buffers. Everything else must map onto a parameter of the same shape, and every parameter must be
filled: an unknown, missing or mis-shaped key is an error that names it.

Safety: the `.bin` is read only with `torch.load(..., weights_only=True)` (no arbitrary unpickling), memory-mapped
when possible, and the model is assembled with its parameters on the meta device and the loaded tensors assigned
in place, so the checkpoint is never held twice. Output is safetensors only (`save_pretrained`).

Command line: `python -m infimm_hd.convert_official SRC DST` (see `main`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import CONFIG_MAPPING, PreTrainedConfig

from ..configuration import InfiMMHDConfig, InfiMMHDVisionConfig, every_nth_layer

__all__ = [
    "ConversionReport",
    "convert",
    "convert_state_dict",
    "infer_config",
    "load_official_checkpoint",
    "main",
    "official_config",
]

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"
OFFICIAL_IMAGE_TOKEN_ID = 32001
OFFICIAL_END_OF_CHUNK_TOKEN_ID = 32000
CROSS_ATTENTION_HEAD_DIM = 64  # `dim_head` of the official MaskedCrossAttention (fixed in every version of the code)

# Files of a hub folder that belong to the tokenizer (copied as they are, `auto_map` removed from the config).
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)

_WRAPPER_PREFIX = "model."
_VISION = "vision_encoder."
_LANG = "lang_encoder."
_LAYER_RE = re.compile(r"lang_encoder\.model\.layers\.(\d+)\.(decoder_layer|gated_cross_attn_layer)\.(.+)")
_ALIAS_RE = re.compile(r"lang_encoder\.(old_decoder_blocks|gated_cross_attn_layers)\.(\d+)\.(.+)")
_ALIAS_TARGET = {"old_decoder_blocks": "decoder_layer", "gated_cross_attn_layers": "gated_cross_attn_layer"}
_VISION_BLOCK_RE = re.compile(r"vision_encoder\.blocks\.(\d+)\.")
_GATES = ("attn_gate", "ff_gate")
# Flags of EVA's CLIPVisionCfg that change the architecture away from the one timm's `Eva` builds here.
_UNSUPPORTED_VISUAL_FLAGS = ("rope", "subln", "naiveswiglu", "swiglu", "timm_model_name", "ls_init_value")


@dataclass
class ConversionReport:
    """What a conversion consumed, dropped and produced (printed by `main`)."""

    tensors: int = 0
    parameters: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)
    aliases_dropped: list[str] = field(default_factory=list)
    aliases_promoted: list[str] = field(default_factory=list)
    unused_dropped: list[str] = field(default_factory=list)
    tokenizer_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable paragraph for the command line."""
        dtypes = ", ".join(f"{name}: {count}" for name, count in sorted(self.dtypes.items()))
        lines = [
            f"converted {self.tensors} tensors ({self.parameters:,} parameters; {dtypes})",
            f"dropped {len(self.aliases_dropped)} duplicate alias tensors (old_decoder_blocks / "
            f"gated_cross_attn_layers), identical to their canonical twins",
            f"dropped {len(self.unused_dropped)} unused tensors (vision final norm / head / blocks after the feature "
            "layer, rotary inv_freq)",
        ]
        if self.aliases_promoted:
            lines.append(f"used {len(self.aliases_promoted)} alias tensors whose canonical twin was absent")
        if self.tokenizer_files:
            lines.append(f"copied tokenizer files: {', '.join(self.tokenizer_files)}")
        return "\n".join(lines)


# -- reading the official checkpoint ---------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    """`torch.load` restricted to tensors and containers (`weights_only=True`), memory-mapped when the file allows.

    Memory mapping keeps a 36 GB file on disk until each tensor is read; legacy (pre-zip) files cannot be mapped and
    are read normally.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    """One `.bin`/`.pt`/`.pth` (safe torch.load) or `.safetensors` file as a flat name -> tensor dict."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    loaded = _torch_load(path)
    if not isinstance(loaded, Mapping):
        raise TypeError(f"{path} holds a {type(loaded).__name__}, not a state dict (name -> tensor mapping)")
    bad = [key for key, value in loaded.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise TypeError(f"{path} is not a flat state dict: entries {bad[:5]} are not str -> Tensor")
    return dict(loaded)


def _read_sharded(index_path: Path) -> dict[str, Tensor]:
    """A `*.index.json` checkpoint: every shard it names, checked against its `weight_map`."""
    weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        for key, value in _read_weight_file(index_path.parent / shard).items():
            if key in state:
                raise ValueError(f"tensor {key!r} appears in more than one shard of {index_path}")
            state[key] = value
    missing = sorted(set(weight_map) - set(state))
    extra = sorted(set(state) - set(weight_map))
    if missing or extra:
        raise ValueError(
            f"{index_path}: shards disagree with the weight_map (missing {missing[:5]}, extra {extra[:5]})"
        )
    return state


def load_official_checkpoint(src: str | Path) -> tuple[dict[str, Tensor], dict | None]:
    """The official state dict and its `config.json` (None when absent) from a hub-style folder or a single file.

    A folder holds `config.json` (optional) and one of `pytorch_model.bin.index.json` (shards),
    `pytorch_model.bin`, `model.safetensors.index.json` or `model.safetensors`; a file is a `.bin` or `.safetensors`.
    """
    src = Path(src)
    if src.is_file():
        return _read_weight_file(src), None
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is neither a checkpoint folder nor a weight file")
    config_path = src / "config.json"
    config_json = json.loads(config_path.read_text()) if config_path.is_file() else None
    for name in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
        if (src / name).is_file():
            return _read_sharded(src / name), config_json
    for name in ("pytorch_model.bin", "model.safetensors"):
        if (src / name).is_file():
            return _read_weight_file(src / name), config_json
    raise FileNotFoundError(
        f"{src} holds no weights: expected pytorch_model.bin, pytorch_model.bin.index.json, model.safetensors or "
        "model.safetensors.index.json"
    )


# -- normalising the official key space ------------------------------------------------------------------------------
def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """True when two tensors hold the same values; shared storage (how torch.save keeps the aliases) is checked first,
    so the 12.9B aliased LLM parameters are compared without being read."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a, b))


def _strip_prefix(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys without the HF wrapper's `model.` prefix (present or not, per key); a key given both ways is an error."""
    out: dict[str, Tensor] = {}
    for key, value in official.items():
        name = key[len(_WRAPPER_PREFIX) :] if key.startswith(_WRAPPER_PREFIX) else key
        if name in out:
            raise ValueError(f"checkpoint key {key!r} collides with another key once the 'model.' prefix is removed")
        out[name] = value
    return out


def _canonicalize(official: Mapping[str, Tensor], report: ConversionReport | None = None) -> dict[str, Tensor]:
    """Prefix stripped and aliases folded into their canonical keys (checked equal; used only if the twin is absent)."""
    state = _strip_prefix(official)
    canonical: dict[str, Tensor] = {}
    aliases: dict[str, tuple[str, Tensor]] = {}
    for key, value in state.items():
        match = _ALIAS_RE.fullmatch(key)
        if match:
            kind, index, rest = match.groups()
            aliases[key] = (f"lang_encoder.model.layers.{index}.{_ALIAS_TARGET[kind]}.{rest}", value)
        else:
            canonical[key] = value
    for alias, (twin, value) in aliases.items():
        if twin in canonical:
            if not _same_tensor(value, canonical[twin]):
                raise ValueError(
                    f"alias {alias!r} differs from its canonical twin {twin!r}; the checkpoint is inconsistent "
                    "(the official code registers both names for one module, so they must be identical)"
                )
            if report is not None:
                report.aliases_dropped.append(alias)
        else:
            canonical[twin] = value  # a deduplicated checkpoint may keep only the alias name
            if report is not None:
                report.aliases_promoted.append(alias)
    return canonical


# -- configs ---------------------------------------------------------------------------------------------------------
def _layer_indices(state: Mapping[str, Tensor], kind: str) -> list[int]:
    """Sorted layer indices j that have `lang_encoder.model.layers.{j}.{kind}.*` keys."""
    found = set()
    for key in state:
        match = _LAYER_RE.fullmatch(key)
        if match and match.group(2) == kind:
            found.add(int(match.group(1)))
    return sorted(found)


def _every_n(layers: list[int], num_layers: int) -> int | None:
    """The interval n for which `layers` is the official `(i + 1) % n == 0` pattern, if any."""
    for n in range(1, num_layers + 1):
        if every_nth_layer(num_layers, n) == layers:
            return n
    return None


def _require(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise KeyError(f"the official checkpoint has no {key!r}, which is needed to infer the model's shape")
    return state[key]


def _cross_attention_shape(state: Mapping[str, Tensor], layer: int, text_dim: int) -> tuple[int, float]:
    """(heads, ff_mult) of the cross-attention blocks, read from block `layer`'s `to_q` and `ff.1` shapes."""
    prefix = f"lang_encoder.model.layers.{layer}.gated_cross_attn_layer."
    inner = _require(state, prefix + "attn.to_q.weight").shape[0]
    if inner % CROSS_ATTENTION_HEAD_DIM:
        raise ValueError(f"cross-attention width {inner} is not a multiple of the head size {CROSS_ATTENTION_HEAD_DIM}")
    ff_dim = _require(state, prefix + "ff.1.weight").shape[0]
    return inner // CROSS_ATTENTION_HEAD_DIM, ff_dim / text_dim


def _dominant_dtype(state: Mapping[str, Tensor]) -> torch.dtype:
    """The floating dtype holding most elements (bf16 for the official file)."""
    counts: dict[torch.dtype, int] = {}
    for value in state.values():
        if value.is_floating_point():
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def _text_config(language: Mapping[str, Any]) -> PreTrainedConfig:
    """The LLM config from the official `language` dict (a full `LlamaConfig` dict written by transformers 4.35)."""
    language = dict(language)
    model_type = language.get("model_type", "llama")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"unknown language model_type {model_type!r} in the official config")
    language.pop("_name_or_path", None)
    return CONFIG_MAPPING[model_type].from_dict(language)


def _assemble_config(
    vision: InfiMMHDVisionConfig,
    text: PreTrainedConfig,
    *,
    cross_layers: list[int],
    every_n: int,
    heads: int,
    ff_mult: float,
    image_token_id: int,
    eoc_token_id: int,
    dtype: torch.dtype | None,
) -> InfiMMHDConfig:
    if dtype is not None:
        text.dtype = dtype
    config = InfiMMHDConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        cross_attention_layers=cross_layers,
        cross_attention_every_n_layers=every_n,
        cross_attention_heads=heads,
        cross_attention_head_dim=CROSS_ATTENTION_HEAD_DIM,
        cross_attention_ff_mult=ff_mult,
        only_attend_immediate_media=True,
        ffn_before_first_image=True,  # the official per-sample flag: see InfiMMHDConfig
        window_size=vision.image_size,
        image_token_id=image_token_id,
        end_of_chunk_token_id=eoc_token_id,
    )
    if dtype is not None:
        config.dtype = dtype
    return config


def official_config(
    official_config_json: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None
) -> InfiMMHDConfig:
    """Our config from the official `config.json` (its `visual`, `language`, interval and token ids).

    The tower becomes an explicit timm `Eva` (`architecture="eva"`, post-norm blocks when `visual.postnorm`,
    `num_heads = width // head_width`) whose last block's output, before the final norm and with the class token, is
    the cross-attention input, as in the official `return_all_features=True` path. Cross-attention blocks sit before
    layers `(i + 1) % cross_attn_every_n_layers == 0`; each is 12 heads x 64 with FFN multiplier 1 and attends only to
    the immediately preceding image. `config.json` does not record the block sizes, so when `state_dict` is given
    they (and the vocabulary size, which the official code grows after building the LLM from this config) are read
    from the tensors instead, and the dtype follows the tensors (else the top-level `torch_dtype`).
    """
    visual = dict(official_config_json.get("visual") or {})
    language = official_config_json.get("language")
    if not visual or not language:
        raise ValueError("the official config.json needs both a 'visual' and a 'language' section")
    unsupported = [flag for flag in _UNSUPPORTED_VISUAL_FLAGS if visual.get(flag)]
    if unsupported:
        raise ValueError(f"visual flags {unsupported} describe an EVA variant this converter does not build")
    width, head_width = int(visual["width"]), int(visual.get("head_width", 64))
    if width % head_width:
        raise ValueError(f"visual width {width} is not a multiple of head_width {head_width}")
    vision = InfiMMHDVisionConfig(
        backend="timm",
        architecture="eva",
        block_norm="post" if visual.get("postnorm", False) else "pre",
        qkv_bias=bool(visual.get("qkv_bias", True)),
        image_size=int(visual["image_size"]),
        patch_size=int(visual["patch_size"]),
        width=width,
        depth=int(visual["layers"]),
        num_heads=width // head_width,
        mlp_ratio=float(visual.get("mlp_ratio", 4.0)),
        feature_layer=-1,
        keep_cls=True,
        post_norm=False,
        layer_norm_eps=1e-6,
    )
    state = _canonicalize(state_dict) if state_dict is not None else None
    if state is not None:
        vocab = _require(state, "lang_encoder.model.embed_tokens.weight").shape[0]
        language = {**language, "vocab_size": int(vocab)}
    text = _text_config(language)
    every_n = int(official_config_json.get("cross_attn_every_n_layers", 4))
    cross_layers = every_nth_layer(text.num_hidden_layers, every_n)
    heads, ff_mult = 12, 1.0
    dtype = getattr(torch, str(official_config_json.get("torch_dtype", "")), None)
    dtype = dtype if isinstance(dtype, torch.dtype) else None
    if state is not None:
        found = _layer_indices(state, "gated_cross_attn_layer")
        if found and found != cross_layers:
            raise ValueError(
                f"config.json says cross_attn_every_n_layers={every_n} (layers {cross_layers}) but the checkpoint has "
                f"cross-attention blocks at layers {found}"
            )
        if found:
            heads, ff_mult = _cross_attention_shape(state, found[0], text.hidden_size)
        dtype = _dominant_dtype(state)
    return _assemble_config(
        vision,
        text,
        cross_layers=cross_layers,
        every_n=every_n,
        heads=heads,
        ff_mult=ff_mult,
        image_token_id=int(official_config_json.get("image_token_id", OFFICIAL_IMAGE_TOKEN_ID)),
        eoc_token_id=int(official_config_json.get("eoc_token_id", OFFICIAL_END_OF_CHUNK_TOKEN_ID)),
        dtype=dtype,
    )


def infer_config(
    state_dict: Mapping[str, Tensor],
    *,
    vision_head_dim: int = 112,
    text_head_dim: int = 128,
    block_norm: str = "post",
    image_token_id: int | None = None,
    end_of_chunk_token_id: int | None = None,
) -> InfiMMHDConfig:
    """Our config from the tensor shapes alone (for a bare `.bin` without its `config.json`).

    Shapes give the tower's size, patch, resolution (from `pos_embed`), depth and MLP width, the LLM's vocabulary,
    width, depth, MLP and key/value width, and the cross-attention layers and sizes. What no tensor records is taken
    from the official model: head sizes (EVA-E 112, Llama 128; override for other models), post-norm vision blocks
    (pre- and post-norm blocks have identical parameters), Vicuna's norm eps / context / special ids, and the token
    ids `<|endofchunk|>` = vocab - 2 and `<image>` = vocab - 1 (the two tokens the official code appends: 32000 and
    32001 for the 32002-token vocabulary).
    """
    state = _canonicalize(state_dict)
    pos_embed = _require(state, "vision_encoder.pos_embed")  # (1, 1 + grid**2, D)
    patch_weight = _require(state, "vision_encoder.patch_embed.proj.weight")  # (D, 3, P, P)
    width, patch = pos_embed.shape[-1], patch_weight.shape[-1]
    has_cls = "vision_encoder.cls_token" in state
    grid = math.isqrt(pos_embed.shape[1] - int(has_cls))
    if grid * grid != pos_embed.shape[1] - int(has_cls):
        raise ValueError(f"vision pos_embed {tuple(pos_embed.shape)} does not describe a square patch grid")
    blocks = {int(m.group(1)) for key in state if (m := _VISION_BLOCK_RE.match(key))}
    if not blocks:
        raise KeyError("the official checkpoint has no vision_encoder.blocks.* tensors")
    hidden = _require(state, "vision_encoder.blocks.0.mlp.fc1.weight").shape[0]
    if width % vision_head_dim:
        raise ValueError(
            f"vision width {width} is not a multiple of vision_head_dim={vision_head_dim}; pass the right one"
        )
    vision = InfiMMHDVisionConfig(
        backend="timm",
        architecture="eva",
        block_norm=block_norm,
        qkv_bias="vision_encoder.blocks.0.attn.q_bias" in state,
        image_size=grid * patch,
        patch_size=patch,
        width=width,
        depth=max(blocks) + 1,
        num_heads=width // vision_head_dim,
        mlp_ratio=hidden / width,
        keep_cls=has_cls,
    )

    embed = _require(state, "lang_encoder.model.embed_tokens.weight")  # (V, D)
    vocab, text_dim = embed.shape
    decoder_layers = _layer_indices(state, "decoder_layer")
    if not decoder_layers:
        raise KeyError("the official checkpoint has no lang_encoder.model.layers.*.decoder_layer.* tensors")
    first = f"lang_encoder.model.layers.{decoder_layers[0]}.decoder_layer."
    kv_dim = _require(state, first + "self_attn.k_proj.weight").shape[0]
    if text_dim % text_head_dim or kv_dim % text_head_dim:
        raise ValueError(f"LLM width {text_dim} / kv width {kv_dim} are not multiples of text_head_dim={text_head_dim}")
    num_layers = max(decoder_layers) + 1
    text = CONFIG_MAPPING["llama"](
        vocab_size=vocab,
        hidden_size=text_dim,
        intermediate_size=_require(state, first + "mlp.gate_proj.weight").shape[0],
        num_hidden_layers=num_layers,
        num_attention_heads=text_dim // text_head_dim,
        num_key_value_heads=kv_dim // text_head_dim,
        head_dim=text_head_dim,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings="lang_encoder.lm_head.weight" not in state,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cross_layers = _layer_indices(state, "gated_cross_attn_layer")
    if not cross_layers:
        raise KeyError("the official checkpoint has no gated_cross_attn_layer tensors")
    heads, ff_mult = _cross_attention_shape(state, cross_layers[0], text_dim)
    return _assemble_config(
        vision,
        text,
        cross_layers=cross_layers,
        every_n=_every_n(cross_layers, num_layers) or 4,
        heads=heads,
        ff_mult=ff_mult,
        image_token_id=vocab - 1 if image_token_id is None else image_token_id,
        eoc_token_id=vocab - 2 if end_of_chunk_token_id is None else end_of_chunk_token_id,
        dtype=_dominant_dtype(state),
    )


# -- the state-dict conversion ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with every *parameter* on the meta device while buffers stay real.

    Parameters are what the checkpoint replaces (by assignment, no copy); non-persistent buffers (rotary tables,
    EVA's zero key bias) are not in any state dict, so they must be computed for real at construction.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _build_model(config: InfiMMHDConfig) -> nn.Module:
    """Our model with its parameters on the meta device (no memory), ready for `load_state_dict(assign=True)`."""
    from ..modeling import InfiMMHDForConditionalGeneration

    with _parameters_on_meta():
        return InfiMMHDForConditionalGeneration(config)


def _expected_shapes(config: InfiMMHDConfig) -> dict[str, torch.Size]:
    """Every state-dict key of our model for `config`, with its shape (built on the meta device)."""
    from ..modeling import InfiMMHDForConditionalGeneration

    with torch.device("meta"):
        model = InfiMMHDForConditionalGeneration(config)
    return {key: value.shape for key, value in model.state_dict().items()}


def _target_key(key: str, cross_layers: set[int]) -> str | None:
    """Our name for an official (canonical, unprefixed) key; None when no rule applies."""
    if key.startswith(_VISION):
        return "vision_tower.model." + key[len(_VISION) :]
    match = _LAYER_RE.fullmatch(key)
    if match:
        index, kind, rest = int(match.group(1)), match.group(2), match.group(3)
        if kind == "gated_cross_attn_layer":
            return f"language_model.model.layers.{index}.cross_attn.{rest}"
        if index in cross_layers:
            return f"language_model.model.layers.{index}.decoder_layer.{rest}"
        return f"language_model.model.layers.{index}.{rest}"
    if key.startswith(_LANG):
        return "language_model." + key[len(_LANG) :]
    return None


def _is_unused(key: str, expected: Mapping[str, torch.Size], keep_blocks: int, depth: int) -> bool:
    """Official tensors our model deliberately has no place for (see the module docstring)."""
    if key.endswith(".inv_freq"):  # rotary tables saved by transformers < 4.31; recomputed, never loaded
        return True
    for part in ("vision_encoder.norm.", "vision_encoder.head.", "vision_encoder.fc_norm."):
        if key.startswith(part):
            return "vision_tower.model." + key[len(_VISION) :] not in expected
    match = _VISION_BLOCK_RE.match(key)
    return bool(match) and keep_blocks <= int(match.group(1)) < depth


def _fit_gate(target: str, value: Tensor, shape: torch.Size) -> Tensor:
    """A scalar Flamingo gate (shape (1,)) broadcast to our per-channel gate: tanh(g) * x is the same function."""
    if target.rsplit(".", 1)[-1] in _GATES and value.shape == (1,) and len(shape) == 1:
        return value.expand(shape).clone()
    return value


def _convert(
    official: Mapping[str, Tensor], config: InfiMMHDConfig, expected: Mapping[str, torch.Size] | None = None
) -> tuple[dict[str, Tensor], ConversionReport]:
    report = ConversionReport()
    expected = dict(_expected_shapes(config) if expected is None else expected)
    state = _canonicalize(official, report)
    vision = config.vision_config
    keep_blocks = vision.feature_layer % vision.depth + 1  # blocks 0 .. feature block are kept
    cross_layers = set(config.cross_attention_layers)

    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if _is_unused(key, expected, keep_blocks, vision.depth):
            report.unused_dropped.append(key)
            continue
        target = _target_key(key, cross_layers)
        if target is None or target not in expected:
            unknown.append(f"{key!r}" + (f" (-> {target!r})" if target else ""))
            continue
        value = _fit_gate(target, value, expected[target])
        if value.shape != expected[target]:
            raise ValueError(
                f"official tensor {key!r} has shape {tuple(value.shape)} but {target!r} needs {tuple(expected[target])}"
            )
        converted[target] = value
    if unknown:
        raise KeyError(f"{len(unknown)} official tensors have no place in the model: {', '.join(unknown[:20])}")
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise KeyError(f"{len(missing)} model tensors are not filled by the checkpoint: {missing[:20]}")

    report.tensors = len(converted)
    report.parameters = sum(value.numel() for value in converted.values())
    for value in converted.values():
        name = str(value.dtype).removeprefix("torch.")
        report.dtypes[name] = report.dtypes.get(name, 0) + 1
    return converted, report


def convert_state_dict(official: Mapping[str, Tensor], config: InfiMMHDConfig) -> dict[str, Tensor]:
    """The official state dict renamed onto `InfiMMHDForConditionalGeneration(config)`'s keys, strictly.

    Accepts keys with or without the `model.` prefix, folds the alias keys into their canonical twins (a `ValueError`
    if they differ), drops the unused tensors, and raises a `KeyError` naming any official tensor that maps nowhere or
    any model tensor left unfilled, and a `ValueError` naming any shape mismatch. Tensors are not copied.
    """
    return _convert(official, config)[0]


# -- tokenizer -------------------------------------------------------------------------------------------------------
def _tokenizer_ids(folder: Path) -> dict[str, set[int]]:
    """token -> ids declared for the special tokens by the tokenizer JSON files of `folder`."""
    found: dict[str, set[int]] = {}

    def note(token: str, index: int) -> None:
        found.setdefault(token, set()).add(int(index))

    if (path := folder / "added_tokens.json").is_file():
        for token, index in json.loads(path.read_text()).items():
            note(token, index)
    if (path := folder / "tokenizer_config.json").is_file():
        for index, entry in (json.loads(path.read_text()).get("added_tokens_decoder") or {}).items():
            note(entry["content"], int(index))
    if (path := folder / "tokenizer.json").is_file():
        data = json.loads(path.read_text())
        for entry in data.get("added_tokens") or []:
            note(entry["content"], entry["id"])
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            for token in (IMAGE_TOKEN, END_OF_CHUNK_TOKEN):
                if token in vocab:
                    note(token, vocab[token])
    return found


def _check_tokenizer(folder: Path, config: InfiMMHDConfig) -> None:
    """The tokenizer in `folder` must map `<|endofchunk|>` and `<image>` to the ids the model was trained with."""
    found = _tokenizer_ids(folder)
    for token, expected in ((END_OF_CHUNK_TOKEN, config.end_of_chunk_token_id), (IMAGE_TOKEN, config.image_token_id)):
        ids = found.get(token)
        if not ids:
            raise ValueError(f"the tokenizer files in {folder} do not define {token!r} (id {expected} expected)")
        if ids != {expected}:
            raise ValueError(f"the tokenizer maps {token!r} to {sorted(ids)} but the model uses id {expected}")


def _copy_tokenizer(src: Path, dst: Path, config: InfiMMHDConfig) -> list[str]:
    """Copy the tokenizer files (without the remote-code `auto_map`) and check the two special token ids."""
    names = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not names:
        return []
    _check_tokenizer(src, config)
    for name in names:
        if name == "tokenizer_config.json":
            data = json.loads((src / name).read_text())
            data.pop("auto_map", None)  # points at the official repo's Python files, which are not converted
            (dst / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            shutil.copyfile(src / name, dst / name)
    return names


# -- end to end ------------------------------------------------------------------------------------------------------
def _config_for(
    state: Mapping[str, Tensor], config_json: Mapping[str, Any] | None, config: InfiMMHDConfig | Mapping | None
) -> InfiMMHDConfig:
    if isinstance(config, InfiMMHDConfig):
        return config
    if config is not None:
        return official_config(config, state)
    if config_json is not None:
        return official_config(config_json, state)
    return infer_config(state)


def convert(
    src: str | Path, dst: str | Path, *, config: InfiMMHDConfig | Mapping[str, Any] | None = None
) -> ConversionReport:
    """Convert an official checkpoint (hub-style folder or single `.bin`) into a `save_pretrained` folder at `dst`.

    The config comes from `config` (ours, or an official `config.json` dict), else from `SRC/config.json`, else from
    the tensor shapes (`infer_config`). The model is built with parameters on the meta device and the checkpoint's
    tensors assigned to it (strict: every key consumed and filled), then saved as safetensors; tokenizer files are
    copied when present. `dst` must be empty or absent. Returns what was converted.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} already exists and is not an empty folder")
    official, config_json = load_official_checkpoint(src)
    ours = _config_for(official, config_json, config)

    model = _build_model(ours)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    state, report = _convert(official, ours, expected)
    del official
    model.load_state_dict(state, strict=True, assign=True)
    del state
    on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"tensors left on the meta device after loading: {on_meta[:10]}")
    model.vision_tower.init_non_persistent_buffers()

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, max_shard_size="5GB")
    pickled = sorted(p.name for p in dst.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
    if pickled:
        raise RuntimeError(f"save_pretrained wrote pickle files {pickled}; only safetensors are expected")
    if src.is_dir():
        report.tokenizer_files = _copy_tokenizer(src, dst, ours)
    return report


def main(argv: list[str] | None = None) -> int:
    """`convert-official SRC DST`: convert the official checkpoint and print what was converted. Returns the exit
    status (0 on success, 1 when the checkpoint or paths are rejected)."""
    parser = argparse.ArgumentParser(
        prog="convert-official",
        description="Convert the official InfiMM-HD checkpoint (Infi-MM/infimm-hd layout: config.json + "
        "pytorch_model.bin or shards, tokenizer files optional; or a single .bin) into an "
        "InfiMMHDForConditionalGeneration folder with safetensors weights.",
    )
    parser.add_argument("src", type=Path, help="official checkpoint folder, or a single pytorch_model.bin")
    parser.add_argument("dst", type=Path, help="output folder (created; must be empty)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="official config.json to use (default: SRC/config.json, else inferred from the tensor shapes)",
    )
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text()) if args.config is not None else None
        report = convert(args.src, args.dst, config=config)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError) as err:
        print(f"convert-official: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.src} -> {args.dst}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
