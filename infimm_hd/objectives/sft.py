"""Supervised fine-tuning: next-token cross-entropy over the label tokens, summed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..linear_cross_entropy import IGNORE_INDEX
from .base import ObjectiveOutput, model_inputs


def next_token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, T, V), labels (B, T) aligned with input_ids (-100 = not scored) -> (summed loss, scored tokens).

    Hugging Face's convention: labels sit under their own input position and the shift happens here, so position t's
    logits predict labels[t + 1]. The loss is computed in float32 whatever the autocast dtype of the logits. For
    logits already at hand (evaluation, tests); training asks the model for the loss itself (`forward_loss_sum`).
    """
    targets = labels[:, 1:].to(logits.device)  # (B, T-1)
    logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    loss_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def forward_loss_sum(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of `model` on `inputs` -> (next-token loss summed over the scored labels, their count).

    The model computes the loss without materialising logits (`skip_logits`): the LM head and the float32
    cross-entropy run in row chunks over the scored tokens only (`infimm_hd.linear_cross_entropy`). The (B, T, V)
    logits and their float32 copies cost a quarter of a CPU stage-4 step and 1.4 GB at 2k tokens of a 49k vocabulary
    (`benchmarks/bench_mfu_stage4.py`); a VQA batch scores a few answer tokens per row and pays for those only.
    """
    out = model(**inputs, labels=labels, use_cache=False, skip_logits=True, loss_reduction="sum")
    return out.loss, (labels[:, 1:] != IGNORE_INDEX).sum()


class SFTObjective:
    """Stateless next-token cross-entropy (stages 1-3 and SFT). The model computes no loss itself: the loop needs the
    sum and the count, not transformers' per-batch mean."""

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> ObjectiveOutput:
        loss_sum, num_tokens = forward_loss_sum(model, model_inputs(batch), batch["labels"])
        return ObjectiveOutput(loss_sum=loss_sum, num_tokens=num_tokens)
