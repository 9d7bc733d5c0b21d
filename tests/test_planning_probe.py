"""The planner's measurements: live-tensor bytes, and unit shape laws fitted on a reduced-depth copy that predict the
full model at shapes the probe never ran.

Expectations are independent of the laws: `LiveTensorMemory` against tensors of known sizes, and the laws against
the full tiny model measured by the same step at other shapes (FlopCounterMode's count, bytes held at the end of
forward).
"""

from __future__ import annotations

import pytest
import torch

from infimm_hd.planning.live_memory import LiveTensorMemory, model_state_tensors
from infimm_hd.planning.probe import (
    REPEATED,
    UNIT_KINDS,
    ProbeSample,
    build_probe_model,
    measure_step,
    probe_batch,
    probe_unit_laws,
    reduced_config,
    unit_modules,
)
from infimm_hd.presets import build_model
from infimm_hd.training.loop import enable_gradient_checkpointing
from infimm_hd.training.recipe import STAGES
from infimm_hd.training.trainable import apply_trainable

MIB = 2**20


def test_live_memory_counts_each_storage_once_and_sees_frees():
    existing = torch.zeros(256, dtype=torch.float32)  # 1 KiB before the block
    with LiveTensorMemory([existing, existing[:10]]) as memory:  # a view shares its storage: counted once
        assert memory.live_bytes == 1024
        a = torch.ones(1024, dtype=torch.float32)  # 4 KiB
        b = a.view(32, 32)  # same storage
        c = torch.empty(512, dtype=torch.bfloat16)  # 1 KiB
        assert memory.live_bytes == 1024 + 4096 + 1024
        del a, b
        assert memory.live_bytes == 1024 + 1024
        d = torch.ones(2048, dtype=torch.float32)  # 8 KiB, after the 4 KiB went
        del c, d
    assert memory.peak_bytes == 1024 + 1024 + 8192
    assert memory.live_bytes == 1024


def test_live_memory_follows_storages_resized_in_place():
    """FSDP2 frees a unit's gathered parameters with `storage.resize_(0)` while autograd keeps the tensor alive, and
    gathers them again by resizing back: counted as freed and allocated, not as alive throughout (which read every
    FSDP2 unit as gathered from its first forward to the end of the step)."""
    kept = torch.ones(1024, dtype=torch.float32)  # 4 KiB, made before the block and kept alive through it
    with LiveTensorMemory() as memory:
        saved = torch.ones(32, 32)  # 4 KiB made in the block
        saved.untyped_storage().resize_(0)  # freed, the tensor still referenced
        assert memory.live_bytes == 0
        kept.untyped_storage().resize_(0)
        kept.untyped_storage().resize_(2048)  # an untracked storage allocated by a resize: 2 KiB
        assert memory.live_bytes == 2048
        saved.untyped_storage().resize_(4096)
        assert memory.live_bytes == 2048 + 4096
        saved.resize_(2048)  # a dispatched resize of the tensor: 8 KiB
        assert memory.live_bytes == 2048 + 8192
    assert memory.peak_bytes == 2048 + 8192
    assert torch.UntypedStorage.resize_ is torch._C.StorageBase.resize_  # the wrapper is gone after the block


def test_live_memory_sees_backward_and_optimizer_state():
    layer = torch.nn.Linear(64, 64, bias=False)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    with LiveTensorMemory(model_state_tensors(layer, optimizer)) as memory:
        layer(torch.randn(8, 64)).sum().backward()
        optimizer.step()
    weight = 64 * 64 * 4
    # The weight, its gradient, AdamW's two moments (+ its step counter), all alive at the end.
    assert memory.live_bytes >= 4 * weight and memory.live_bytes < 4 * weight + 1024


def test_the_reduced_copy_keeps_the_widths_and_two_groups():
    model, _ = build_model("tiny")
    small = reduced_config(model.config)
    # tiny's last layer (7) carries a block, so the copy's does too; a frozen LLM adds an off-path plain layer.
    assert small.text_config.num_hidden_layers == 6 and small.cross_attention_layers == [2, 4, 5]
    trained = reduced_config(model.config, frozen_prefix=False)
    assert trained.text_config.num_hidden_layers == 5 and trained.cross_attention_layers == [1, 3, 4]
    assert small.text_config.hidden_size == model.config.text_config.hidden_size
    assert small.vision_config.width == model.config.vision_config.width and small.vision_config.depth == 2
    probe = build_probe_model(model.config)
    assert all(torch.isfinite(p).all() for p in probe.parameters())


