"""The objective protocol the training loop calls once per micro-batch.

Objectives that plug in later (Masked Thought, RLHF) implement the same `loss`; those with state (a ramp, a running
baseline) also implement `state_dict` / `load_state_dict`, which the loop saves in every checkpoint as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

# Batch keys the model's forward takes; the rest of a batch (num_tokens, num_samples, stats) is bookkeeping.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grids", "image_sample_index")


@dataclass
class ObjectiveOutput:
    """One micro-batch's contribution.

    loss_sum: scalar, the loss *summed* over the scored tokens (not averaged: the loop normalises by the tokens of the
        whole optimizer step).
    num_tokens: how many tokens `loss_sum` sums over.
    metrics: extra scalars to log (averaged over micro-batches and ranks); the same keys on every call.
    """

    loss_sum: torch.Tensor
    num_tokens: int | torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Objective(Protocol):
    """`loss(model, batch, step)`: run the model once on `batch` (a loader batch already on the device) and score it.

    Call the model exactly once per micro-batch: DDP and FSDP hook into that forward. `step` is the number of optimizer
    steps done so far (for ramps). Optional: `state_dict() -> dict` (JSON-serialisable) and `load_state_dict(dict)`;
    `steps_per_batch: int` (default 1): each drawn micro-batch serves that many optimizer steps (PPO's epochs); on
    the steps in between, the loop draws nothing and passes ``batch=None``, and the objective scores again what it
    kept from the micro-batch of the same index (see `training.loop.accumulate_step`).
    """

    def loss(self, model: nn.Module, batch: dict[str, Any] | None, step: int) -> ObjectiveOutput: ...


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's keyword arguments from a loader batch (image keys are absent for text-only batches).

    A right-padded batch (the loader's) goes without its `attention_mask`: every pad follows every real token of its
    row, so causal attention alone already gives the real tokens exactly their keys, and the logits at real tokens
    (all a loss reads) are unchanged. Without a mask the LLM's attention takes its causal kernel instead of a dense
    (B, 1, T, T) mask with k/v expanded per head: 7% off a stage-4 step (`benchmarks/bench_mfu_stage4.py`). Any other
    padding keeps its mask.
    """
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 2 and bool((mask[:, 1:] <= mask[:, :-1]).all()):
        del inputs["attention_mask"]  # right padding (or none): see above
    return inputs
