"""RLHF rollouts: prompts from a training batch, k sampled responses per prompt, and the masks the maths needs.

The vision tower runs once per prompt (`model.encode_media`, no grad); the k samples of a prompt share its context row
in `generate` (no k/v copy), and the same context serves the reference pass and the graded forward afterwards.

Shape legend
    P   prompts in the batch       k   samples per prompt      B = P * k responses (the k of a prompt adjacent)
    Lp  longest prompt (left-padded)   R   response positions (right-padded)   L = Lp + R
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..cross_attention_context import CrossAttentionContext
from .sft import IGNORE_INDEX


@dataclass
class Prompts:
    """Prompts ready for `generate`: input_ids, attention_mask (P, Lp) left-padded; references (P,) gold answers."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    references: list[str | None]
    texts: list[str]


@dataclass
class Rollout:
    """k responses per prompt and everything needed to score them again.

    sequences, attention_mask, position_ids (B, L): prompt (left-padded) + response (right-padded after its stop
    token). response (B, R) and response_mask (B, R): True up to and including the first stop token, all True for a
    response cut at `max_new_tokens`; finished (B,): it stopped. context: the prompts' vision context expanded to the
    B rows (shared k/v source, no cache), or None for text-only prompts.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    response: torch.Tensor
    response_mask: torch.Tensor
    finished: torch.Tensor
    context: CrossAttentionContext | None
    k: int

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for one forward over prompt + response (kwargs of `InfiMMHDForConditionalGeneration`).

        Only the last R + 1 positions' logits are computed (`logits_to_keep`): those predict the response tokens.
        """
        inputs = {
            "input_ids": self.sequences,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "logits_to_keep": self.response.shape[1] + 1,
            "use_cache": False,
        }
        if self.context is not None:
            inputs["cross_attention_context"] = self.context
        return inputs

    def scoring_inputs(self, temperature: float) -> dict[str, Any]:
        """`model_inputs` asking the model for the response tokens' log-probs and entropies (B, R) under
        softmax(logits / temperature) instead of logits (`logprobs_of_last`: no (B, R, V) tensor is made)."""
        inputs = self.model_inputs()
        del inputs["logits_to_keep"]
        return inputs | {"logprobs_of_last": self.response.shape[1], "logprobs_temperature": temperature}


def prompts_from_batch(batch: dict[str, Any], tokenizer, generation_prompt_ids: list[int]) -> Prompts:
    """Split each row of a right-padded training batch into its prompt and reference answer.

    A row with an assistant turn (vqa / cot records): the prompt is every token before the first label token (the
    template's generation prompt " ASSISTANT:" included), the reference is the decoded label tokens ("7"). A row
    without labels ("prompt" records): the whole row plus `generation_prompt_ids`, and the reference from
    `batch["answers"]` when the batch carries it, else None (then only reference-free rewards work).
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    answers = batch.get("answers")
    rows, references = [], []
    for b in range(input_ids.shape[0]):
        length = int(attention_mask[b].sum())
        scored = (labels[b, :length] != IGNORE_INDEX).nonzero()
        if len(scored):
            first = int(scored[0])
            rows.append(input_ids[b, :first].tolist())
            target = labels[b, first:length]
            references.append(
                tokenizer.decode(target[target != IGNORE_INDEX].tolist(), skip_special_tokens=True).strip()
            )
        else:
            rows.append(input_ids[b, :length].tolist() + list(generation_prompt_ids))
            references.append(None)
        if answers is not None and answers[b] is not None:
            references[-1] = answers[b]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (P, Lp) left-padded for generation
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row)
        mask[b, width - len(row) :] = 1
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    return Prompts(ids.to(input_ids.device), mask.to(input_ids.device), references, texts)


def response_mask(response: torch.Tensor, stop_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, finished) for responses (B, R): mask True up to and including the first stop token (all True when there
    is none), finished (B,) True where a stop token was produced.

    >>> response_mask(torch.tensor([[5, 2, 0], [5, 6, 7]]), torch.tensor([2]))
    (tensor([[ True,  True, False],
            [ True,  True,  True]]), tensor([ True, False]))
    """
    is_stop = torch.isin(response, stop_ids.to(response.device))  # (B, R)
    finished = is_stop.any(1)
    first = torch.where(finished, is_stop.long().argmax(1), response.shape[1] - 1)  # (B,)
    positions = torch.arange(response.shape[1], device=response.device)
    return positions[None, :] <= first[:, None], finished


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions (B, L) that start at 0 on each row's first real token (what `generate` uses for left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    prompts: Prompts,
    context: CrossAttentionContext | None,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    pad_token_id: int,
    stop_ids: list[int],
    seed: int,
) -> Rollout:
    """Sample k responses per prompt with the model's own `generate` (eval mode, restored after).

    `context` is the prompts' vision context from `model.encode_media` (None for text-only prompts): `generate` gets
    it with a fresh k/v cache and expands it to the k samples by sharing rows, so the ViT does not run here at all.
    `<image>` is never sampled (there is no image for it); like top-p, this truncation is left out of the log-probs,
    which are those of the full temperature-scaled distribution (TRL's convention). `seed` decides the samples:
    `generate` draws from torch's global RNG, so it runs inside `fork_rng` seeded with it, leaving the global stream
    untouched (a resumed run's data loader draws from that stream at other moments).
    """
    was_training = model.training
    model.eval()
    device = prompts.input_ids.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        try:
            extra = {} if context is None else {"cross_attention_context": replace(context, kv_cache={})}
            sequences = model.generate(
                input_ids=prompts.input_ids,
                attention_mask=prompts.attention_mask,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=pad_token_id,
                eos_token_id=stop_ids,
                suppress_tokens=[model.config.image_token_id],  # a response cannot open an image it does not have
                **extra,
            )  # (B, Lp + R)
        finally:
            model.train(was_training)
    prompt_length = prompts.input_ids.shape[1]
    response = sequences[:, prompt_length:]  # (B, R)
    mask, finished = response_mask(response, torch.tensor(stop_ids))
    response = torch.where(mask, response, pad_token_id)
    sequences = torch.cat([sequences[:, :prompt_length], response], dim=1)
    attention_mask = torch.cat([prompts.attention_mask.repeat_interleave(k, dim=0), mask.long()], dim=1)  # (B, L)
    shared = None if context is None else replace(context, kv_cache=None).expanded(k)
    return Rollout(
        sequences=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        prompt_length=prompt_length,
        response=response,
        response_mask=mask,
        finished=finished,
        context=shared,
        k=k,
    )
