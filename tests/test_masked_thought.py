"""Masked Thought objective: which input tokens may change (response only, never special), labels untouched, the
realised rate and the replacement distribution, the official ramp, seeding by (seed, step, rank, micro-batch), and a
real backward on tiny."""

from __future__ import annotations

import doctest
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import infimm_hd
from infimm_hd.objectives import SFTObjective, build_objective, masked_thought, next_token_loss_sum
from infimm_hd.objectives.masked_thought import (
    MaskedThoughtObjective,
    add_mask_token,
    mask_thoughts,
    ramp_p,
    resolve_token_ids,
    step_generator,
)
from infimm_hd.training.collate import collate, encode_sample

TINY_SPECIAL = {0, 1, 2, 259, 260}  # <pad> <s> </s> <|endofchunk|> <image>


@pytest.fixture(scope="module")
def tiny():
    return infimm_hd.build_model("tiny", seed=0)


@pytest.fixture(scope="module")
def batch(tiny):
    """Two right-padded conversations from the processor: multi-turn with an image (the second answer holds `</s>`
    as text, which the tokenizer reads as the special token) and text-only (its answer holds `<pad>`)."""
    _, processor = tiny
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat sitting on a mat, thinking step by step."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "It ran </s> away."},
    ]
    text_only = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello <pad> there"}]
    samples = [encode_sample(processor, chat, [image], max_windows=0), encode_sample(processor, text_only, [], 0)]
    return collate(samples, processor.tokenizer.pad_token_id)


class Recorder(nn.Module):
    """Wraps a model (or, without one, returns logits from a small embedding) and keeps every input_ids it sees."""

    def __init__(self, config, model: nn.Module | None = None):
        super().__init__()
        self.config, self.model, self.seen = config, model, []
        vocab = config.text_config.vocab_size
        self.logits = nn.Embedding(vocab, vocab)  # (V, V): logits that depend on the input token

    def forward(self, input_ids, labels=None, **kwargs):
        self.seen.append(input_ids.clone())
        if self.model is not None:
            return self.model(input_ids=input_ids, labels=labels, **kwargs)
        logits = self.logits(input_ids)  # (B, T, V)
        loss = None if labels is None else next_token_loss_sum(logits, labels)[0]  # summed, as the objective asks
        return SimpleNamespace(logits=logits, loss=loss)


def response_batch(batch_size: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hand-built batch of byte tokens (ids 3..258): the first half of each row is prompt, the second half answer."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 259, (batch_size, length), generator=g)  # (B, T)
    labels = input_ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": input_ids, "labels": labels}


def test_doctests():
    result = doctest.testmod(masked_thought)
    assert result.failed == 0, f"{result.failed} doctest(s) of masked_thought failed"


def test_p_zero_is_the_identity_and_the_sft_loss(tiny, batch):
    model, processor = tiny
    protected, pool = resolve_token_ids(model.config, "random", processor.tokenizer)
    out = mask_thoughts(batch["input_ids"], batch["labels"], 0.0, step_generator(0, 0, 0), protected, pool)
    assert torch.equal(out.input_ids, batch["input_ids"]), "p=0 changed the input"
    objective = MaskedThoughtObjective(p=0.0, tokenizer=processor.tokenizer)
    with torch.no_grad():
        mft, sft = objective.loss(model, batch, step=5), SFTObjective().loss(model, batch, step=5)
    assert torch.equal(mft.loss_sum, sft.loss_sum), f"p=0 loss {mft.loss_sum} != SFT loss {sft.loss_sum}"
    assert int(mft.num_tokens) == int(sft.num_tokens) == batch["num_tokens"]
    assert mft.metrics == {"mask_rate": 0.0, "mask_p": 0.0}


def test_only_response_non_special_tokens_change_and_labels_stay(tiny, batch):
    model, processor = tiny
    before = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    recorder = Recorder(model.config)
    objective = MaskedThoughtObjective(p=1.0, max_steps=None, tokenizer=processor.tokenizer)
    out = objective.loss(recorder, batch, step=0)
    (seen,) = recorder.seen
    ids, labels = before["input_ids"], before["labels"]
    special = torch.isin(ids, torch.tensor(sorted(TINY_SPECIAL)))
    response = labels != -100
    assert (response & special).sum() >= 4, "the batch should hold special tokens inside the answers"
    assert (ids == model.config.image_token_id).any() and (~before["attention_mask"].bool()).any()
    assert torch.equal(seen[~response | special], ids[~response | special]), "a prompt, pad or special token changed"
    assert not torch.isin(seen[response & ~special], torch.tensor(sorted(TINY_SPECIAL))).any()
    assert out.metrics["mask_rate"] == 1.0, "p=1 must replace every eligible token"
    for key, value in before.items():
        assert torch.equal(batch[key], value), f"the objective modified batch[{key!r}] in place"


def test_hand_built_special_tokens_in_the_answer_never_change(tiny):
    model, processor = tiny
    ids = torch.tensor([[1, 50, 260, 60, 70, 259, 0, 2, 80, 259, 0, 0]])
    labels = torch.tensor([[-100, -100, 260, 60, 70, 259, 0, 2, 80, 259, -100, -100]])  # specials labelled on purpose
    protected, pool = resolve_token_ids(model.config, "random", processor.tokenizer)
    assert set(protected.tolist()) == TINY_SPECIAL
    for seed in range(20):
        out = mask_thoughts(ids, labels, 1.0, step_generator(seed, 0, 0), protected, pool)
        assert out.eligible.tolist() == [
            [False, False, False, True, True, False, False, False, True, False, False, False]
        ]
        assert torch.equal(out.input_ids[~out.eligible], ids[~out.eligible])
    # Without a tokenizer the protected ids come from the model config alone; for tiny that is every special id.
    assert set(resolve_token_ids(model.config, "random")[0].tolist()) == TINY_SPECIAL


def test_realised_rate_is_p_within_binomial_noise():
    data = response_batch(64, 256)
    p = 0.3
    protected, pool = torch.tensor(sorted(TINY_SPECIAL)), torch.tensor([0])
    out = mask_thoughts(data["input_ids"], data["labels"], p, step_generator(1, 2, 3), protected, pool)
    n = int(out.eligible.sum())
    assert n == 64 * 128
    rate = int(out.replaced.sum()) / n
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), f"realised rate {rate:.4f} vs p={p} over {n} tokens"
    assert torch.equal(out.replaced, out.input_ids != data["input_ids"]), "pad replaced a byte token: must differ"


