"""Config translation: our `InfiMMHDConfig` from the official `config.json` or, without one, from tensor shapes.

`official_config` translates the official `visual` / `language` sections (checked against the tensors when given);
`infer_config` rebuilds the same config from the shapes of a bare `.bin`. Both end in `_assemble_config`, which
fixes what the official model hard-codes (cross-attention head size, immediate-media attention, per-sample flag).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from transformers import CONFIG_MAPPING, PreTrainedConfig

from ..configuration import InfiMMHDConfig, InfiMMHDVisionConfig, every_nth_layer
from .key_mapping import _LAYER_RE, _VISION_BLOCK_RE, _canonicalize

OFFICIAL_IMAGE_TOKEN_ID = 32001
OFFICIAL_END_OF_CHUNK_TOKEN_ID = 32000
CROSS_ATTENTION_HEAD_DIM = 64  # `dim_head` of the official MaskedCrossAttention (fixed in every version of the code)
# Flags of EVA's CLIPVisionCfg that change the architecture away from the one timm's `Eva` builds here.
_UNSUPPORTED_VISUAL_FLAGS = ("rope", "subln", "naiveswiglu", "swiglu", "timm_model_name", "ls_init_value")


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
