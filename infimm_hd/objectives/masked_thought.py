"""Masked Thought Fine-Tuning (MFT, arXiv 2403.02178): SFT cross-entropy on a corrupted copy of the input.

Each response token of the *input* (a position whose label is not -100) is replaced with probability `p` by a noise
token; the labels keep the original tokens, so the model predicts the reasoning from a context in which some earlier
reasoning tokens are hidden. There is no extra loss term: MFT loss = SFT loss on the corrupted input. Facts followed
from the official code (ChangyuChen347/MaskedThought): only the response is corrupted, the attention mask and the
positions are unchanged, masked positions stay in the loss with their original targets, and `p` ramps linearly from 0
(`min(p, p * step / (max_steps * 0.66 + 1))`, the Trainer path of the GSM8K script). Deliberate differences: special
tokens (`<|endofchunk|>`, EOS, pad, `<image>`, ...) are never replaced nor drawn, where the official code may replace
the appended EOS and draws random ids from the whole vocabulary.

Stage scripts build it after loading the model: `build_objective("masked-thought", max_steps=config.max_steps,
tokenizer=processor.tokenizer, **options)`, and for `replacement="mask"` first call `add_mask_token(model, tokenizer)`.

Shape legend
    B   samples in the batch    T   tokens per sample    K   ids a replacement is drawn from
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..multimodal_vocab import grow_token_embeddings
from .base import ObjectiveOutput, model_inputs
from .sft import IGNORE_INDEX, forward_loss_sum
from .step_noise import MicroBatchCounter, current_rank, step_seed

Replacement = Literal["random", "pad", "mask"]
MASK_TOKEN = "<mask>"


class MaskedThoughts(NamedTuple):
    """`mask_thoughts`' result, all (B, T): the corrupted ids, the positions replaced, the positions that could be."""

    input_ids: torch.Tensor
    replaced: torch.Tensor
    eligible: torch.Tensor


def ramp_p(step: int, max_steps: int | None, p: float, ramp_fraction: float) -> float:
    """The mask probability after `step` optimizer steps: the official linear ramp from 0 to `p` over the first
    `ramp_fraction` of `max_steps`, then `p` (`ramp_fraction=0` or unknown `max_steps`: `p` from the start).

    >>> ramp_p(0, 100, 0.4, 0.66)
    0.0
    >>> round(ramp_p(33, 100, 0.4, 0.66), 6)  # 0.4 * 33 / (100 * 0.66 + 1)
    0.197015
    >>> ramp_p(67, 100, 0.4, 0.66), ramp_p(50, None, 0.4, 0.66)
    (0.4, 0.4)
    """
    if max_steps is None or ramp_fraction == 0:
        return p
    return min(p, p * step / (max_steps * ramp_fraction + 1))


