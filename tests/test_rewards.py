"""Reward sources and wrappers (`infimm_hd.objectives.rewards`) and reward-model training
(`infimm_hd.objectives.reward_model`): hand-computed values, batch = single for the classifier reward, resume of the
running normaliser, and a tiny Llama reward model that learns "correct digit" over "wrong digit" in 50 steps."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from infimm_hd.byte_tokenizer import byte_level_tokenizer
from infimm_hd.objectives.reward_model import bradley_terry_loss, score_texts
from infimm_hd.objectives.rewards import (
    CallableReward,
    ExactMatchReward,
    MissingEOSPenalty,
    NormalizedReward,
    RewardFunction,
    SequenceClassifierReward,
)


def tiny_reward_model(tokenizer, seed: int = 0, initializer_range: float = 0.02) -> LlamaForSequenceClassification:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
        initializer_range=initializer_range,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForSequenceClassification(config).eval()


def constant(values):
    return CallableReward(lambda prompts, responses, references: values, batched=True)


# ----------------------------------------------------------------------------------------------------------------------
# Sources


def test_callable_reward_per_sample_and_batched():
    per_sample = CallableReward(lambda p, r, ref: len(r) + (ref == r))
    assert isinstance(per_sample, RewardFunction)
    scores = per_sample(["q", "q"], ["ab", "c"], ["ab", None])
    assert scores.dtype == torch.float32 and scores.tolist() == [3.0, 1.0]
    assert constant([0.5, -1.0])(["a", "b"], ["c", "d"], [None, None]).tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        constant([0.5])(["a", "b"], ["c", "d"], [None, None])
    with pytest.raises(ValueError, match="parallel lists"):
        per_sample(["a"], ["b", "c"], [None, None])


def test_exact_match_normalises_and_gives_optional_partial_credit():
    prompts = ["q"] * 6
    responses = ["7", " Red. ", "it is red", "reddish", "17", "8"]
    references = ["7", "red", "red", "red", "7", "7"]
    assert ExactMatchReward()(prompts, responses, references).tolist() == [1, 1, 0, 0, 0, 0]
    # partial credit only for the reference as a whole word of a longer answer ("reddish", "17" get none)
    assert ExactMatchReward(partial_credit=0.5)(prompts, responses, references).tolist() == [1, 1, 0.5, 0, 0, 0]
    with pytest.raises(ValueError, match="reference"):
        ExactMatchReward()(["q"], ["7"], [None])


def test_sequence_classifier_reward_batch_equals_single_and_has_no_grad(one_thread):
    tok = byte_level_tokenizer()
    model = tiny_reward_model(tok)
    prompts = ["Q: colour? A:", "Q: how many? A:", "Q:", "Q: a much longer question here? A:", "x"]
    responses = [" red", " 7", " nothing at all", " 3", ""]
    reward = SequenceClassifierReward(model, tok, batch_size=2)
    scores = reward(prompts, responses, [None] * 5)
    assert scores.shape == (5,) and not scores.requires_grad
    with torch.no_grad():
        singles = torch.cat([score_texts(model, tok, [p + r]) for p, r in zip(prompts, responses, strict=True)])
        padded = score_texts(model, tok, [p + r for p, r in zip(prompts, responses, strict=True)])
    torch.testing.assert_close(scores, singles, atol=1e-5, rtol=1e-5, msg="batched (padded) scores != one by one")
    torch.testing.assert_close(padded, singles, atol=1e-5, rtol=1e-5, msg="one padded batch != one by one")


def test_score_texts_refuses_pooling_it_cannot_trust():
    tok = byte_level_tokenizer()
    model = tiny_reward_model(tok)
    model.config.pad_token_id = None
    with pytest.raises(ValueError, match="no config.pad_token_id"):
        score_texts(model, tok, ["a", "bb"])
    model.config.pad_token_id = tok.eos_token_id
    with pytest.raises(ValueError, match="tokenizer pads with id"):
        score_texts(model, tok, ["a", "bb"])
    model.config.pad_token_id = tok.pad_token_id
    with pytest.raises(ValueError, match="ends with the pad token"):
        score_texts(model, tok, ["a<pad>", "bb"])


# ----------------------------------------------------------------------------------------------------------------------
# Wrappers


def test_missing_eos_penalty_subtracts_from_unfinished_responses():
    reward = MissingEOSPenalty(constant([1.0, 1.0, 0.0]), penalty=2.0)
    finished = torch.tensor([True, False, False])
    assert reward(["p"] * 3, ["r"] * 3, [None] * 3, finished=finished).tolist() == [1.0, -1.0, -2.0]
    with pytest.raises(ValueError, match="finished"):
        reward(["p"] * 3, ["r"] * 3, [None] * 3)


def test_normalized_reward_running_statistics_by_hand_and_resume():
    batches = [[1.0, 2.0, 3.0], [4.0, 5.0]]
    norm = NormalizedReward(CallableReward(lambda p, r, ref: float(r)))
    call = lambda n, xs: n(["p"] * len(xs), [str(x) for x in xs], [None] * len(xs))
    # batch 1: mean 2, population var 2/3
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(call(norm, batches[0]), torch.tensor([-1 / s, 0.0, 1 / s]))
    # after batch 2 the statistics are those of 1..5: mean 3, population var 2
    torch.testing.assert_close(call(norm, batches[1]), torch.tensor([1 / math.sqrt(2), 2 / math.sqrt(2)]))
    assert norm.mean == pytest.approx(3.0) and norm.std == pytest.approx(math.sqrt(2.0))

    state = json.loads(json.dumps(norm.state_dict()))  # checkpoints store it as JSON
    resumed = NormalizedReward(norm.reward)
    resumed.load_state_dict(state)
    torch.testing.assert_close(call(resumed, [0.0, 9.0]), call(norm, [0.0, 9.0]), msg="resume changed the statistics")

    # Chan's merge equals the statistics of everything concatenated
    g = torch.Generator().manual_seed(0)
    merged, seen = NormalizedReward(norm.reward), []
    for size in [1, 5, 2, 17, 3]:
        x = torch.randn(size, generator=g) * 3 + 1
        merged.update(x)
        seen.append(x)
    allx = torch.cat(seen).double()
    assert merged.mean == pytest.approx(allx.mean().item()) and merged.std == pytest.approx(allx.std(False).item())


def test_normalized_reward_batch_mode_clip_and_scale_only():
    xs = [1.0, 2.0, 3.0]
    base = CallableReward(lambda p, r, ref: float(r))
    call = lambda n: n(["p"] * 3, [str(x) for x in xs], [None] * 3)
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(call(NormalizedReward(base, mode="batch")), torch.tensor([-1 / s, 0.0, 1 / s]))
    torch.testing.assert_close(call(NormalizedReward(base, mode="batch", clip=1.0)), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(
        call(NormalizedReward(base, mode="batch", shift_mean=False)), torch.tensor([2 - 1 / s, 2.0, 2 + 1 / s])
    )
    one = NormalizedReward(base, mode="batch")(["p"], ["4"], [None])
    assert one.tolist() == [0.0], "a batch of one normalises to 0, not nan"


# ----------------------------------------------------------------------------------------------------------------------
# Reward-model training


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    loss, acc = bradley_terry_loss(chosen, rejected)
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928, -log sigmoid(-1) = log(1 + e) = 1.313262
    want = (math.log(1 + math.exp(-2)) + math.log(1 + math.e)) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6) and acc.item() == 0.5
    # margin 1 on both: diffs 1 and -2; centring: 0.1 * mean((2 + 0)^2, (0 + 1)^2) = 0.1 * 2.5
    loss, _ = bradley_terry_loss(chosen, rejected, margin=1.0, center_coef=0.1)
    want = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2 + 0.25
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]))[1].item() == 0.0, "a tie is not a win"


def test_bradley_terry_loss_matches_trl_reward_trainer():
    trl = pytest.importorskip("trl", minversion="1.16", reason="TRL is an optional independent check")
    g = torch.Generator().manual_seed(0)
    chosen, rejected, margin = torch.randn(8, generator=g), torch.randn(8, generator=g), torch.rand(8, generator=g)
    ident = lambda x: x
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False),
        args=SimpleNamespace(center_rewards_coefficient=0.01),
        accelerator=SimpleNamespace(gather=ident, gather_for_metrics=ident),
        _metrics={"eval": defaultdict(list)},
        _total_train_tokens=0,
    )
    model = lambda **_: SimpleNamespace(logits=torch.cat([chosen, rejected])[:, None])
    want = trl.RewardTrainer.compute_loss(fake, model, {"margin": margin, "attention_mask": torch.ones(16, 2)})
    loss, acc = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=0.01)
    torch.testing.assert_close(loss, want, msg="Bradley-Terry loss vs TRL's RewardTrainer")
    assert acc.item() == pytest.approx(fake._metrics["eval"]["accuracy"][0])


def digit_pairs(rng: random.Random) -> list[tuple[str, str]]:
    """Every (digit d, wrong digit w) once: ("<prefix>d=d", "<prefix>d=w"), with a random 0-3 letter prefix, so texts
    have different lengths (padding) and held-out texts are new strings."""
    pairs = []
    for d in range(10):
        for w in range(10):
            if w != d:
                prefix = "".join(rng.choice("abcxyz") for _ in range(rng.randrange(4)))
                pairs.append((f"{prefix}{d}={d}", f"{prefix}{d}={w}"))
    return pairs


def pairwise_accuracy(model, tok, pairs) -> float:
    chosen, rejected = zip(*pairs, strict=True)
    with torch.no_grad():
        scores = score_texts(model, tok, list(chosen) + list(rejected))
    return bradley_terry_loss(scores[: len(pairs)], scores[len(pairs) :])[1].item()


def test_tiny_reward_model_learns_correct_over_wrong_digit(one_thread):
    """50 full-batch AdamW steps on all 90 (digit, wrong digit) pairs; held-out pairs carry fresh prefixes."""
    tok = byte_level_tokenizer()
    # A larger init than Llama's 0.02 makes 50 steps enough: seeds 0-3 reach 99-100% held-out at step 50, where with
    # 0.02 one seed is at 88% (all reach 100% by step 200).
    model = tiny_reward_model(tok, seed=0, initializer_range=0.2).train()
    held_out = digit_pairs(random.Random(1000))
    assert pairwise_accuracy(model, tok, held_out) < 0.8, "the untrained model should not already rank the pairs"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    rng = random.Random(0)
    for _ in range(50):
        chosen, rejected = zip(*digit_pairs(rng), strict=True)
        scores = score_texts(model, tok, list(chosen) + list(rejected))
        loss, _ = bradley_terry_loss(scores[: len(chosen)], scores[len(chosen) :])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = pairwise_accuracy(model.eval(), tok, held_out)
    assert accuracy > 0.9, f"held-out pairwise accuracy {accuracy:.2f} after 50 steps (final train loss {loss:.3f})"
