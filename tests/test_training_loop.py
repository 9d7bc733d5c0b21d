"""The training loop on the tiny model, in process: schedule, parameter groups, trainable declarations, per-token
normalisation across micro-batches, bf16 autocast on CPU, and exact resume after a crash."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from conftest import randomize_gates
from safetensors.torch import load_file

import infimm_hd
from infimm_hd import InfiMMHDForConditionalGeneration
from infimm_hd.objectives import ObjectiveOutput, SFTObjective
from infimm_hd.objectives.step_noise import MicroBatchCounter
from infimm_hd.training import checkpoint as ckpt
from infimm_hd.training.config import TrainConfig
from infimm_hd.training.loop import accumulate_step, enable_gradient_checkpointing, train
from infimm_hd.training.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups
from infimm_hd.training.progress import read_log
from infimm_hd.training.trainable import (
    TrainableSpec,
    apply_trainable,
    check_trainable,
    parameter_groups,
    trainable_table,
)
from tests.helpers.standin_batches import StandInBatches

STAGE1 = TrainableSpec(cross_attention=True)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each run builds its own Accelerator; accelerate keeps process-wide state, so reset it between tests."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def stage1_model(seed: int = 0):
    model, processor = infimm_hd.build_model("tiny", seed=seed)
    apply_trainable(model, STAGE1)
    return model, processor


def run_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(
        output_dir=tmp_path,
        max_steps=4,
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        warmup_steps=1,
        grad_accumulation=2,
        mixed_precision="no",
        save_every=1,
        keep_last=2,
        log_every=1,
        deterministic=True,
    )
    return TrainConfig(**(settings | overrides))


def trainable_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# -- schedule and optimizer ---------------------------------------------------------------------------------------
def test_schedule_formula_at_several_steps():
    f = WarmupCosine(warmup_steps=4, max_steps=12, min_ratio=0.1)
    expected = {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 8: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), 12: 0.1, 20: 0.1}
    for step, value in expected.items():
        assert f(step) == pytest.approx(value), f"multiplier at step {step}"
    # The LambdaLR drives the optimizer: the LR of the k-th update is peak * f(k).
    model, _ = stage1_model()
    optimizer = build_optimizer(model, lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    scheduler = build_scheduler(optimizer, warmup_steps=4, max_steps=12, lr=2e-3, min_lr=2e-4)
    seen = []
    for _ in range(13):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([2e-3 * f(k) for k in range(13)])
    assert seen[-1] == pytest.approx(2e-4), "the cosine must end at min_learning_rate"


def test_no_weight_decay_on_gates_norms_biases_and_embeddings():
    model, _ = infimm_hd.build_model("tiny")
    apply_trainable(model, TrainableSpec(True, True, True, True))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in param_groups(model, 0.1)}
    decay, no_decay = groups[0.1], groups[0.0]
    assert decay.isdisjoint(no_decay) and len(decay | no_decay) == len(names)
    for name in no_decay:
        param = dict(model.named_parameters())[name]
        assert param.ndim < 2 or "embed" in name or "lm_head" in name or name.endswith("cls_token"), name
    block = "language_model.model.layers.3.cross_attn."
    for name in ("attn_gate", "ff_gate", "attn.norm.weight", "attn.norm.bias", "ff.0.bias"):
        assert block + name in no_decay, f"{name} must not decay"
    for name in (
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
        "vision_tower.model.pos_embed",
        "vision_tower.model.patch_embed.proj.bias",
        "language_model.model.norm.weight",
    ):
        assert name in no_decay, f"{name} must not decay"
    assert block + "attn.to_q.weight" in decay and "language_model.model.layers.0.mlp.up_proj.weight" in decay
    # Only trainable parameters reach the optimizer.
    apply_trainable(model, STAGE1)
    in_optimizer = {names[id(p)] for g in param_groups(model, 0.1) for p in g["params"]}
    assert in_optimizer == {n for n, p in model.named_parameters() if p.requires_grad}


# -- trainable declarations ---------------------------------------------------------------------------------------
def test_trainable_spec_is_idempotent_and_checked():
    model, _ = infimm_hd.build_model("tiny")
    groups = parameter_groups(model)
    assert set(groups.values()) == {"cross_attention", "vision_tower", "language_model", "embeddings"}
    assert groups["language_model.model.embed_tokens.weight"] == "embeddings"
    assert groups["language_model.lm_head.weight"] == "embeddings"
    assert groups["language_model.model.layers.3.decoder_layer.self_attn.q_proj.weight"] == "language_model"

    apply_trainable(model, STAGE1)
    first = {n: p.requires_grad for n, p in model.named_parameters()}
    model.vision_tower.freeze(False)  # some other code flips a group ...
    apply_trainable(model, STAGE1)  # ... and applying the spec again restores exactly the declaration
    assert {n: p.requires_grad for n, p in model.named_parameters()} == first
    assert {n for n, t in first.items() if t} == {n for n, g in groups.items() if g == "cross_attention"}
    check_trainable(model, STAGE1)

    table = trainable_table(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "cross-attention" in table and "vision tower" in table and f"{trainable:,}" in table

    with pytest.raises(
        ValueError, match=r"vision_tower \(vision tower\): \d+ parameters declared trainable but frozen"
    ):
        check_trainable(model, TrainableSpec(cross_attention=True, vision_tower=True))
    model.get_input_embeddings().weight.requires_grad_(True)
    with pytest.raises(ValueError, match=r"embeddings .* declared frozen but trainable: .*embed_tokens"):
        check_trainable(model, STAGE1)


# -- normalisation and precision ----------------------------------------------------------------------------------
def test_two_micro_batches_give_the_gradient_of_one_big_batch():
    image_token = None

    def grads(batch_size: int, accumulation: int):
        nonlocal image_token
        model, _ = stage1_model()
        randomize_gates(model)  # so every cross-attention weight gets a gradient
        image_token = model.config.image_token_id
        accelerator = Accelerator(mixed_precision="no")
        source = StandInBatches(image_token, batch_size=batch_size)
        totals, _ = accumulate_step(model, SFTObjective(), source, 0, accelerator, accumulation)
        return totals, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    big, big_grads = grads(batch_size=4, accumulation=1)
    small, small_grads = grads(batch_size=2, accumulation=2)
    halves = StandInBatches(image_token, batch_size=2)
    counts = [next(halves)["num_tokens"], next(halves)["num_tokens"]]
    assert counts[0] != counts[1], "the micro-batches must differ in label tokens for this test to mean anything"
    assert big.tokens == small.tokens == sum(counts) and big.samples == small.samples == 4
    assert small.loss == pytest.approx(big.loss, rel=1e-6)
    assert big_grads.keys() == small_grads.keys() and len(big_grads) > 0
    for name in big_grads:
        torch.testing.assert_close(small_grads[name], big_grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_a_text_only_micro_batch_in_stage1_adds_tokens_but_no_gradient():
    """Only the cross-attention trains, so a text-only micro-batch reaches nothing trainable: no backward, its tokens
    still count in the step's mean (single process; under DDP/FSDP such a batch is a clear error, see loop.py)."""
    model, _ = stage1_model()
    randomize_gates(model)
    accelerator = Accelerator(mixed_precision="no")
    source = StandInBatches(model.config.image_token_id, text_only_every=2)  # micro-batch 1 of each pair is text-only
    totals, _ = accumulate_step(model, SFTObjective(), source, 0, accelerator, 2)
    with_images = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    image_only = StandInBatches(model.config.image_token_id)
    alone, _ = accumulate_step(model, SFTObjective(), image_only, 0, accelerator, 1)
    assert totals.tokens > alone.tokens and math.isfinite(totals.loss)
    for name, grad in with_images.items():  # same direction, scaled by the larger token count
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad * alone.tokens / totals.tokens)


