"""Reuse the text KV cache of a prompt prefix (system prompt + `<image>`, or earlier turns) across questions.

A session's questions all start with the same tokens: the chat template's opening, the system prompt and the
`<image>` token; a follow-up turn also repeats every earlier turn. Their LLM k/v (with the cross-attention blocks'
output folded in) are the same every time, so they are computed once and each call starts from a private copy of
the cache cropped to the longest common token prefix. `generate` then runs only the remaining tokens (it slices
`input_ids` to what the cache does not hold and takes positions from the full attention mask).

Why a copy per call: `DynamicCache` layers grow by concatenation during generation; copying the prefix (a few MB
for SmolLM2-135M) keeps the stored prefix untouched and lets calls run one after another in any order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import Cache


def common_prefix_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading tokens two 1-D id tensors share.

    >>> common_prefix_length(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4, 5]))
    2
    """
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0, 0]) if len(differ) else n


@dataclass
class PrefixCache:
    """Token ids (P,) of one prompt row and the LLM cache that holds exactly their k/v (batch 1)."""

    ids: torch.Tensor
    cache: Cache

    def __post_init__(self) -> None:
        held = self.cache.get_seq_length()
        if held != len(self.ids):
            raise ValueError(f"the cache holds {held} tokens but {len(self.ids)} ids were given")

    def reuse_for(self, ids: torch.Tensor) -> tuple[Cache | None, int]:
        """(a private cache holding the first n tokens of `ids`, n) for a new prompt `ids` (T,).

        At least one token is left for the model to run (the logits of the last prompt token pick the first answer
        token). Returns (None, 0) when nothing is shared or the cache cannot be cropped (e.g. sliding-window layers
        that already evicted states).
        """
        n = common_prefix_length(self.ids, ids.to(self.ids.device)[:-1])
        if n == 0:
            return None, 0
        cache = copy.deepcopy(self.cache)
        extra = cache.get_seq_length() - n
        if extra:
            if not getattr(cache, "is_croppable", True):
                return None, 0
            cache.crop(-extra)
        return cache, n
