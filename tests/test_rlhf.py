"""The `rlhf` objective (direct RLHF: RLOO and PPO) on the tiny preset.

Independent expectations: losses recomputed by hand (python loops over log_softmax of a separate forward), the
reference against an untouched deep copy of the starting model, batched rollout log-probs against one unpadded
sample at a time, vision-tower calls counted with a hook, and a stage-4 run resumed against an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import infimm_hd
from data_prep.synthetic import generate
from infimm_hd.objectives import RLHFObjective, build_objective
from infimm_hd.objectives import rlhf as rlhf_module
from infimm_hd.objectives.rewards import CallableReward
from infimm_hd.objectives.rl_math import logprobs_of
from infimm_hd.objectives.rlhf import METRIC_KEYS
from infimm_hd.objectives.rollout import Rollout, position_ids_from, prompts_from_batch, response_mask
from infimm_hd.training import checkpoint as ckpt
from infimm_hd.training.data import LoaderConfig, StreamingLoader
from infimm_hd.training.progress import read_log
from infimm_hd.training.trainable import TrainableSpec, apply_trainable
from stages import stage4_instruction_tuning

STAGE4 = TrainableSpec(cross_attention=True, language_model=True, embeddings=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rlhf-data")
    generate(out, num_images_train=8, num_images_heldout=2, tasks=("vqa",), grids=((1, 3),), shard_size=8, workers=1,
             log=lambda *a: None)  # fmt: skip
    return out


def tiny_model(seed: int = 0):
    model, processor = infimm_hd.build_model("tiny", seed=seed)
    model.set_window_size(448)
    processor.image_processor.window_size = 448
    apply_trainable(model, STAGE4)
    with torch.no_grad():  # open the gates, so the image matters to every logit
        for block in model.cross_attention_blocks().values():
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    return model, processor


def first_batch(data: Path, processor, batch_size: int = 2) -> dict:
    config = LoaderConfig(shards=[str(data / "vqa" / "train-*.tar")], batch_size=batch_size, num_workers=0)
    return next(StreamingLoader(config, processor))


def objective(processor, model, **options) -> RLHFObjective:
    obj = build_objective("rlhf", run={"tokenizer": processor.tokenizer, "max_steps": 3}, **options)
    obj.setup(model)
    return obj


def perturb(model, seed: int = 1, scale: float = 0.05) -> None:
    """Move every trainable weight, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


def token_logprobs(model, rollout: Rollout) -> torch.Tensor:
    """(B, R) log-probs of the response tokens from a plain forward and log_softmax (independent of rl_math)."""
    with torch.no_grad():
        logits = model(**rollout.model_inputs()).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, rollout.response[..., None]).squeeze(-1)