def test_random_replacement_covers_the_vocabulary_without_special_ids(tiny):
    model, processor = tiny
    protected, pool = resolve_token_ids(model.config, "random", processor.tokenizer)
    assert set(pool.tolist()) == set(range(261)) - TINY_SPECIAL
    data = response_batch(64, 512)
    out = mask_thoughts(data["input_ids"], data["labels"], 1.0, step_generator(0, 7, 0), protected, pool)
    drawn = out.input_ids[out.replaced]
    assert not torch.isin(drawn, protected).any(), "a random replacement drew a special id"
    counts = torch.bincount(drawn, minlength=261)[pool]  # (K,)
    expected = len(drawn) / len(pool)  # 128 per id
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(pool) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), f"chi-square {chi2:.0f} over {dof} dof: not uniform"
    assert int(counts.min()) > expected / 2, f"id drawn only {int(counts.min())} times (expected {expected:.0f})"


def test_pad_and_mask_put_exactly_that_id(tiny, batch):
    model, processor = infimm_hd.build_model("tiny", seed=0)  # add_mask_token changes them: not the shared ones
    embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
    old = [emb.weight.detach().clone() for emb in embeddings]  # (V, D) each
    mask_id = add_mask_token(model, processor.tokenizer)
    assert mask_id == 261 and add_mask_token(model, processor.tokenizer) == mask_id, "not idempotent"
    embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
    for emb, before in zip(embeddings, old, strict=True):
        assert emb.weight.shape[0] == 262, "no row added for <mask>"
        assert torch.equal(emb.weight[:261], before), "add_mask_token changed existing rows"
        assert torch.allclose(emb.weight[261], before.mean(0)), "<mask> row is not the mean embedding"
    assert model.config.text_config.vocab_size == 262
    assert mask_id not in resolve_token_ids(model.config, "random", processor.tokenizer)[1].tolist()
    for replacement, token in (("pad", 0), ("mask", mask_id)):
        recorder = Recorder(model.config)
        objective = MaskedThoughtObjective(
            p=0.5, max_steps=None, replacement=replacement, tokenizer=processor.tokenizer
        )
        objective.loss(recorder, batch, step=0)
        changed = recorder.seen[0] != batch["input_ids"]
        assert changed.any() and (recorder.seen[0][changed] == token).all(), f"{replacement} put another id"
    objective = MaskedThoughtObjective(replacement="mask", tokenizer=tiny[1].tokenizer)  # a tokenizer without <mask>
    with pytest.raises(ValueError, match="add_mask_token"):
        objective.loss(Recorder(model.config), batch, step=0)


