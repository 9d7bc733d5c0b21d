"""`plan_train`: the sharding arithmetic, the FLOPs against a measured step, and the errors of impossible plans."""

from __future__ import annotations

import pytest
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from infimm_hd.modeling import decoder_layers
from infimm_hd.planning import command, hardware
from infimm_hd.planning.plan import PlanError, PlanRequest, model_facts, nearest_fit, plan_train
from infimm_hd.planning.probe import REPEATED, ProbeSample, measure_step, probe_batch, unit_modules
from infimm_hd.presets import build_model
from infimm_hd.training.recipe import STAGES
from infimm_hd.training.trainable import apply_trainable


@pytest.fixture(autouse=True)
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFIMM_HD_CACHE", str(tmp_path / "cache"))


def tiny(stage: int = 2, **kwargs) -> PlanRequest:
    return PlanRequest(preset="tiny", stage=stage, world_size=kwargs.pop("world_size", 2), **kwargs)


def test_state_memory_follows_the_sharding_table():
    facts = model_facts("tiny", STAGES[4].trainable)
    total, trainable = facts.total_params * 4.0, facts.trainable_params * 4.0
    w = 4
    plans = {s: plan_train(tiny(4, world_size=w, strategy=s, grad_accumulation=1)) for s in ("ddp", "zero2", "fsdp2")}
    ddp, zero2, fsdp = (plans[s].memory for s in ("ddp", "zero2", "fsdp2"))
    assert ddp["parameters (fp32)"] == total and ddp["DDP gradient buckets"] == trainable
    assert ddp["optimizer states (AdamW, fp32)"] == 2 * trainable
    assert zero2["parameters (fp32)"] == total and zero2["gradients (fp32)"] == trainable / w
    assert zero2["optimizer states (AdamW, fp32)"] == 2 * trainable / w
    assert fsdp["parameters (fp32)"] == total / w and fsdp["optimizer states (AdamW, fp32)"] == 2 * trainable / w
    # Activations do not depend on the sharding; the peak is the sum of the components.
    assert ddp["activations (micro-batch)"] == fsdp["activations (micro-batch)"]
    for plan in plans.values():
        assert plan.peak_bytes == pytest.approx(sum(plan.memory.values()))


def test_fsdp2_counts_the_units_the_loop_wraps():
    """Expectations from the model's own modules, not from the rehearsal the planner reads: the root unit holds
    everything outside the decoder layers and the input embedding (the vision tower among it) and stays gathered
    with the LM head; the largest resharding unit is a decoder layer; in stage 4 every decoder layer trains, so one
    unit's reduce-scatter is its float32 gradients twice (unsharded + FSDP2's flat copy)."""
    model, _ = build_model("tiny")
    total = sum(p.numel() for p in model.parameters())
    in_layers = sum(p.numel() for layer in decoder_layers(model.language_model) for p in layer.parameters())
    embedding = model.language_model.get_input_embeddings().weight.numel()
    layer = max(sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, LlamaDecoderLayer))
    memory = plan_train(tiny(4, world_size=4, grad_accumulation=1)).memory
    assert memory["gathered root unit (vision tower) and LM head"] == (total - in_layers - embedding) * 2  # bf16
    assert memory["gathered layers (current + prefetch)"] == 2 * layer * 2
    assert memory["reduce-scatter of one unit (fp32)"] == 2 * layer * 4


def test_a_stage_training_the_tower_peaks_at_the_root_reduce_scatter():
    """FSDP2 reduces the root unit (the vision tower) after backward: with little activation memory the peak is the
    sharded state plus the tower's whole float32 gradients and their flat copy (measured on 2 processes:
    benchmarks/bench_planner.py, first FSDP2 row)."""
    model, _ = build_model("tiny")
    apply_trainable(model, STAGES[2].trainable)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tower = sum(p.numel() for p in model.vision_tower.parameters() if p.requires_grad)
    w = 2
    plan = plan_train(tiny(2, world_size=w, micro_batch=1, text_tokens=12, crops=1, grad_accumulation=1))
    assert "root unit's reduce-scatter (end of backward, above the rest)" in plan.memory
    assert plan.peak_bytes == pytest.approx(total * 4 / w + trainable * (8 + 4) / w + 2 * tower * 4)


def test_fsdp2_with_accumulation_holds_whole_gradients():
    facts = model_facts("tiny", STAGES[4].trainable)
    accumulated = plan_train(tiny(4, world_size=2, grad_accumulation=2, global_batch=8))
    synced = plan_train(tiny(4, world_size=2, grad_accumulation=1, global_batch=8))
    assert accumulated.memory["gradients (fp32)"] == facts.trainable_params * 4.0
    assert synced.memory["gradients (fp32)"] == facts.trainable_params * 4.0 / 2