def text_rollout(processor, k: int) -> tuple[Rollout, list[str]]:
    """A hand-built text-only rollout: 2 prompts x k fixed responses of different lengths, one without a stop."""
    tok = processor.tokenizer
    stop = tok.convert_tokens_to_ids("<|endofchunk|>")
    prompts = [tok("Q: 2+2? A:")["input_ids"], tok("Q: 7? A:")["input_ids"]]
    answers = ["4", "44", "7", "x", "abc", "7"][: 2 * k] if k <= 3 else None
    rows, responses = [], []
    for i in range(2 * k):
        text = answers[i] if answers else "ab"[: 1 + i % 2]
        body = tok(text, add_special_tokens=False)["input_ids"] + ([] if i == 1 else [stop])
        rows.append(body)
        responses.append(text)
    width_p, width_r = max(map(len, prompts)), max(map(len, rows))
    seq = torch.zeros(2 * k, width_p + width_r, dtype=torch.long)
    attn = torch.zeros_like(seq)
    resp = torch.zeros(2 * k, width_r, dtype=torch.long)
    for i, body in enumerate(rows):
        p = prompts[i // k]
        seq[i, width_p - len(p) : width_p] = torch.tensor(p)
        attn[i, width_p - len(p) : width_p] = 1
        resp[i, : len(body)] = torch.tensor(body)
    mask, finished = response_mask(resp, torch.tensor([stop, tok.eos_token_id]))
    resp = torch.where(mask, resp, 0)
    seq[:, width_p:] = resp
    attn[:, width_p:] = mask.long()
    rollout = Rollout(seq, attn, position_ids_from(attn), width_p, resp, mask, finished, None, k)
    return rollout, responses


# ----------------------------------------------------------------------------------------------------------------------
def test_rloo_loss_on_a_hand_built_rollout_is_the_hand_computation():
    model, processor = tiny_model()
    scores = [1.0, 0.0, 0.5, 0.25, 2.0, -1.0]
    reward = CallableReward(lambda prompts, responses, refs: scores, batched=True)
    obj = objective(processor, model, algorithm="rloo", k=3, kl_coef=0.1, reward=reward)
    reference = copy.deepcopy(model)
    perturb(model)  # the policy moved away from the reference, so the KL term is not zero
    rollout, responses = text_rollout(processor, k=3)
    out = obj.loss_on_rollout(model, rollout, ["p"] * 6, [None] * 6, responses)

    logp, ref = token_logprobs(model, rollout), token_logprobs(reference, rollout)
    mask = rollout.response_mask
    kl = [sum(float(logp[i, t] - ref[i, t]) for t in range(mask.shape[1]) if mask[i, t]) for i in range(6)]
    r = [scores[i] - 0.1 * kl[i] for i in range(6)]
    adv = [r[i] - sum(r[j] for j in range(3 * (i // 3), 3 * (i // 3) + 3) if j != i) / 2 for i in range(6)]
    expected = -sum(adv[i] * float(logp[i][mask[i]].sum()) for i in range(6))
    assert int(out.num_tokens) == 6, "RLOO normalises per sequence"
    assert math.isclose(out.loss_sum.item(), expected, rel_tol=1e-5, abs_tol=1e-5), (out.loss_sum.item(), expected)
    assert math.isclose(out.metrics["kl"], sum(kl) / 6, rel_tol=1e-5, abs_tol=1e-6)
    assert out.metrics["eos_rate"] == pytest.approx(5 / 6)
    assert out.metrics["response_length"] == pytest.approx(float(mask.sum(1).float().mean()))
    assert set(out.metrics) == set(METRIC_KEYS)


def test_ppo_loss_on_a_hand_built_rollout_is_the_hand_computation():
    model, processor = tiny_model()
    scores = [1.0, -0.5]
    reward = CallableReward(lambda prompts, responses, refs: scores, batched=True)
    obj = objective(processor, model, algorithm="ppo", k=1, kl_coef=0.2, reward=reward, vf_coef=0.1, lam=0.9,
                    whiten_advantages=False)  # fmt: skip
    with torch.no_grad():  # a non-zero value head, so GAE's bootstrapping matters
        obj.value_head.proj.weight.copy_(torch.linspace(-0.5, 0.5, 64)[None])
        obj.value_head.proj.bias.fill_(0.1)
    reference = copy.deepcopy(model)
    perturb(model)
    rollout, responses = text_rollout(processor, k=1)
    out = obj.loss_on_rollout(model, rollout, ["p"] * 2, [None] * 2, responses)

    logp, ref = token_logprobs(model, rollout), token_logprobs(reference, rollout)
    with torch.no_grad():
        hidden = model(**rollout.model_inputs(), output_hidden_states=True).hidden_states[-1]
        values = obj.value_head(hidden[:, rollout.prompt_length - 1 : -1])
    mask = rollout.response_mask
    expected = 0.0
    for i in range(2):
        n = int(mask[i].sum())
        rewards = [-0.2 * float(logp[i, t] - ref[i, t]) for t in range(n)]
        rewards[-1] += scores[i]
        adv, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_v = float(values[i, t + 1]) if t + 1 < n else 0.0
            running = rewards[t] + next_v - float(values[i, t]) + 0.9 * running
            adv[t] = running
        for t in range(n):
            ret = adv[t] + float(values[i, t])
            expected += -adv[t] + 0.1 * 0.5 * (float(values[i, t]) - ret) ** 2  # ratio 1, V = V_old: no clipping
    assert int(out.num_tokens) == int(mask.sum()), "PPO normalises per response token"
    assert math.isclose(out.loss_sum.item(), expected, rel_tol=1e-4, abs_tol=1e-5), (out.loss_sum.item(), expected)
    assert out.metrics["clip_frac"] == 0.0 and out.metrics["approx_kl"] == 0.0  # one update per rollout
    out.loss_sum.backward()
    assert obj.value_head.proj.weight.grad.abs().sum() > 0, "the value head gets a gradient"


def test_reference_by_swap_is_the_untouched_starting_model_and_restores_the_policy_bitwise(data):
    model, processor = tiny_model()
    untouched = copy.deepcopy(model)
    obj = objective(processor, model, algorithm="rloo", k=2, max_new_tokens=6)
    perturb(model)
    before = {n: (p.detach().clone(), p.data_ptr()) for n, p in model.named_parameters()}
    torch.manual_seed(0)
    rollout, *_ = obj.rollout(model, first_batch(data, processor))
    swapped = obj.reference_logprobs(model, rollout)
    with torch.no_grad():  # the same arithmetic on the untouched copy: the swap must change nothing, to the bit
        logits = untouched.eval()(**rollout.model_inputs()).logits[:, :-1]
    expected = logprobs_of(logits, rollout.response)
    assert torch.equal(swapped, expected), (swapped - expected).abs().max()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name][0]) and p.data_ptr() == before[name][1], f"{name} changed by the swap"
    assert not torch.allclose(token_logprobs(model, rollout), expected), "the policy differs from the reference"
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    assert obj.reference.num_bytes() == trainable, "only the trainable tensors are kept"


def test_batched_rollout_logprobs_equal_one_unpadded_sample_at_a_time(data):
    """Left padding, positions, the shared vision context and the masks: batch = single."""
    model, processor = tiny_model()
    obj = objective(processor, model, algorithm="rloo", k=2, max_new_tokens=5)
    batch = first_batch(data, processor)
    torch.manual_seed(1)
    rollout, *_ = obj.rollout(model, batch)
    batched = token_logprobs(model, rollout)
    crops = (batch["image_grids"].prod(1) + 1).tolist()  # thumbnail + windows per image
    starts = [0, crops[0]]
    for i in range(rollout.sequences.shape[0]):
        keep = rollout.attention_mask[i].bool()
        ids = rollout.sequences[i][keep][None]
        p = i // rollout.k
        pixels = batch["pixel_values"][starts[p] : starts[p] + crops[p]]
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=pixels, image_grids=batch["image_grids"][p : p + 1]).logits
        n = int(rollout.response_mask[i].sum())
        single = torch.log_softmax(logits[0, -n - 1 : -1].float(), -1).gather(-1, ids[0, -n:, None]).squeeze(-1)
        assert torch.allclose(batched[i, :n], single, atol=1e-4), (i, batched[i, :n], single)


@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_later_epochs_rescore_the_kept_rollout_against_its_sampling_weights(data, algorithm, monkeypatch):
    model, processor = tiny_model()
    k = 2 if algorithm == "rloo" else 1
    # A score that differs between samples, so the advantages (and the gradients) are not all zero.
    reward = CallableReward(lambda prompts, responses, refs: [sum(map(ord, r)) % 7 - 3.0 for r in responses], True)
    obj = objective(processor, model, algorithm=algorithm, k=k, max_new_tokens=4, ppo_epochs=3, clip_range=0.1,
                    reward=reward)  # fmt: skip
    assert obj.steps_per_batch == 3
    sampled = []
    real_sample = rlhf_module.sample_responses
    monkeypatch.setattr(rlhf_module, "sample_responses", lambda *a, **kw: sampled.append(1) or real_sample(*a, **kw))
    torch.manual_seed(0)
    first = obj.loss(model, first_batch(data, processor), 0)
    assert first.metrics["clip_frac"] == 0.0 and first.metrics["approx_kl"] == pytest.approx(0.0, abs=1e-12)
    kept = obj.kept[0]
    rollout = kept.rollout
    with torch.no_grad():
        old_hidden = model(**rollout.model_inputs(), output_hidden_states=True).hidden_states[-1]
    old_logp = token_logprobs(model, rollout)

    perturb(model, scale=0.2)  # as the first epoch's optimizer step would, only larger: some ratios leave 1 +- 0.1
    second = obj.loss(model, None, 1)
    assert len(sampled) == 1 and obj.rollouts == 1, "a later epoch must not sample again"

    logp, mask = token_logprobs(model, rollout), rollout.response_mask
    assert torch.allclose(kept.old_logp, old_logp, atol=1e-5), "old log-probs are the sampling weights'"
    rows = range(mask.shape[0])
    if algorithm == "rloo":
        adv = kept.advantages.tolist()  # (B,): checked by the hand computation above
        assert any(a != 0 for a in adv)
        rho = [math.exp(float((logp[i] - old_logp[i])[mask[i]].sum())) for i in rows]
        expected = sum(max(-a * r, -a * min(max(r, 0.9), 1.1)) for a, r in zip(adv, rho, strict=True))
        clipped = sum(-a * min(max(r, 0.9), 1.1) > -a * r for a, r in zip(adv, rho, strict=True)) / len(rho)
        assert any(abs(r - 1) > 0.1 for r in rho), "the perturbation must take some ratio out of the clip range"
    else:
        with torch.no_grad():
            hidden = model(**rollout.model_inputs(), output_hidden_states=True).hidden_states[-1]
            values = obj.value_head(hidden[:, rollout.prompt_length - 1 : -1])
            old_values = obj.value_head(old_hidden[:, rollout.prompt_length - 1 : -1])
        expected, clipped_tokens = 0.0, 0
        for i in rows:
            for t in range(int(mask[i].sum())):
                a, g = float(kept.advantages[i, t]), float(kept.returns[i, t])
                r = math.exp(float(logp[i, t] - old_logp[i, t]))
                expected += max(-a * r, -a * min(max(r, 0.9), 1.1))
                clipped_tokens += -a * min(max(r, 0.9), 1.1) > -a * r
                v, v_old = float(values[i, t]), float(old_values[i, t])
                v_clip = min(max(v, v_old - 0.2), v_old + 0.2)
                expected += 0.1 * 0.5 * max((v - g) ** 2, (v_clip - g) ** 2)
        clipped = clipped_tokens / int(mask.sum())
    assert math.isclose(second.loss_sum.item(), expected, rel_tol=1e-4, abs_tol=1e-5), (
        second.loss_sum.item(),
        expected,
    )
    assert second.metrics["clip_frac"] == pytest.approx(clipped)
    assert algorithm == "rloo" or clipped > 0, "some token's clipped term must be the active one"
    assert second.metrics["approx_kl"] > 0
    for key in ("reward/mean", "kl", "kl_coef", "response_length", "eos_rate"):
        assert second.metrics[key] == first.metrics[key], f"{key}: the rollout's own figure"
    second.loss_sum.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)

    # The next drawing step starts a new rollout; a micro-batch the sampling step did not have is a clear error.
    obj.loss(model, first_batch(data, processor), 3)
    assert len(sampled) == 2 and len(obj.kept) == 1 and obj.kept[0] is not kept
    obj.loss(model, None, 4)
    with pytest.raises(RuntimeError, match="no kept rollout for micro-batch 1"):
        obj.loss(model, None, 4)


@pytest.mark.parametrize("head", ["chunked", "family fallback"])
def test_scoring_without_logits_equals_log_softmax_of_the_full_logits(data, head, monkeypatch):
    """The reference and graded passes ask the model for the response tokens' log-probs and entropies
    (`logprobs_of_last`: chunked from the hidden states, or the family's own head at those positions); values and the
    gradients of a block, the LM head and the embeddings under a non-uniform upstream gradient must equal log_softmax
    over the full logits, computed here independently."""
    if head == "family fallback":
        monkeypatch.setattr(infimm_hd.modeling, "PLAIN_HEAD_FAMILIES", frozenset())
    model, processor = tiny_model()
    obj = objective(processor, model, algorithm="rloo", k=2, max_new_tokens=5, temperature=0.7)
    torch.manual_seed(0)
    rollout, *_ = obj.rollout(model, first_batch(data, processor), 0)
    params = [
        model.cross_attention_blocks()[3].attn.to_q.weight,
        model.get_output_embeddings().weight,
        model.get_input_embeddings().weight,
    ]
    out = model(**rollout.scoring_inputs(0.7))
    assert out.logits is None
    weights = torch.randn(out.token_logprobs.shape, generator=torch.Generator().manual_seed(1))
    got_grads = torch.autograd.grad((out.token_logprobs * weights).sum(), params)

    logits = model(**rollout.model_inputs()).logits[:, :-1].float() / 0.7  # (B, R, V)
    log_probs = torch.log_softmax(logits, -1)
    want = log_probs.gather(-1, rollout.response[..., None]).squeeze(-1)
    want_grads = torch.autograd.grad((want * weights).sum(), params)
    torch.testing.assert_close(out.token_logprobs, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.token_entropy, -(log_probs.exp() * log_probs).sum(-1).detach(), rtol=1e-5, atol=1e-5)
    for name, g, w in zip(["block to_q", "lm_head", "embeddings"], got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    with pytest.raises(ValueError, match="no labels"):
        model(**rollout.scoring_inputs(1.0), labels=rollout.sequences)


def test_the_vision_tower_runs_once_per_prompt_in_a_whole_rlhf_step(data):
    model, processor = tiny_model()
    obj = objective(processor, model, algorithm="rloo", k=4, max_new_tokens=4)
    batch = first_batch(data, processor)
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        out = obj.loss(model, batch, 0)
        out.loss_sum.backward()
    finally:
        hook.remove()
    assert calls == [batch["pixel_values"].shape[0]], f"ViT calls (crops each): {calls}"
    assert out.metrics["response_length"] >= 1


@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_kl_is_zero_at_step_zero(data, algorithm):
    model, processor = tiny_model()
    obj = objective(processor, model, algorithm=algorithm, max_new_tokens=6)
    torch.manual_seed(0)
    out = obj.loss(model, first_batch(data, processor), 0)
    assert abs(out.metrics["kl"]) < 1e-6, out.metrics
    assert set(out.metrics) == set(METRIC_KEYS)


def test_adaptive_kl_state_round_trips_as_json():
    model, processor = tiny_model()
    obj = objective(processor, model, adaptive_kl=True, kl_target=0.1, kl_horizon=10, normalize_rewards="running")
    obj.kl_controller.update(1.0, n_steps=5)
    obj.normalizer.update(torch.tensor([1.0, 3.0]))
    state = obj.state_dict()
    fresh = objective(processor, model, adaptive_kl=True, kl_target=0.1, kl_horizon=10, normalize_rewards="running")
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.state_dict() == state and fresh.kl_controller.value == pytest.approx(0.05 * 1.1)


def test_bad_options_are_clear_errors():
    _, processor = tiny_model()
    run = {"tokenizer": processor.tokenizer}
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        build_objective("rlhf", run=run, algorithm="rloo", k=1)
    with pytest.raises(ValueError, match="reward-model folder"):
        build_objective("rlhf", run=run, reward="no-such-thing")
    with pytest.raises(ValueError, match="tokenizer"):
        build_objective("rlhf", algorithm="ppo")
    with pytest.raises(ValueError, match="ppo_epochs must be an integer >= 1"):
        build_objective("rlhf", run=run, algorithm="ppo", ppo_epochs=0)


# ----------------------------------------------------------------------------------------------------------------------
def stage4(data: Path, init: Path, output: Path, steps: int, algorithm: str, *extra: str, save_every: int = 1) -> Path:
    argv = [
        "--preset", "tiny", "--init", str(init), "--shards", str(data / "vqa" / "train-*.tar"), "--output", str(output),
        "--max-steps", str(steps), "--batch-size", "2", "--num-workers", "0", "--log-every", "1",
        "--save-every", str(save_every), "--deterministic", "--mixed-precision", "no", "--full-save",
        "--objective", "rlhf", "--objective-option", f"algorithm={algorithm}", "--objective-option", "max_new_tokens=4",
        "--objective-option", "k=2", "--objective-option", "adaptive_kl=true", "--objective-option", "kl_target=0.01",
        *extra,
    ]  # fmt: skip
    return stage4_instruction_tuning.main(argv)


@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_stage4_trains_with_rlhf_and_resumes_to_the_uninterrupted_run(data, tmp_path, algorithm):
    model, processor = infimm_hd.build_model("tiny")
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    straight = stage4(data, tmp_path / "init", tmp_path / "straight", 3, algorithm)
    # The run as if it had been killed after step 2: only its step-2 checkpoint (same schedule, same max_steps).
    shutil.copytree(
        ckpt := tmp_path / "straight/checkpoints/step-00000002", tmp_path / "resumed/checkpoints" / ckpt.name
    )
    resumed = stage4(data, tmp_path / "init", tmp_path / "resumed", 3, algorithm)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"differ after resume: {differ}"
    ckpts = [tmp_path / run / "checkpoints" / "step-00000003" for run in ("straight", "resumed")]
    objective_states = [(c / "objective.json").read_text() for c in ckpts]
    assert objective_states[0] == objective_states[1]
    assert json.loads(objective_states[0])["rollouts"] == 3
    if algorithm == "ppo":
        heads = [load_file(c / "objective_module.safetensors") for c in ckpts]
        assert torch.equal(heads[0]["proj.weight"], heads[1]["proj.weight"]), "value head differs after resume"
        assert heads[0]["proj.weight"].abs().sum() > 0, "the value head trained"


def test_prompts_come_from_answers_in_vqa_rows_and_from_the_batch_for_prompt_rows():
    """A vqa row: the prompt ends at the first label token, the reference is the decoded answer. A "prompt" row (no
    labels): the generation prompt is appended and the reference comes from `batch["answers"]` when present."""
    _, processor = tiny_model()
    tok = processor.tokenizer
    question = [{"role": "user", "content": [{"type": "text", "text": "What is 3+4?"}]}]
    answered = question + [{"role": "assistant", "content": [{"type": "text", "text": "7"}]}]
    vqa = processor.apply_chat_template(answered, tokenize=True, return_dict=True, return_labels=True)
    bare = processor.apply_chat_template(question, tokenize=True, return_dict=True, return_labels=True)
    with_prompt = processor.apply_chat_template(question, add_generation_prompt=True, tokenize=True)[0]
    width = vqa["input_ids"].shape[1]
    zeros = torch.zeros(2, width, dtype=torch.long)
    batch = {"input_ids": zeros.clone(), "attention_mask": zeros.clone(), "labels": torch.full((2, width), -100),
             "answers": [None, "7"]}  # fmt: skip
    for row, enc in enumerate((vqa, bare)):
        n = enc["input_ids"].shape[1]
        batch["input_ids"][row, :n], batch["attention_mask"][row, :n] = enc["input_ids"][0], 1
        batch["labels"][row, :n] = enc["labels"][0]
    gen_ids = tok(" ASSISTANT:", add_special_tokens=False)["input_ids"]
    prompts = prompts_from_batch(batch, tok, gen_ids)
    assert prompts.references == ["7", "7"]
    for row in range(2):  # both rows hold exactly the generation-ready prompt, left-padded
        kept = prompts.input_ids[row][prompts.attention_mask[row].bool()]
        assert kept.tolist() == with_prompt.tolist(), (row, tok.decode(kept))


def test_ppo_epochs_through_the_loop_draw_data_once_per_rollout_and_resume_exactly(data, tmp_path):
    model, processor = infimm_hd.build_model("tiny")
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    epochs = ("--objective-option", "ppo_epochs=2", "--grad-accumulation", "2", "--objective-option",
              "reward=tests.helpers.varied_reward:char_sum")  # fmt: skip
    with pytest.raises(ValueError, match="save_every must be a multiple of 2"):
        stage4(data, tmp_path / "init", tmp_path / "bad", 4, "ppo", *epochs, save_every=1)

    straight = stage4(data, tmp_path / "init", tmp_path / "straight", 4, "ppo", *epochs, save_every=2)
    records = [r for r in read_log(tmp_path / "straight") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        sampling_step = r["step"] % 2 == 1
        assert (r["objective/approx_kl"] == 0) == sampling_step, r  # ratio 1 only where the rollout was sampled
    assert records[0]["objective/reward/mean"] == records[1]["objective/reward/mean"], "epoch 2 logs its rollout"
    step2 = tmp_path / "straight/checkpoints/step-00000002"
    # 2 rollouts of 2 micro-batches were drawn for 4 steps, 1 by step 2.
    assert ckpt.read_json(step2 / "rank-00000" / "data.json")["batches"] == 2
    assert ckpt.read_json(tmp_path / "straight/checkpoints/step-00000004/rank-00000/data.json")["batches"] == 4
    assert json.loads((step2 / "objective.json").read_text())["rollouts"] == 2

    # Killed after step 3 (mid-rollout): the run resumes from step 2 and ends where the uninterrupted one did.
    shutil.copytree(step2, tmp_path / "resumed/checkpoints" / step2.name)
    resumed = stage4(data, tmp_path / "init", tmp_path / "resumed", 4, "ppo", *epochs, save_every=2)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"differ after resume: {differ}"
    resumed_records = [r for r in read_log(tmp_path / "resumed") if "loss" in r and r["step"] > 2]
    for x, y in zip(records[2:], resumed_records, strict=True):
        assert x["loss"] == y["loss"] and x["objective/clip_frac"] == y["objective/clip_frac"]
