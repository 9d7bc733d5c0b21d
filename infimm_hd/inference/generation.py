"""The one `generate` call behind every entry point: defaults, the prepared prompt, decoding the new tokens.

Defaults: greedy (`do_sample=False`) and `max_new_tokens=128` unless the caller says otherwise; any other
`GenerationMixin.generate` keyword passes through. The model's generation config already stops at EOS and at
`<|endofchunk|>` (the paper's answer terminator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import Cache, StoppingCriteria, StoppingCriteriaList

from ..cross_attention_context import CrossAttentionContext

DEFAULT_MAX_NEW_TOKENS = 128
# Answers and streamed pieces are decoded with the same settings, so a stream concatenates to the answer (no
# clean-up of spaces before punctuation, which would rewrite text a stream already emitted).
DECODE_KWARGS = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


def generation_kwargs(processor, overrides: dict[str, Any]) -> dict[str, Any]:
    """Caller's `generate` keywords over our defaults (greedy, 128 new tokens, the tokenizer's pad id)."""
    kwargs = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False} | dict(overrides)
    kwargs.setdefault("pad_token_id", processor.tokenizer.pad_token_id)
    for forbidden in ("input_ids", "pixel_values", "cross_attention_context", "cache", "past_key_values"):
        if forbidden in kwargs:
            raise TypeError(f"{forbidden!r} is set by the inference API; pass only generation settings")
    return kwargs


@dataclass
class PreparedPrompt:
    """Everything `generate` needs for a batch of prompts whose images are already encoded.

    input_ids, attention_mask: (B, T), left padded. context: the vision context, with every block's k/v cached and
    `media_seen` matching `cache` (the tokens it already holds). cache: the LLM KV cache of the first
    `reused_tokens` tokens (batch 1), or None to run the whole prompt.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    context: CrossAttentionContext
    cache: Cache | None = None
    reused_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return int(self.input_ids.shape[1])


def run_generate(
    model,
    prompt: PreparedPrompt,
    generation: dict[str, Any],
    streamer=None,
    extra_stopping: StoppingCriteria | None = None,
):
    """`model.generate` on a prepared prompt -> its `GenerateDecoderOnlyOutput` (sequences (B, T + new), cache)."""
    kwargs = dict(generation)
    if extra_stopping is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([*kwargs.get("stopping_criteria", []), extra_stopping])
    if prompt.cache is not None:
        kwargs["cache"] = prompt.cache
    device = model.device
    return model.generate(
        input_ids=prompt.input_ids.to(device),
        attention_mask=prompt.attention_mask.to(device),
        cross_attention_context=prompt.context,
        streamer=streamer,
        use_cache=True,
        return_dict_in_generate=True,
        **kwargs,
    )


def decode_new_tokens(processor, sequences: torch.Tensor, prompt_length: int) -> list[str]:
    """sequences (B, T + new) -> the text of each row's new tokens (special tokens and padding dropped)."""
    return processor.batch_decode(sequences[:, prompt_length:], **DECODE_KWARGS)