def thought_positions(input_ids: torch.Tensor, labels: torch.Tensor, protected_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the response tokens of the input that may be replaced.

    Labels are aligned with the input (Hugging Face: labels[t] is the token at input position t, the shift happens in
    the loss), so `labels != -100` marks exactly the response tokens of the input. Special tokens in the response
    (`<|endofchunk|>`, EOS, ...) are never replaced: they delimit turns and images for the model and the processor.
    """
    return (labels != IGNORE_INDEX) & ~torch.isin(input_ids, protected_ids.to(input_ids.device))


def mask_thoughts(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    p: float,
    generator: torch.Generator,
    protected_ids: torch.Tensor,
    replacement_ids: torch.Tensor,
) -> MaskedThoughts:
    """Replace each eligible position (`thought_positions`) independently with probability `p` by an id drawn
    uniformly from `replacement_ids` (K,) (one id: that id everywhere). Neither input is modified.

    input_ids, labels: (B, T). The draws come from `generator` (CPU) for all B x T positions whatever the data, so the
    result depends only on the generator's seed and the batch. An independent Bernoulli(p) per token has the same
    distribution as the official Trainer's `n ~ Binomial(len(candidates), p)` positions chosen without replacement.

    >>> ids = torch.tensor([[1, 10, 11, 12, 2]])
    >>> labels = torch.tensor([[-100, -100, 11, 12, 2]])
    >>> g, special, pad = torch.Generator().manual_seed(0), torch.tensor([0, 1, 2]), torch.tensor([0])
    >>> out = mask_thoughts(ids, labels, 1.0, g, protected_ids=special, replacement_ids=pad)
    >>> out.input_ids.tolist(), out.eligible.sum().item()
    ([[1, 10, 0, 0, 2]], 2)
    """
    eligible = thought_positions(input_ids, labels, protected_ids)  # (B, T)
    draw = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)  # (B, T)
    pick = torch.randint(len(replacement_ids), input_ids.shape, generator=generator).to(input_ids.device)  # (B, T)
    replaced = eligible & (draw < p)
    noise = replacement_ids.to(input_ids.device)[pick]  # (B, T)
    return MaskedThoughts(torch.where(replaced, noise, input_ids), replaced, eligible)


def step_generator(seed: int, step: int, rank: int, micro_batch: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, step, rank, micro-batch) alone: reproducible on resume, different per rank.

    >>> a = torch.rand(2, generator=step_generator(0, 5, 0))
    >>> torch.equal(a, torch.rand(2, generator=step_generator(0, 5, 0)))
    True
    """
    return torch.Generator().manual_seed(step_seed("masked-thought", seed, step, rank, micro_batch))


def add_mask_token(model: nn.Module, tokenizer: PreTrainedTokenizerBase, token: str = MASK_TOKEN) -> int:
    """Add `token` to the tokenizer (as a special token) and an embedding row for it to the model, initialised to the
    mean of the existing rows as in the official code; returns its id. Idempotent.

    For `replacement="mask"`: call it on the loaded model and processor.tokenizer *before* declaring what trains and
    building the optimizer, so the new row is a parameter like the others and is saved with the processor. A
    trained-only save cannot rebuild the row from the base LLM: save the run in full (`--full-save`).
    """
    if token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
    grow_token_embeddings(model.language_model, len(tokenizer))
    model.config.text_config.vocab_size = model.language_model.config.vocab_size  # saved configs must rebuild it
    return tokenizer.convert_tokens_to_ids(token)


class MaskedThoughtObjective:
    """SFT next-token cross-entropy on inputs whose response tokens are replaced with probability p (see module doc).

    p: the final mask probability; 0.4 for short chain of thought (GSM8K), 0.2 for long/hard CoT or large augmented
        data (MATH, MetaMathQA, MathInstruct).
    ramp_fraction: p rises linearly from 0 over this fraction of `max_steps` (official 0.66), then stays at p.
    max_steps: total optimizer steps of the run, set by the stage script; None means no ramp (p from step 0).
    replacement: "random" (uniform over the vocabulary minus special tokens; the official GSM8K setting), "pad" (the
        pad token) or "mask" (a `<mask>` token added by `add_mask_token`).
    seed: the noise of micro-batch m of step s on rank r depends only on (seed, s, r, m), so a resumed run replays it.
    tokenizer: gives all special ids, the vocabulary size and `<mask>`; without it they come from `model.config`
        (`<image>`, `<|endofchunk|>`, pad/BOS/EOS only), resolved on the first call.
    mask_token_id: the `<mask>` id when no tokenizer is given.

    Metrics: `mask_rate` (replaced / eligible positions of the micro-batch) and `mask_p` (the scheduled p).
    """

    def __init__(
        self,
        p: float = 0.4,
        ramp_fraction: float = 0.66,
        max_steps: int | None = None,
        replacement: Replacement = "random",
        seed: int = 0,
        tokenizer: PreTrainedTokenizerBase | None = None,
        mask_token_id: int | None = None,
    ):
        self.p = _number("p", p)
        self.ramp_fraction = _number("ramp_fraction", ramp_fraction)
        if max_steps is not None and (not _is_int(max_steps) or max_steps < 1):
            raise ValueError(f"masked-thought: max_steps must be a positive integer or None, got {max_steps!r}")
        if replacement not in get_args(Replacement):
            raise ValueError(f"masked-thought: replacement must be one of {get_args(Replacement)}, got {replacement!r}")
        if not _is_int(seed):
            raise ValueError(f"masked-thought: seed must be an integer, got {seed!r}")
        if mask_token_id is not None and not _is_int(mask_token_id):
            raise ValueError(f"masked-thought: mask_token_id must be an integer, got {mask_token_id!r}")
        self.max_steps, self.replacement, self.seed = max_steps, replacement, seed
        self.tokenizer, self.mask_token_id = tokenizer, mask_token_id
        self._ids: tuple[torch.Tensor, torch.Tensor] | None = None  # (protected, replacement), from the first call
        self._micro = MicroBatchCounter()

    def token_ids(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(protected ids, ids a replacement is drawn from), resolved once from the tokenizer and `model.config`."""
        if self._ids is None:
            while not hasattr(model, "config") and hasattr(model, "module"):  # DDP wraps the model, FSDP2 does not
                model = model.module
            self._ids = resolve_token_ids(model.config, self.replacement, self.tokenizer, self.mask_token_id)
        return self._ids

    def loss(self, model: nn.Module, batch: dict[str, Any], step: int) -> ObjectiveOutput:
        protected, pool = self.token_ids(model)
        # Micro-batches of one step get their own noise; the count restarts every step, so resuming at a step
        # boundary (where checkpoints are taken) replays it without any saved state.
        micro = self._micro(step)
        p = ramp_p(step, self.max_steps, self.p, self.ramp_fraction)
        generator = step_generator(self.seed, step, current_rank(), micro)
        masked = mask_thoughts(batch["input_ids"], batch["labels"], p, generator, protected, pool)
        inputs = model_inputs(batch) | {"input_ids": masked.input_ids}
        loss_sum, num_tokens = forward_loss_sum(model, inputs, batch["labels"])
        eligible = int(masked.eligible.sum())
        rate = int(masked.replaced.sum()) / eligible if eligible else 0.0
        return ObjectiveOutput(loss_sum=loss_sum, num_tokens=num_tokens, metrics={"mask_rate": rate, "mask_p": p})


def resolve_token_ids(
    config: Any,
    replacement: Replacement,
    tokenizer: PreTrainedTokenizerBase | None = None,
    mask_token_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(protected ids, replacement pool) for an `InfiMMHDConfig` and optional tokenizer, both 1-D long tensors.

    Protected: `<image>`, `<|endofchunk|>`, the text config's pad/BOS/EOS, every `tokenizer.all_special_ids` and the
    mask id. Pool: "pad" -> [pad], "mask" -> [mask], "random" -> every id of the original vocabulary (the tokenizer's
    length, else the embedding rows) that is not protected.
    """
    text = config.text_config
    if mask_token_id is None and tokenizer is not None and MASK_TOKEN in tokenizer.get_vocab():
        mask_token_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    found = [config.image_token_id, config.end_of_chunk_token_id, mask_token_id]
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(text, name, None)
        found.extend(value if isinstance(value, Iterable) else [value])
    if tokenizer is not None:
        found.extend(tokenizer.all_special_ids)
    protected = sorted({int(i) for i in found if i is not None})
    if replacement == "pad":
        pad = tokenizer.pad_token_id if tokenizer is not None else getattr(text, "pad_token_id", None)
        if pad is None:
            raise ValueError("masked-thought: replacement='pad' but the model has no pad token; use 'random' or 'mask'")
        pool = [pad]
    elif replacement == "mask":
        if mask_token_id is None:
            raise ValueError(
                "masked-thought: replacement='mask' needs a <mask> token: call add_mask_token(model, tokenizer) and "
                "pass tokenizer= (or mask_token_id=) to the objective"
            )
        pool = [mask_token_id]
    else:
        vocab = len(tokenizer) if tokenizer is not None else text.vocab_size
        pool = sorted(set(range(vocab)) - set(protected))
    return torch.tensor(protected, dtype=torch.long), torch.tensor(pool, dtype=torch.long)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"masked-thought: {name} must be a number in [0, 1], got {value!r}")
    return float(value)