def test_model_flops_equal_a_measured_step_times_the_samples():
    stage, text, crops = 3, 160, 5
    request = tiny(stage, world_size=1, micro_batch=2, grad_accumulation=3, text_tokens=text, crops=crops,
                   gradient_checkpointing=False)  # fmt: skip
    plan = plan_train(request)
    model, _ = build_model("tiny")
    spec = STAGES[stage]
    model.set_window_size(spec.window_size)
    apply_trainable(model, spec.trainable)
    model.train()
    units = unit_modules(model, spec.trainable)
    run = measure_step(model, probe_batch(model.config, ProbeSample(text, crops), spec.window_size), units)
    counts = {k: sum(1 for v in units.values() if v == k) for k in REPEATED}
    per_sample = run.cost("rest").flops + sum(run.cost(k).flops * counts[k] for k in REPEATED)
    assert plan.model_flops == pytest.approx(per_sample * 2 * 3, rel=1e-6)
    assert plan.step_seconds == pytest.approx(plan.model_flops / (989.4e12 * 0.4))
    assert plan.tokens_per_second == pytest.approx(plan.global_batch * text / plan.step_seconds)


def test_checkpointing_trades_activations_for_recomputation():
    on = plan_train(tiny(3, gradient_checkpointing=True))
    off = plan_train(tiny(3, gradient_checkpointing=False))
    assert on.memory["activations (micro-batch)"] < 0.5 * off.memory["activations (micro-batch)"]
    assert on.model_flops == pytest.approx(off.model_flops, rel=1e-9)
    assert on.hardware_flops > 1.2 * off.hardware_flops


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (tiny(2, world_size=3), "global batch 8 is not a whole number of micro-batches on 3 GPUs"),
        (tiny(2, gpu="b200"), "unknown GPU 'b200'; choose one of: h100"),
        (tiny(2, strategy="zero9"), "unknown strategy 'zero9'"),
        (tiny(2, crops=4), "stage 2 sees thumbnails only"),
        (tiny(7), "stage 7 does not exist"),
        (tiny(2, strategy="fsdp2-hybrid", world_size=12), "multiple of 8 GPUs per node"),
    ],
)
def test_impossible_plans_are_named(request_, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_train(request_)


def test_a_plan_that_does_not_fit_gets_the_nearest_that_does(monkeypatch, capsys):
    # A GPU so small that the tiny model's stage 4 fits only sharded with small micro-batches.
    request = tiny(4, world_size=2, strategy="ddp", micro_batch=4, global_batch=16, grad_accumulation=2)
    full = plan_train(request)
    small = hardware.GpuSpec("test GPU", 0.0, 100.0, 50.0, 100.0, 10.0)
    limit = 0.7 * full.peak_bytes / hardware.USABLE_FRACTION
    monkeypatch.setitem(hardware.GPUS, "test", small.__class__(**{**small.__dict__, "memory_gib": limit / 2**30}))
    request = tiny(4, world_size=2, strategy="ddp", micro_batch=4, global_batch=16, grad_accumulation=2, gpu="test")
    assert not plan_train(request).fits
    nearest = nearest_fit(request)
    assert nearest is not None and nearest.fits
    assert nearest.global_batch == 16  # the optimisation is unchanged
    changed = (nearest.request.strategy, nearest.micro_batch, nearest.gradient_checkpointing)
    assert changed != ("ddp", 4, False) and nearest.peak_bytes < plan_train(request).peak_bytes
    argv = "--preset tiny --stage 4 --world-size 2 --strategy ddp --micro-batch 4 --global-batch 16"
    status = command.main([*argv.split(), "--grad-accumulation", "2", "--gpu", "test"])
    out = capsys.readouterr().out
    assert status == 1 and "does NOT fit" in out and "nearest configuration that fits" in out


def test_the_command_reports_a_bad_batch_without_a_traceback(capsys):
    assert command.main(["--preset", "tiny", "--stage", "2", "--world-size", "3"]) == 1
    assert "error: stage 2: global batch 8 is not a whole number" in capsys.readouterr().err


def test_accumulated_micro_batches_run_on_top_of_the_step_gradients():
    """With accumulation, every micro-batch after the first runs its forward and backward with the step's
    gradients already alive. Measured: tiny stage 4 (everything but the tower trains), 2 micro-batches of one
    sample on one process under LiveTensorMemory, against the plan of the same step (fp32): within 10%, and above
    the one-micro-batch plan by the gradients' share."""
    from infimm_hd.planning.live_memory import LiveTensorMemory, model_state_tensors

    stage, text, crops = 4, 256, 3
    spec = STAGES[stage]
    model, _ = build_model("tiny")
    model.set_window_size(spec.window_size)
    apply_trainable(model, spec.trainable)
    model.train()
    batch = probe_batch(model.config, ProbeSample(text, crops), spec.window_size)
    with LiveTensorMemory(model_state_tensors(model)) as memory:
        for _ in range(2):
            model(**batch, skip_logits=True).loss.backward()
    settings = dict(world_size=1, micro_batch=1, text_tokens=text, crops=crops, gradient_checkpointing=False)
    accumulated = plan_train(tiny(stage, grad_accumulation=2, dtype="fp32", **settings))
    single = plan_train(tiny(stage, grad_accumulation=1, dtype="fp32", **settings))
    no_optimizer = accumulated.peak_bytes - accumulated.memory["optimizer states (AdamW, fp32)"]  # none measured
    assert no_optimizer == pytest.approx(memory.peak_bytes, rel=0.10)
    assert accumulated.peak_bytes > single.peak_bytes
