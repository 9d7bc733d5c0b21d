"""Supervised fine-tuning: next-token cross-entropy over the label tokens, summed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ObjectiveOutput, model_inputs

IGNORE_INDEX = -100


def next_token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V), labels (B, T) aligned with input_ids (-100 = not scored) -> (summed loss, scored tokens).

    Hugging Face's convention: labels sit under their own input position and the shift happens here, so position t's
    logits predict labels[t + 1]. The loss is computed in float32 whatever the autocast dtype of the logits.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    targets = labels[:, 1:].to(logits.device)  # (B, T-1)
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


class SFTObjective:
    """Stateless next-token cross-entropy (stages 1-3 and SFT). The model computes no loss itself: the loop needs the
    sum and the count, not transformers' per-batch mean."""

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> ObjectiveOutput:
        out = model(**model_inputs(batch), use_cache=False)
        loss_sum, num_tokens = next_token_loss_sum(out.logits, batch["labels"])
        return ObjectiveOutput(loss_sum=loss_sum, num_tokens=num_tokens)
