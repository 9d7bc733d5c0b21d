"""Supervised fine-tuning: next-token cross-entropy over the label tokens, summed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput, model_inputs

IGNORE_INDEX = -100


def scored_positions(labels: torch.Tensor) -> torch.Tensor | None:
    """(K,) the positions t whose logits predict a scored label (labels[b, t + 1] != -100 in some row b), or None
    when there is nothing to select (fewer than 2 tokens, or no label at all).

    Why: the LM head and the float32 log-softmax over the vocabulary cost as much as a third of a step on long
    prompts (2,104 x 49,152 logits in the stage-4 benchmark); a VQA batch scores a few answer tokens per row.
    `logits_to_keep` with these positions makes the model compute only those rows' logits.
    """
    if labels.shape[1] < 2:
        return None
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # (K,)
    return keep if keep.numel() else None


def next_token_loss_sum(
    logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V), labels (B, T) aligned with input_ids (-100 = not scored) -> (summed loss, scored tokens).

    Hugging Face's convention: labels sit under their own input position and the shift happens here, so position t's
    logits predict labels[t + 1]. With `positions` (from `scored_positions`), `logits` are (B, K, V): only those
    positions' logits, as `logits_to_keep=positions` returns them. The loss is computed in float32 whatever the
    autocast dtype of the logits.
    """
    targets = labels[:, 1:].to(logits.device)  # (B, T-1)
    if positions is None:
        logits = logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
    else:
        targets = targets[:, positions.to(targets.device)]  # (B, K)
    logits = logits.float()
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def forward_loss_sum(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of `model` on `inputs` with logits only at the scored positions, then `next_token_loss_sum`."""
    positions = scored_positions(labels)
    keep = {} if positions is None else {"logits_to_keep": positions.to(inputs["input_ids"].device)}
    out = model(**inputs, use_cache=False, **keep)
    return next_token_loss_sum(out.logits, labels, positions)


class SFTObjective:
    """Stateless next-token cross-entropy (stages 1-3 and SFT). The model computes no loss itself: the loop needs the
    sum and the count, not transformers' per-batch mean."""

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> ObjectiveOutput:
        loss_sum, num_tokens = forward_loss_sum(model, model_inputs(batch), batch["labels"])
        return ObjectiveOutput(loss_sum=loss_sum, num_tokens=num_tokens)
