"""Sharding rehearsal: the shipped FSDP2 config's wrapping applied by accelerate under a fake process group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from infimm_hd.planning.probe import ProbeSample, probe_batch
from infimm_hd.planning.rehearsal import fake_process_group, rehearse, report, wrap_like_the_loop
from infimm_hd.presets import build_model
from infimm_hd.training.optim import build_optimizer

CONFIG = Path(__file__).resolve().parents[1] / "launch" / "accelerate" / "fsdp2_8gpu.yaml"


def test_every_parameter_is_sharded_exactly_once_across_the_ranks():
    world = 4
    rows_by_rank = []
    for rank in range(world):
        model, _ = build_model("tiny", device="meta")
        r = rehearse(model, 4, world, CONFIG, rank=rank)
        assert r.unsharded == []
        assert all(local == r.shard_rows(rows, rank) for rows, local, _, _ in r.parameters.values())
        rows_by_rank.append({name: local for name, (_, local, _, _) in r.parameters.items()})
    for name, (rows, _, _, _) in r.parameters.items():
        assert sum(ranks[name] for ranks in rows_by_rank) == rows, name


@pytest.mark.parametrize("world", [8, 64, 256])
def test_paper_13b_shards_at_cluster_sizes(world):
    model, _ = build_model("paper-13b", device="meta")
    total = sum(p.numel() for p in model.parameters())
    r = rehearse(model, 4, world, CONFIG, rank=world - 1)
    assert r.unsharded == [] and total == 17_996_741_888
    assert all(local == r.shard_rows(rows, world - 1) for rows, local, _, _ in r.parameters.values())
    assert sum(r.rank_elements(rank)[0] for rank in range(world)) == total
    # The units the config names: 40 decoder layers, 10 cross-attention wrappers, embeddings, the tail, the root.
    names = [u.name for u in r.units]
    assert sum(n.endswith("decoder_layer") or n.split(".")[-1].isdigit() for n in names) == 50
    root = next(u for u in r.units if u.name == "")
    assert root.params >= sum(p.numel() for p in model.vision_tower.parameters())  # the tower stays in the root
    assert not root.reshard_after_forward
    comm = r.communication()
    assert comm["all-gather (forward)"] == pytest.approx((world - 1) / world * total * 2)  # bf16, every unit once


def test_communication_counts_each_unit_once_forward_and_resharded_ones_again():
    model, _ = build_model("paper-13b", device="meta")
    r = rehearse(model, 1, 8, CONFIG)  # stage 1: only cross-attention trains
    ring = 7 / 8
    trainable = sum(u.trainable for u in r.units)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if ".cross_attn." in n)
    comm = r.communication()
    assert comm["reduce-scatter (gradients)"] == pytest.approx(ring * trainable * 4)
    again = sum(u.params for u in r.units if u.reshard_after_forward and u.on_gradient_path)
    assert comm["all-gather (backward)"] == pytest.approx(ring * again * 2)
    # Layers 0-2 sit before the first block: no gradient passes, so they are not gathered again in backward.
    early = [u for u in r.units if u.name.endswith(("layers.0", "layers.1", "layers.2"))]
    assert early and not any(u.on_gradient_path for u in early)


def test_frozen_modules_get_no_gradient_and_no_optimizer_state():
    model, _ = build_model("tiny")  # real CPU tensors: the fake group's collectives return unfilled buffers
    with fake_process_group(0, 2):
        wrap_like_the_loop(model, 1, CONFIG)
        batch = probe_batch(model.config, ProbeSample(32, 1), model.config.window_size)
        model.train()
        model(**batch, skip_logits=True).loss.backward()
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        optimizer.step()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, param in model.named_parameters():
        trains = ".cross_attn." in name
        assert param.requires_grad == trains, name
        assert (param.grad is not None) == trains, name
        assert (id(param) in in_optimizer) == trains, name
        assert bool(optimizer.state.get(param)) == trains, name
    assert not dist.is_initialized()


def test_report_lists_each_world_size():
    text = report("tiny", 4, (2, 4), CONFIG)
    assert text.count("\n| 2 |") == 1 and text.count("\n| 4 |") == 1