def test_ramp_follows_the_official_formula():
    p, max_steps, fraction = 0.4, 300, 0.66
    values = [ramp_p(s, max_steps, p, fraction) for s in range(max_steps + 1)]
    for step in (0, 1, 50, 150, 198, 199, 300):
        assert values[step] == min(p, p * step / (max_steps * fraction + 1)), f"step {step}"
    assert values[0] == 0.0 and values[199] == p and values[198] < p, "ramp ends after 66% of training"
    assert all(a <= b for a, b in zip(values, values[1:], strict=False)), "ramp not monotone"
    assert ramp_p(0, None, p, fraction) == ramp_p(0, max_steps, p, 0.0) == p, "no ramp must mean p from the start"


def test_metrics_report_the_scheduled_p(tiny, batch):
    model, processor = tiny
    objective = MaskedThoughtObjective(p=0.4, max_steps=100, tokenizer=processor.tokenizer)
    for step in (0, 30, 90):
        out = objective.loss(Recorder(model.config), batch, step)
        assert out.metrics["mask_p"] == ramp_p(step, 100, 0.4, 0.66)
        assert 0.0 <= out.metrics["mask_rate"] <= 1.0


def test_noise_depends_on_seed_step_rank_and_micro_batch_only(tiny, batch, monkeypatch):
    model, processor = tiny

    def run(calls: list[int], rank: int = 0, seed: int = 0) -> list[torch.Tensor]:
        monkeypatch.setattr(masked_thought, "current_rank", lambda: rank)
        recorder = Recorder(model.config)
        objective = MaskedThoughtObjective(p=0.5, max_steps=None, seed=seed, tokenizer=processor.tokenizer)
        for step in calls:
            objective.loss(recorder, batch, step)
        return recorder.seen

    first, second, next_step = run([3, 3, 4])
    assert not torch.equal(first, second), "two micro-batches of one step got the same noise"
    assert not torch.equal(first, next_step), "the step does not change the noise"
    resumed = run([4])  # a resumed run starts at a step boundary with a fresh objective
    assert torch.equal(resumed[0], next_step), "resuming at step 4 does not replay its noise"
    assert all(torch.equal(a, b) for a, b in zip(run([3, 3, 4]), [first, second, next_step], strict=True))
    assert not torch.equal(run([3], rank=1)[0], first), "ranks share the noise"
    assert not torch.equal(run([3], seed=1)[0], first), "the seed does not change the noise"


def test_options_are_validated_and_registered():
    objective = build_objective("masked-thought", p=0.2)
    assert isinstance(objective, MaskedThoughtObjective) and objective.p == 0.2 and objective.replacement == "random"
    assert not hasattr(objective, "state_dict"), "the noise is a function of the step: nothing to checkpoint"
    bad = [
        dict(p=1.5),
        dict(p="0.4"),
        dict(p=True),
        dict(ramp_fraction=-0.1),
        dict(max_steps=0),
        dict(max_steps=2.5),
        dict(replacement="unk"),
        dict(seed=0.5),
        dict(mask_token_id="<mask>"),
    ]
    for options in bad:
        with pytest.raises(ValueError, match="masked-thought"):
            build_objective("masked-thought", **options)
    with pytest.raises(ValueError, match="bad options"):
        build_objective("masked-thought", probability=0.2)


def test_pad_without_a_pad_token_is_a_clear_error(tiny):
    model, _ = tiny
    config = SimpleNamespace(
        image_token_id=5, end_of_chunk_token_id=6, text_config=SimpleNamespace(vocab_size=10, pad_token_id=None)
    )
    with pytest.raises(ValueError, match="no pad token"):
        resolve_token_ids(config, "pad")
    assert resolve_token_ids(config, "random")[1].tolist() == [0, 1, 2, 3, 4, 7, 8, 9]


def test_real_backward_on_tiny(batch):
    model, processor = infimm_hd.build_model("tiny", seed=0)
    model.train()
    recorder = Recorder(model.config, model)
    objective = build_objective("masked-thought", p=0.5, max_steps=None, tokenizer=processor.tokenizer)
    out = objective.loss(recorder, batch, step=0)
    assert not torch.equal(recorder.seen[0], batch["input_ids"]), "nothing was masked"
    out.loss_sum.backward()
    grads = [p.grad for p in model.language_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "a language-model parameter got no gradient"
    with torch.no_grad():
        sft = SFTObjective().loss(model, batch, step=0)
    assert not torch.isclose(out.loss_sum.detach(), sft.loss_sum), "the corrupted input did not change the loss"
