"""Randomness an objective draws per micro-batch, fixed by (seed, step, rank, micro-batch) alone.

Why: a resumed run must draw exactly what the uninterrupted one drew (Masked Thought's masks, RLHF's samples), and
ranks must draw differently. Nothing here is saved in checkpoints: the micro-batch count restarts at every step, and
checkpoints are taken at step boundaries.
"""

from __future__ import annotations

import hashlib

import torch


def current_rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def step_seed(purpose: str, seed: int, step: int, rank: int, micro_batch: int) -> int:
    """A 63-bit seed from (purpose, seed, step, rank, micro-batch): reproducible on resume, different per rank.

    >>> step_seed("x", 0, 5, 0, 0) == step_seed("x", 0, 5, 0, 0) != step_seed("x", 0, 5, 1, 0)
    True
    """
    digest = hashlib.sha256(f"{purpose}:{seed}:{step}:{rank}:{micro_batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class MicroBatchCounter:
    """`counter(step)` -> the index of this call among the calls of optimizer step `step` (0, 1, ...)."""

    def __init__(self) -> None:
        self._last: tuple[int, int] = (-1, 0)  # (step, calls seen in it)

    def __call__(self, step: int) -> int:
        last_step, seen = self._last
        micro = seen if step == last_step else 0
        self._last = (step, micro + 1)
        return micro