def full_tiny(stage: int, checkpointing: bool):
    spec = STAGES[stage]
    model, _ = build_model("tiny")
    if spec.window_size != model.config.window_size:
        model.set_window_size(spec.window_size)
    apply_trainable(model, spec.trainable)
    model.train()
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model, unit_modules(model, spec.trainable)


def predicted(laws, units, text_tokens: int, crops: int) -> tuple[float, float]:
    counts = {k: sum(1 for v in units.values() if v == k) for k in REPEATED}
    flops = laws.flops["rest"](text_tokens, crops)
    flops += sum(counts[k] * laws.flops[k](text_tokens, crops) for k in REPEATED)
    kept = sum(counts[k] * laws.retained[k](text_tokens, crops) for k in REPEATED)
    return flops, kept + laws.retained["rest"](text_tokens, crops)


@pytest.mark.parametrize(
    ("stage", "checkpointing", "shapes"),
    [
        (1, False, [(200, 1), (333, 1)]),
        (2, False, [(250, 1)]),
        (3, True, [(200, 4), (150, 10)]),
        (3, False, [(300, 7)]),
        (4, False, [(200, 4), (400, 10)]),
    ],
)
def test_unit_laws_predict_the_full_model_at_unseen_shapes(stage, checkpointing, shapes):
    spec = STAGES[stage]
    model, units = full_tiny(stage, checkpointing)
    laws = probe_unit_laws(model.config, spec.trainable, spec.window_size, checkpointing, windows=spec.max_windows > 0)
    assert max(law.residual for law in laws.flops.values()) < 1e-6  # the laws are exact on the probe shapes
    for text_tokens, crops in shapes:
        run = measure_step(model, probe_batch(model.config, ProbeSample(text_tokens, crops), spec.window_size), units)
        counts = {k: sum(1 for v in units.values() if v == k) for k in REPEATED}
        measured_flops = sum(counts[k] * run.units.get(k).flops for k in REPEATED if k in run.units)
        measured_flops += run.units["rest"].flops
        flops, kept = predicted(laws, units, text_tokens, crops)
        assert flops == pytest.approx(measured_flops, rel=1e-6)  # FLOPs: exact, depth and shape extrapolated
        assert kept == pytest.approx(run.activation_bytes, rel=0.04)  # activations kept for backward: within 4%


def test_frozen_prefix_layers_keep_nothing_and_cost_forward_only():
    spec = STAGES[1]  # cross-attention only: layers before the first block see no gradient
    model, _ = build_model("tiny")
    laws = probe_unit_laws(model.config, spec.trainable, spec.window_size, windows=False)
    off, on = laws.retained["llm_layer_off_path"](300, 1), laws.retained["llm_layer"](300, 1)
    hidden_state = 300 * model.config.text_config.hidden_size * 4
    assert off <= 2 * hidden_state < on / 2  # nothing kept for backward: a hidden state or two outlive the layer
    # FLOPs: an off-path layer runs forward only; an on-path frozen one adds the input gradient: 1x forward for
    # matmuls, 2.5x for attention (torch's SDPA backward count), so between 2x and 3.5x in all.
    ratio = laws.flops["llm_layer"](300, 1) / laws.flops["llm_layer_off_path"](300, 1)
    assert 2.0 <= ratio <= 3.5
    assert set(laws.flops) == set(UNIT_KINDS)


def test_a_checkpointed_step_is_measured_as_it_runs_without_the_probe():
    """The probe's hooks and its FLOP count must not change the memory of the step they measure: FlopCounterMode
    around a checkpointed step keeps the recomputed tensors alive (10.0 vs 2.9 MiB for this step), which once made
    the planner's checkpointed figures wrong on both sides. Reference: the same step under LiveTensorMemory alone."""
    model, units = full_tiny(4, checkpointing=True)
    batch = probe_batch(model.config, ProbeSample(300, 5), STAGES[4].window_size)
    run = measure_step(model, batch, units)
    with LiveTensorMemory(model_state_tensors(model)) as memory:
        base = memory.live_bytes
        model(**batch, skip_logits=True).loss.backward()
    model.zero_grad(set_to_none=True)
    expected = memory.peak_bytes - base  # to a few bytes: the hooks make scalars of their own
    assert run.peak_bytes - run.base_bytes == pytest.approx(expected, rel=1e-3), "the probe changed the step's peak"
    assert run.units["llm_layer"].flops > 0, "the FLOP pass counted nothing"
