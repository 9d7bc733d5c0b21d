"""Shape laws: a unit's cost per sample as a linear combination of basis terms in the text length T and the crops
K, fitted to probe measurements; and the per-unit cost record both sides use.

Kept apart from `probe` (which measures) so that a plan, and the cache of fitted laws, need no model code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeSample:
    """One probe shape: T text tokens (one `<image>` first, every token scored) and K crops of that image."""

    text_tokens: int
    crops: int


@dataclass
class UnitCosts:
    """What one unit of a kind cost at one probe shape.

    retained_bytes: live bytes it added by the end of its forward (what it keeps for backward, and its output).
    forward_work: its forward's peak above what is alive before it (temporaries freed before it returns).
    backward_work: the peak from the start of its backward until the next unit's backward starts, above what is
        alive then (its gradients, temporaries and, when checkpointed, recomputed activations).
    grad_bytes: the gradients of its own trainable parameters. flops: forward + backward (+ recomputation).
    """

    retained_bytes: float = 0.0
    forward_work: float = 0.0
    backward_work: float = 0.0
    grad_bytes: float = 0.0
    flops: float = 0.0


_LAYER_FLOPS = lambda t, k: [t, t * t]  # noqa: E731 - projections, MLP; attention scores
# A layer with its block: the layer's terms, the block's attention to the image's keys and its to_kv over them.
_BLOCK = lambda t, k: [t, t * t, t * k, k]  # noqa: E731
_REST = lambda t, k: [t, k, 1.0]  # noqa: E731 - embeddings, head and loss; vision stem and packing; fixed
FLOP_BASIS: dict[str, Callable[[float, float], list[float]]] = {
    "llm_first_off_path": _LAYER_FLOPS,
    "llm_first": _LAYER_FLOPS,
    "llm_layer_off_path": _LAYER_FLOPS,
    "llm_layer": _LAYER_FLOPS,
    "first_cross_attention": _BLOCK,
    "cross_attention": _BLOCK,
    "llm_last": _BLOCK,  # a plain layer or one with a block, whichever the model ends with
    "vision_block": lambda t, k: [k],
    "vision_last": lambda t, k: [k],
    "rest": _REST,
}
# Working memory (forward or backward temporaries) of a unit: linear in its tokens, plus attention's T^2 and T*K
# score blocks where a kernel keeps them; the head's and the stem's over the step's own tensors.
WORK_BASIS: dict[str, Callable[[float, float], list[float]]] = {
    "llm_first_off_path": lambda t, k: [t, 1.0],
    "llm_first": lambda t, k: [t, 1.0],
    "llm_layer_off_path": lambda t, k: [t, 1.0],
    "llm_layer": lambda t, k: [t, 1.0],
    "first_cross_attention": lambda t, k: [t, t * k, k, 1.0],
    "cross_attention": lambda t, k: [t, t * k, k, 1.0],  # the layer's T^2 left out: 5 shapes fit 4 terms at most
    "vision_block": lambda t, k: [k, 1.0],
    "vision_last": lambda t, k: [k, 1.0],
    "llm_last": lambda t, k: [t, t * k, k, 1.0],
    "head": lambda t, k: [t, k, 1.0],
    "stem": lambda t, k: [t, k, t * k, 1.0],
}
MEMORY_BASIS: dict[str, Callable[[float, float], list[float]]] = FLOP_BASIS | {
    "llm_first_off_path": lambda t, k: [t],
    "llm_first": lambda t, k: [t],
    "llm_layer_off_path": lambda t, k: [t],  # flash-style attention keeps O(T)
    "llm_layer": lambda t, k: [t],
    "first_cross_attention": lambda t, k: [t, t * k, k],
    "cross_attention": lambda t, k: [t, t * k, k],
    "llm_last": lambda t, k: [t, t * k, k],
}


@dataclass(frozen=True)
class ShapeLaw:
    """cost(T, K) = coefficients . basis(T, K) for one sample; `residual` is the fit's largest relative miss."""

    kind: str
    coefficients: tuple[float, ...]
    basis: Callable[[float, float], list[float]]
    residual: float

    def __call__(self, text_tokens: float, crops: float) -> float:
        return float(np.dot(self.coefficients, self.basis(text_tokens, crops)))


def fit_law(kind: str, basis, points: list[tuple[ProbeSample, float]]) -> ShapeLaw:
    rows = np.array([basis(s.text_tokens, s.crops) for s, _ in points], dtype=np.float64)
    values = np.array([v for _, v in points], dtype=np.float64)
    coefficients, *_ = np.linalg.lstsq(rows, values, rcond=None)
    fitted = rows @ coefficients
    scale = np.maximum(np.abs(values), 1.0)
    return ShapeLaw(kind, tuple(float(c) for c in coefficients), basis, float(np.max(np.abs(fitted - values) / scale)))


@dataclass(frozen=True)
class UnitLaws:
    """Per-sample shape laws of each unit kind, for one model, window, trainable set and checkpointing choice."""

    flops: dict[str, ShapeLaw]
    retained: dict[str, ShapeLaw]
    forward_work: dict[str, ShapeLaw]
    backward_work: dict[str, ShapeLaw]
    head_work: ShapeLaw
    stem_work: ShapeLaw
    grad_bytes: dict[str, float]  # float32 gradients of one unit of each repeated kind (and the probe's rest)
    window: int
    gradient_checkpointing: bool

    def costs(self, text_tokens: float, crops: float) -> Callable[[str], UnitCosts]:
        """kind -> the `UnitCosts` of one unit at (T, K), for `step_high_water`."""

        def cost(kind: str) -> UnitCosts:
            return UnitCosts(
                retained_bytes=self.retained[kind](text_tokens, crops),
                forward_work=self.forward_work[kind](text_tokens, crops) if kind in self.forward_work else 0.0,
                backward_work=self.backward_work[kind](text_tokens, crops) if kind in self.backward_work else 0.0,
                grad_bytes=self.grad_bytes.get(kind, 0.0),
                flops=self.flops[kind](text_tokens, crops),
            )

        return cost
