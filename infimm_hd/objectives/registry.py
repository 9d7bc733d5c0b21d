"""Objectives by name, for the stage scripts' `--objective NAME --objective-option KEY=VALUE`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Objective
from .masked_thought import MaskedThoughtObjective
from .sft import SFTObjective

_REGISTRY: dict[str, Callable[..., Objective]] = {"sft": SFTObjective, "masked-thought": MaskedThoughtObjective}


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, **options: Any) -> Objective:
    """A new objective `name` configured by `options`; an unknown name or option is a clear error."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; choose one of {objective_names()}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:
        raise ValueError(f"bad options {options} for objective {name!r}: {err}") from err
