"""Objectives by name, for the stage scripts' `--objective NAME --objective-option KEY=VALUE`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .base import Objective
from .masked_thought import MaskedThoughtObjective
from .rlhf import RLHFObjective
from .sft import SFTObjective

_REGISTRY: dict[str, Callable[..., Objective]] = {
    "sft": SFTObjective,
    "masked-thought": MaskedThoughtObjective,
    "rlhf": RLHFObjective,
}


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, run: dict[str, Any] | None = None, **options: Any) -> Objective:
    """A new objective `name` configured by `options`; an unknown name or option is a clear error.

    `run` holds what the run knows and an objective may need (`max_steps` for ramps, `tokenizer` for special ids);
    each entry is passed only to objectives whose constructor takes it, and never over an explicit option.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; choose one of {objective_names()}")
    factory = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    options = {k: v for k, v in (run or {}).items() if k in accepted} | options
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options {options} for objective {name!r}: {err}") from err