def test_gradient_checkpointing_switch_keeps_the_gradients():
    def grads(checkpointing: bool):
        model, _ = stage1_model()
        randomize_gates(model)
        model.train()
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.vision_tower.model.grad_checkpointing and model.language_model.model.gradient_checkpointing
        source = StandInBatches(model.config.image_token_id)
        accumulate_step(model, SFTObjective(), source, 0, Accelerator(mixed_precision="no"), 1)
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


class AutocastProbe(SFTObjective):
    """SFT that records whether it ran under CPU bf16 autocast."""

    seen: list[bool] = []

    def loss(self, model, batch, step) -> ObjectiveOutput:
        self.seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return super().loss(model, batch, step)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    model, _ = stage1_model()
    config = run_config(tmp_path, max_steps=2, mixed_precision="bf16", tensorboard=False, deterministic=False)
    probe = AutocastProbe()
    result = train(model, StandInBatches(model.config.image_token_id), probe, config)
    assert probe.seen and all(probe.seen), "the objective must run under bf16 autocast"
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in result.history)
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps float32 master weights"


# -- checkpoints and resume ---------------------------------------------------------------------------------------
class CountingSFT(SFTObjective):
    """SFT with state (as a ramp would have): the number of micro-batches it has scored, also logged as a metric."""

    def __init__(self) -> None:
        self.calls = 0

    def loss(self, model, batch, step) -> ObjectiveOutput:
        self.calls += 1
        out = super().loss(model, batch, step)
        out.metrics = {"calls": float(self.calls)}
        return out

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


