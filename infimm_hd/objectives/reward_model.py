"""Reward-model training pieces: the Bradley-Terry preference loss and scoring texts with a sequence classifier.

A trainer scores the chosen and the rejected text of each pair with `score_texts` (gradients flow) and minimises
`bradley_terry_loss`; `rewards.SequenceClassifierReward` then uses the same `score_texts` under `no_grad` in RLHF.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss on preference pairs: (mean_i -log sigmoid(c_i - r_i - m_i), pairwise accuracy).

    chosen_scores, rejected_scores (N,): the reward model's scalar scores of the preferred and the other text. `margin`
    (N,) or scalar is the optional Llama-2 margin; `center_coef` adds c * mean((c_i + r_i)^2), which keeps the scores
    centred on 0 (TRL's `center_rewards_coefficient`, design notes C.4). Accuracy is the fraction with c_i > r_i
    (ties count as wrong), detached.
    """
    diff = chosen_scores.float() - rejected_scores.float()  # (N,)
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen_scores.float() + rejected_scores.float()) ** 2).mean()
    accuracy = (chosen_scores > rejected_scores).float().mean().detach()
    return loss, accuracy


def score_texts(model: nn.Module, tokenizer, texts: Sequence[str], max_length: int | None = None) -> torch.Tensor:
    """Scores (N,) float32 of `texts` under a sequence-classification model with one label, in one forward.

    Gradients flow (wrap in `no_grad` to only score). The texts are right-padded, so positions are those of the
    unpadded text, and the model pools its last non-pad token (Hugging Face's decoder `*ForSequenceClassification`
    take the rightmost token that is not `config.pad_token_id`). That rule fails silently when the tokenizer pads with
    a different id, or when a text ends with the pad token itself (pad == eos); both are refused here. `max_length`
    truncates on the tokenizer's `truncation_side`.
    """
    device = next(model.parameters()).device
    enc = tokenizer(
        list(texts),
        padding=True,
        padding_side="right",
        truncation=max_length is not None,
        max_length=max_length,
        return_tensors="pt",
    )
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]  # (N, L)
    config_pad = getattr(model.config, "pad_token_id", None)
    if len(texts) > 1 and config_pad is None:
        raise ValueError("the reward model has no config.pad_token_id; set it to tokenizer.pad_token_id")
    if config_pad is not None and not attention_mask.all() and tokenizer.pad_token_id != config_pad:
        raise ValueError(
            f"tokenizer pads with id {tokenizer.pad_token_id} but the model's config.pad_token_id is {config_pad}: the "
            "model would pool a pad token; make them equal"
        )
    last = attention_mask.sum(1) - 1  # (N,) right padding: the last real token
    if config_pad is not None and (input_ids[torch.arange(len(last)), last] == config_pad).any():
        raise ValueError(
            f"a text ends with the pad token id {config_pad} (is pad == eos?); the model would pool the token before "
            "it. Give the tokenizer a pad token of its own"
        )
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits  # (N, num_labels)
    if logits.shape[-1] != 1:
        raise ValueError(f"a reward model has one output (num_labels=1), this one has {logits.shape[-1]}")
    return logits[:, 0].float()
