"""The strict state-dict conversion: official tensors renamed, reshaped where needed, checked against our model.

Builds our model on the meta device to learn every expected key and shape, applies `key_mapping` to each official
tensor, broadcasts the scalar Flamingo gates (the one tensor transform), and fails naming any tensor that maps
nowhere, any parameter left unfilled and any shape mismatch. Tensors are never copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from ..configuration import InfiMMHDConfig
from ..modeling import InfiMMHDForConditionalGeneration
from .key_mapping import _canonicalize, _is_unused, _target_key
from .report import ConversionReport

_GATES = ("attn_gate", "ff_gate")


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
    with _parameters_on_meta():
        return InfiMMHDForConditionalGeneration(config)


def _expected_shapes(config: InfiMMHDConfig) -> dict[str, torch.Size]:
    """Every state-dict key of our model for `config`, with its shape (built on the meta device)."""
    with torch.device("meta"):
        model = InfiMMHDForConditionalGeneration(config)
    return {key: value.shape for key, value in model.state_dict().items()}


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