def test_resume_after_a_crash_is_exact(tmp_path):
    image_token = stage1_model()[0].config.image_token_id
    # Uninterrupted: 4 steps x 2 micro-batches.
    model, processor = stage1_model()
    straight_source = StandInBatches(image_token)
    straight = train(model, straight_source, CountingSFT(), run_config(tmp_path / "straight"), processor=processor)
    straight_weights = trainable_weights(model)
    assert straight_source.served == list(range(8))

    # Crash in the middle of step 3 (data position 5 = its second micro-batch), after checkpoints 1 and 2.
    out = tmp_path / "crashed"
    model, processor = stage1_model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(model, StandInBatches(image_token, fail_at=5), CountingSFT(), run_config(out), processor=processor)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-00000001", "step-00000002"]
    (out / "checkpoints" / ".tmp-step-00000003" / "rank-00000").mkdir(parents=True)  # as a kill mid-save leaves

    # A fresh process would build the model from scratch: do the same, then resume="auto".
    model, processor = stage1_model()
    resumed_source = StandInBatches(image_token)
    objective = CountingSFT()
    resumed = train(model, resumed_source, objective, run_config(out, final_trained_only=False))
    assert objective.calls == 8, "the objective's state must continue from the checkpoint (4 calls by step 2)"
    assert resumed_source.served == [4, 5, 6, 7], "the resumed run must continue at the first unfinished step's data"
    for name, value in trainable_weights(model).items():
        assert torch.equal(value, straight_weights[name]), f"{name} differs from the uninterrupted run"
    assert [h["step"] for h in resumed.history] == [3, 4]
    assert resumed.history == straight.history[2:], "losses, LRs, grad norms and metrics must repeat exactly"

    # Layout: the partial folder is gone, keep_last=2 kept the newest two, nothing needs unpickling.
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step-00000003", "step-00000004"]
    last = out / "checkpoints" / "step-00000004"
    expected = {"trainable.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json"}
    expected |= {"objective.json", "trainer_state.json", "config.json", "rank-00000"}
    assert {p.name for p in last.iterdir()} == expected
    assert {p.name for p in (last / "rank-00000").iterdir()} == {"rng.json", "data.json"}
    assert ckpt.read_json(last / "rank-00000" / "data.json")["position"] == 8
    assert load_file(last / "trainable.safetensors").keys() == straight_weights.keys()

    # The log: step 3 is the first step after the resume event.
    records = read_log(out)
    resume_at = next(i for i, r in enumerate(records) if r.get("event") == "resume")
    assert records[resume_at]["from_step"] == 2
    assert next(r["step"] for r in records[resume_at:] if "loss" in r) == 3
    assert list((out / "tensorboard").glob("events.*"))

    # final/ loads with from_pretrained, both as a trained-only folder and as a full save.
    for folder in (tmp_path / "straight" / "final", out / "final"):
        loaded = InfiMMHDForConditionalGeneration.from_pretrained(folder)
        loaded_params = dict(loaded.named_parameters())
        for name, value in straight_weights.items():
            assert torch.equal(loaded_params[name], value), f"{folder}: {name}"
    assert (tmp_path / "straight" / "final" / "infimm_hd_manifest.json").is_file()
    assert (tmp_path / "straight" / "final" / "tokenizer_config.json").is_file()


def test_a_fresh_run_refuses_a_used_output_dir(tmp_path):
    model, _ = stage1_model()
    train(model, StandInBatches(model.config.image_token_id), SFTObjective(), run_config(tmp_path, max_steps=1))
    with pytest.raises(FileExistsError, match="resume='auto'"):
        train(model, StandInBatches(model.config.image_token_id), SFTObjective(), run_config(tmp_path, resume=None))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
