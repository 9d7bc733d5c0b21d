"""The official key space and its mapping onto ours: the name patterns, prefix and alias folding, target names.

Everything here works on tensor *names* (the alias check compares values, by storage first). The tables of the
package docstring live here as `_target_key` (what maps where) and `_is_unused` (what is dropped on purpose);
`config_translation` reuses the patterns to read layer indices and `state_dict_conversion` applies the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .report import ConversionReport

_WRAPPER_PREFIX = "model."
_VISION = "vision_encoder."
_LANG = "lang_encoder."
_LAYER_RE = re.compile(r"lang_encoder\.model\.layers\.(\d+)\.(decoder_layer|gated_cross_attn_layer)\.(.+)")
_ALIAS_RE = re.compile(r"lang_encoder\.(old_decoder_blocks|gated_cross_attn_layers)\.(\d+)\.(.+)")
_ALIAS_TARGET = {"old_decoder_blocks": "decoder_layer", "gated_cross_attn_layers": "gated_cross_attn_layer"}
_VISION_BLOCK_RE = re.compile(r"vision_encoder\.blocks\.(\d+)\.")


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


# -- official key -> our key -----------------------------------------------------------------------------------------
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
    """Official tensors our model deliberately has no place for (see the package docstring)."""
    if key.endswith(".inv_freq"):  # rotary tables saved by transformers < 4.31; recomputed, never loaded
        return True
    for part in ("vision_encoder.norm.", "vision_encoder.head.", "vision_encoder.fc_norm."):
        if key.startswith(part):
            return "vision_tower.model." + key[len(_VISION) :] not in expected
    match = _VISION_BLOCK_RE.match(key)
    return bool(match) and keep_blocks <= int(match.group(1)) < depth
