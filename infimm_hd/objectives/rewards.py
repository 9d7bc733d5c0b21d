"""Reward sources for RLHF behind one small interface, and the wrappers every run wants (missing-EOS penalty, reward
normalisation).

A `RewardFunction` scores decoded responses: `fn(prompts, responses, references, finished=None) -> (B,) float32`.
`references` holds the gold answer per sample (or None), `finished` (B,) bool says which responses ended with EOS
(False = cut at the length cap); sources that do not need them ignore them. Scores come back on the CPU; the driver
moves them to its device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from ..evaluation import normalize_answer
from .reward_model import score_texts


@runtime_checkable
class RewardFunction(Protocol):
    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None],
        finished: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def _check_lengths(prompts: Sequence[str], responses: Sequence[str], references: Sequence[str | None]) -> None:
    if not len(prompts) == len(responses) == len(references):
        raise ValueError(
            f"prompts, responses and references must be parallel lists, got lengths "
            f"{len(prompts)}, {len(responses)}, {len(references)}"
        )


class CallableReward:
    """A reward from a Python function. `fn(prompt, response, reference) -> float` per sample, or with `batched=True`
    `fn(prompts, responses, references) -> sequence of floats` for the whole batch."""

    def __init__(self, fn: Callable, batched: bool = False):
        self.fn = fn
        self.batched = batched

    def __call__(self, prompts, responses, references, finished=None) -> torch.Tensor:
        _check_lengths(prompts, responses, references)
        if self.batched:
            scores = self.fn(list(prompts), list(responses), list(references))
        else:
            scores = [self.fn(p, r, ref) for p, r, ref in zip(prompts, responses, references, strict=True)]
        scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1)
        if scores.shape[0] != len(responses):
            raise ValueError(f"the reward function returned {scores.shape[0]} scores for {len(responses)} responses")
        return scores


class ExactMatchReward:
    """1.0 when the normalised response equals the normalised reference, else 0.0 (rule-based, for VQA answers such as
    "7" or "red").

    Normalisation is `infimm_hd.evaluation.normalize_answer`, so the reward is exactly the evaluation's accuracy.
    `partial_credit` (default 0) is given instead when the reference appears as a whole word inside a longer response
    ("it is red" for "red"): a gentler signal for a base model that has not learned to answer tersely yet.
    """

    def __init__(self, partial_credit: float = 0.0, normalize: Callable[[str], str] = normalize_answer):
        self.partial_credit = partial_credit
        self.normalize = normalize

    def score(self, response: str, reference: str | None) -> float:
        if reference is None:
            raise ValueError("ExactMatchReward needs a reference answer for every sample, got None")
        response, reference = self.normalize(response), self.normalize(reference)
        if response == reference:
            return 1.0
        if self.partial_credit and reference and re.search(rf"(?<!\w){re.escape(reference)}(?!\w)", response):
            return self.partial_credit
        return 0.0

    def __call__(self, prompts, responses, references, finished=None) -> torch.Tensor:
        _check_lengths(prompts, responses, references)
        return torch.tensor([self.score(r, ref) for r, ref in zip(responses, references, strict=True)])


class SequenceClassifierReward:
    """Scores from a Hugging Face `AutoModelForSequenceClassification` reward model (num_labels=1) on the decoded text.

    The model has its own tokenizer. Text is `format_text(prompt, response)` (default: the two concatenated), scored in
    batches of `batch_size` under `no_grad`; see `reward_model.score_texts` for padding and pooling. The model is used
    as it is (put it in eval mode and on its device yourself).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        batch_size: int = 16,
        max_length: int | None = None,
        format_text: Callable[[str, str], str] = lambda prompt, response: prompt + response,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.format_text = format_text

    def __call__(self, prompts, responses, references, finished=None) -> torch.Tensor:
        _check_lengths(prompts, responses, references)
        texts = [self.format_text(p, r) for p, r in zip(prompts, responses, strict=True)]
        scores = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                scores.append(score_texts(self.model, self.tokenizer, chunk, max_length=self.max_length).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)


class MissingEOSPenalty:
    """Subtracts `penalty` from the score of every response that did not end with EOS (TRL's `missing_eos_penalty`).

    Without SFT a base model often runs to the length cap; this makes "stop" worth learning. Needs `finished`.
    """

    def __init__(self, reward: RewardFunction, penalty: float = 1.0):
        self.reward = reward
        self.penalty = penalty

    def __call__(self, prompts, responses, references, finished=None) -> torch.Tensor:
        if finished is None:
            raise ValueError("MissingEOSPenalty needs `finished` (B,) bool: which responses ended with EOS")
        scores = self.reward(prompts, responses, references, finished=finished)
        return scores - self.penalty * (~finished.bool().cpu()).float()


class NormalizedReward:
    """Standardises the scores of `reward`: (score - mean) / (std + eps), optionally clipped to +-`clip`.

    mode "running": mean and std over every score seen so far (updated with the batch before normalising it, as OpenAI
    baselines' RunningMeanStd); its state goes in checkpoints through `state_dict`. Under data parallelism each rank
    keeps its own statistics; to share them, call `update` on gathered scores and `normalize` locally.
    mode "batch": the statistics of this batch only.
    std is the population std (divide by n), defined for a batch of one. `shift_mean=False` keeps the mean and only
    rescales the spread around it (TRL's `masked_whiten(shift_mean=False)`).
    """

    def __init__(
        self,
        reward: RewardFunction,
        mode: Literal["running", "batch"] = "running",
        shift_mean: bool = True,
        clip: float | None = None,
        eps: float = 1e-8,
    ):
        if mode not in ("running", "batch"):
            raise ValueError(f"mode must be 'running' or 'batch', got {mode!r}")
        self.reward = reward
        self.mode = mode
        self.shift_mean = shift_mean
        self.clip = clip
        self.eps = eps
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean

    def update(self, scores: torch.Tensor) -> None:
        """Merge a batch into the running statistics (Chan et al.'s parallel update, exact for any batch sizes)."""
        scores = scores.detach().double().reshape(-1)
        n = scores.numel()
        if n == 0:
            return
        batch_mean = scores.mean().item()
        batch_m2 = ((scores - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 1.0

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        if self.mode == "batch":
            mean, std = scores.mean(), scores.std(unbiased=False)
        else:
            mean, std = self.mean, self.std
        out = (scores - mean) / (std + self.eps)
        if not self.shift_mean:
            out = out + mean
        if self.clip is not None:
            out = out.clamp(-self.clip, self.clip)
        return out.float()

    def __call__(self, prompts, responses, references, finished=None) -> torch.Tensor:
        scores = self.reward(prompts, responses, references, finished=finished)
        if self.mode == "running":
            self.update(scores)
        return self.normalize(scores)

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