class DeterminismProbe(SFTObjective):
    """SFT that records, per micro-batch, whether deterministic algorithms were switched on."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def loss(self, model, batch, step) -> ObjectiveOutput:
        self.seen.append(torch.are_deterministic_algorithms_enabled())
        return super().loss(model, batch, step)


def test_deterministic_mode_lasts_only_while_train_runs(tmp_path):
    model, _ = stage1_model()
    image_token = model.config.image_token_id
    assert not torch.are_deterministic_algorithms_enabled()
    probe = DeterminismProbe()
    train(model, StandInBatches(image_token), probe, run_config(tmp_path / "a", max_steps=1))
    assert probe.seen == [True, True], "deterministic=True must hold for every micro-batch"
    assert not torch.are_deterministic_algorithms_enabled(), "a finished run must not leave the process deterministic"

    # A crash restores it too.
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(model, StandInBatches(image_token, fail_at=1), probe, run_config(tmp_path / "b", max_steps=1))
    assert not torch.are_deterministic_algorithms_enabled()

    # deterministic=False leaves the caller's own setting (here on, warn-only) as it was, during and after.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        probe = DeterminismProbe()
        train(model, StandInBatches(image_token), probe, run_config(tmp_path / "c", max_steps=1, deterministic=False))
        assert probe.seen == [True, True]
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


class TwoStepSFT(SFTObjective):
    """SFT declaring two optimizer steps per drawn batch (as PPO epochs do), replaying its last batches."""

    steps_per_batch = 2

    def __init__(self) -> None:
        self.kept: list = []  # the micro-batches of the last drawing step
        self.received: list[bool] = []  # per call: was a batch drawn
        self.micro = MicroBatchCounter()

    def loss(self, model, batch, step) -> ObjectiveOutput:
        self.received.append(batch is not None)
        micro = self.micro(step)
        if batch is None:
            batch = self.kept[micro]
        else:
            self.kept = [*self.kept[:micro], batch]
        return super().loss(model, batch, step)


def test_a_replaying_objective_draws_every_other_step_and_refuses_a_mid_cycle_resume(tmp_path):
    model, _ = stage1_model()
    source, objective = StandInBatches(model.config.image_token_id), TwoStepSFT()
    train(model, source, objective, run_config(tmp_path / "a", max_steps=4, save_every=2, deterministic=False))
    assert objective.received == [True, True, False, False] * 2, "2 micro-batches drawn per 2 steps"
    assert source.served == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="max_steps must be a multiple of 2"):
        train(model, source, TwoStepSFT(), run_config(tmp_path / "b", max_steps=3, save_every=2))
    # A checkpoint at step 1 (from a run that drew every step) is inside a cycle of the replaying objective.
    train(model, StandInBatches(model.config.image_token_id), SFTObjective(), run_config(tmp_path / "c", max_steps=1))
    with pytest.raises(ValueError, match="inside a cycle of 2 steps"):
        train(
            model, StandInBatches(model.config.image_token_id), TwoStepSFT(), run_config(tmp_path / "c", save_every=2)
        )


def test_lr_scales_give_a_component_its_own_rate_through_the_schedule():
    model, _ = infimm_hd.build_model("tiny")
    apply_trainable(model, TrainableSpec(cross_attention=True, vision_tower=True))
    optimizer = build_optimizer(model, 1e-3, 0.0, (0.9, 0.95), 1e-8, lr_scales={"vision_tower": 0.01})
    scheduler = build_scheduler(optimizer, warmup_steps=2, max_steps=10, lr=1e-3, min_lr=1e-4)
    component = parameter_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        expected = 1e-5 if component[names[id(group["params"][0])]] == "vision_tower" else 1e-3
        assert {component[names[id(p)]] == "vision_tower" for p in group["params"]} == {expected == 1e-5}
        assert group["lr"] == pytest.approx(expected / 2), "warmup step 0 is half the peak, per group"
    # One Adam step moves each weight by about its group's LR (the first update is lr * sign(grad)).
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(3):
        scheduler.step()  # now at the cosine part; the ratio between groups must still be 100
    lrs = {group["lr_scale"]: group["lr"] for group in optimizer.param_groups}
    assert lrs[0.01] == pytest.approx(lrs[1.0] * 0.01)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    optimizer.step()
    moved: dict[str, float] = {}
    for n, p in model.named_parameters():
        if n in before:
            moved[component[n]] = max(moved.get(component[n], 0.0), (p.detach() - before[n]).abs().max().item())
    assert moved["vision_tower"] == pytest.approx(lrs[0.01], rel=0.05)
    assert moved["cross_attention"] == pytest.approx(lrs[1.0], rel=0.05)
    with pytest.raises(ValueError, match="unknown parameter groups"):
        build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8, lr_scales={"vit": 0.1})


def test_right_padded_batches_drop_the_mask_with_the_same_loss():
    """`model_inputs` leaves out the attention mask of a right-padded batch; the loss must equal the masked one
    computed independently, and a left-padded batch must keep its mask."""
    from PIL import Image

    from infimm_hd.objectives.base import model_inputs
    from infimm_hd.training.collate import collate, encode_sample

    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    image = Image.new("RGB", (896, 448), (200, 30, 60))
    samples = [
        encode_sample(
            processor, [user, {"role": "assistant", "content": [{"type": "text", "text": answer}]}], [image], 9
        )
        for user, answer in (
            ({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}, "red"),
            (
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A much longer question?"}]},
                "a",
            ),
        )
    ]
    batch = collate(samples, processor.tokenizer.pad_token_id)  # right-padded, as the loader's
    mask = batch["attention_mask"]
    assert not bool(mask.all()), "the stand-in batch must hold padding for this test to mean anything"
    inputs = model_inputs(batch)
    assert "attention_mask" not in inputs
    with torch.no_grad():
        unmasked = model(**inputs, labels=batch["labels"]).loss
        masked = model(**(inputs | {"attention_mask": mask}), labels=batch["labels"]).loss
    torch.testing.assert_close(unmasked, masked, rtol=1e-6, atol=1e-6)
    left = dict(batch, attention_mask=mask.flip(1))
    assert "attention_mask" in model_inputs(left)


@pytest.mark.parametrize("head", ["chunked", "family fallback"])
def test_sft_loss_without_logits_equals_the_full_logits_loss(head, monkeypatch):
    """The objective asks the model for the loss without logits (`skip_logits`: chunked LM head + cross-entropy over
    the scored rows, or, for a family with another head, the LLM's head at the scored positions only); the loss and
    the gradients of a block, the LM head and the embeddings must equal cross-entropy over the full logits, computed
    here independently."""
    if head == "family fallback":
        monkeypatch.setattr(infimm_hd.modeling, "PLAIN_HEAD_FAMILIES", frozenset())
    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    batch = next(iter(StandInBatches(model.config.image_token_id, batch_size=3, seq_len=20, seed=3)))
    labels = batch["labels"].clone()
    labels[0, :12] = -100  # rows score different spans
    labels[1, 5:] = -100
    batch["labels"] = labels
    params = [
        model.cross_attention_blocks()[3].attn.to_q.weight,
        model.get_output_embeddings().weight,
        model.get_input_embeddings().weight,
    ]
    got = SFTObjective().loss(model, batch, step=0)
    got_grads = torch.autograd.grad(got.loss_sum, params)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grids") if k in batch}
    logits = model(**inputs).logits[:, :-1].float()
    want = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )
    want_grads = torch.autograd.grad(want, params)
    torch.testing.assert_close(got.loss_sum, want, rtol=1e-5, atol=1e-5)
    assert int(got.num_tokens) == int((labels[:, 1:] != -100).sum())
    for name, g, w in zip(["block to_q", "lm_head", "embeddings"], got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_skip_logits_returns_the_transformers_loss_and_no_logits():
    """`model(..., labels=..., skip_logits=True)` is a drop-in for `model(..., labels=...).loss`: same mean, "sum"
    gives mean x scored tokens, transformers' `num_items_in_batch` divides the sum; no logits come back."""
    model, _ = infimm_hd.build_model("tiny")
    randomize_gates(model)
    batch = next(iter(StandInBatches(model.config.image_token_id, batch_size=2, seq_len=16, seed=5)))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grids") if k in batch}
    labels = batch["labels"]
    scored = int((labels[:, 1:] != -100).sum())
    with torch.no_grad():
        reference = model(**inputs, labels=labels)
        mean = model(**inputs, labels=labels, skip_logits=True)
        total = model(**inputs, labels=labels, skip_logits=True, loss_reduction="sum")
        per_item = model(**inputs, labels=labels, skip_logits=True, num_items_in_batch=7)
    assert mean.logits is None and reference.logits is not None
    torch.testing.assert_close(mean.loss, reference.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total.loss, reference.loss * scored, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_item.loss, total.loss / 7, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="pass labels"):
        model(**inputs, skip_logits=True)
    with pytest.raises(ValueError, match="loss_reduction"):
        model(**inputs, labels=labels, loss_reduction="max")
