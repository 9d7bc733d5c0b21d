"""A reward that differs between sampled responses (for RLHF runs whose policy is too untrained to score on the
task): stage scripts name it as ``--objective-option reward=tests.helpers.varied_reward:char_sum``."""

from __future__ import annotations


def char_sum(prompt: str, response: str, reference: str | None) -> float:
    """A fixed function of the response text in [-3, 3], so advantages (and gradients) are not all zero."""
    return float(sum(map(ord, response)) % 7 - 3)
