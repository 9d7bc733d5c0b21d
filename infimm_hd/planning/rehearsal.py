"""Sharding rehearsal: the exact FSDP2 wrapping of a training run, applied at paper shape without a GPU.

The model is built on the meta device (no memory), a stage's trainable set is applied, and accelerate's own
`fsdp2_prepare_model` (what `Accelerator.prepare` calls in the loop) wraps it with the plugin of an accelerate
config file (`launch/accelerate/fsdp2_8gpu.yaml` for the shipped runs) under torch's *fake* process group
(`torch.testing._internal.distributed.fake_pg`: collectives that move nothing), as rank r of W. What comes out is
the real sharding: every parameter a DTensor sharded on dim 0, each FSDP unit with its parameters and its
reshard-after-forward flag. From it:

* each rank's shard sizes (rank r holds rows [r*c, (r+1)*c) of a dim-0 of n rows, c = ceil(n / W): torch.chunk,
  which FSDP2 uses; the local shard of the rehearsed rank is read off the DTensor and checked against that rule);
* the bytes each rank moves per micro-batch: an all-gather of every unit for its forward (in the compute dtype) and
  again for its backward when the unit reshards after forward and a gradient passes through it, and a
  reduce-scatter of the gradients of the trainable parameters (float32) per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..training.recipe import STAGES
from ..training.trainable import apply_trainable
from .probe import llm_frozen

COMPUTE_BYTES = {"bf16": 2, "fp32": 4}


@contextmanager
def fake_process_group(rank: int, world_size: int) -> Iterator[None]:
    """A process group whose collectives do nothing, for sharding without peers."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("a process group is already initialised; rehearse in a fresh process")
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


# The wrapping keys of the shipped FSDP2 configs (launch/accelerate/fsdp2_8gpu.yaml and the CPU test config, whose
# fsdp_config blocks are the same; tests/test_launch_files.py checks them against this): what the planner rehearses
# when it is given no config file, so an installed package plans without the repository's launch/ folder.
LOOP_FSDP2_CONFIG = {
    "fsdp_version": 2,
    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "fsdp_transformer_layer_cls_to_wrap": "CrossAttentionDecoderLayer,LlamaDecoderLayer",
    "fsdp_reshard_after_forward": True,
}


def fsdp_plugin(config: str | Path | Mapping[str, Any] = LOOP_FSDP2_CONFIG):
    """The FSDP plugin an accelerate config file (or its `fsdp_config` block as a mapping) gives the loop (FSDP2
    only)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    if isinstance(config, Mapping):
        block, where = dict(config), "the fsdp_config"
    else:
        from accelerate.commands.config.config_args import load_config_from_file

        block, where = load_config_from_file(str(config)).fsdp_config or {}, str(config)
    if int(block.get("fsdp_version", 1)) != 2:
        raise ValueError(f"{where}: the rehearsal covers FSDP2 configs (fsdp_version: 2)")
    names = block.get("fsdp_transformer_layer_cls_to_wrap")
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy=str(block.get("fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP")).lower(),
        transformer_cls_names_to_wrap=names.split(",") if isinstance(names, str) else names,
        reshard_after_forward=bool(block.get("fsdp_reshard_after_forward", True)),
    )


@dataclass
class UnitShard:
    """One FSDP unit: its name, parameter count, trainable count, and whether it reshards after forward."""

    name: str
    params: int
    trainable: int
    reshard_after_forward: bool  # the root (the vision tower's unit) and the tail (norm, LM head) stay gathered
    on_gradient_path: bool  # backward runs through it (so a resharded unit is gathered again)


@dataclass
class Rehearsal:
    world_size: int
    rank: int
    units: list[UnitShard] = field(default_factory=list)
    # parameter name -> (global rows, local rows on the rehearsed rank, elements per row, trainable)
    parameters: dict[str, tuple[int, int, int, bool]] = field(default_factory=dict)
    unsharded: list[str] = field(default_factory=list)  # parameters that are not DTensors (must stay empty)

    def shard_rows(self, rows: int, rank: int) -> int:
        chunk = math.ceil(rows / self.world_size)
        return max(0, min(rows, (rank + 1) * chunk) - rank * chunk)

    def rank_elements(self, rank: int) -> tuple[int, int]:
        """(parameter elements, trainable elements) held by `rank`."""
        total = trainable = 0
        for rows, _, per_row, trains in self.parameters.values():
            n = self.shard_rows(rows, rank) * per_row
            total += n
            trainable += n if trains else 0
        return total, trainable

    def communication(self, compute: str = "bf16", accumulation: int = 1) -> dict[str, float]:
        """Bytes one rank sends per optimizer step (ring collectives: (W-1)/W of each unsharded buffer)."""
        return unit_traffic(self.units, self.world_size, COMPUTE_BYTES[compute], accumulation)


def unit_traffic(units: list[UnitShard], group: int, compute_bytes: int, accumulation: int) -> dict[str, float]:
    """Bytes one rank of a `group`-rank shard group sends per optimizer step: every unit all-gathered for each
    micro-batch's forward, again for its backward when it reshards after forward and a gradient passes through it,
    and the trainable parameters' float32 gradients reduce-scattered once (the loop syncs on the last micro-batch
    only). Ring collectives: (group-1)/group of each unsharded buffer."""
    ring = (group - 1) / group
    forward = sum(u.params for u in units) * compute_bytes
    backward = sum(u.params for u in units if u.reshard_after_forward and u.on_gradient_path) * compute_bytes
    grads = sum(u.trainable for u in units) * 4
    return {
        "all-gather (forward)": ring * forward * accumulation,
        "all-gather (backward)": ring * backward * accumulation,
        "reduce-scatter (gradients)": ring * grads,
    }


def wrap_like_the_loop(
    model: nn.Module, stage: int, config_file: str | Path | Mapping[str, Any] = LOOP_FSDP2_CONFIG, rank: int = 0
) -> nn.Module:
    """Stage `stage`'s trainable set, then accelerate's `fsdp2_prepare_model` with the config's plugin (as
    `Accelerator.prepare` does in the loop). Needs an initialised process group (see `fake_process_group`)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    apply_trainable(model, STAGES[stage].trainable)
    accelerator = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=fsdp_plugin(config_file)), mixed_precision="bf16",
        is_main_process=rank == 0, device=torch.device("cpu"), torch_device_mesh=None,
    )  # fmt: skip
    return fsdp2_prepare_model(accelerator, model)


def rehearse(
    model: nn.Module,
    stage: int,
    world_size: int,
    config_file: str | Path | Mapping[str, Any] = LOOP_FSDP2_CONFIG,
    rank: int = 0,
) -> Rehearsal:
    """Wrap `model` (meta device) as `rank` of `world_size` under a fake process group and read the sharding."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    apply_trainable(model, STAGES[stage].trainable)
    trains = {name: p.requires_grad for name, p in model.named_parameters()}
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    result = Rehearsal(world_size, rank)
    with fake_process_group(rank, world_size):
        wrap_like_the_loop(model, stage, config_file, rank)
        for name, param in model.named_parameters():
            shape = shapes[name]
            rows, per_row = (shape[0], math.prod(shape[1:])) if shape else (1, 1)
            if not isinstance(param, DTensor):
                result.unsharded.append(name)
                continue
            result.parameters[name] = (rows, int(param.to_local().shape[0]) if shape else 1, per_row, trains[name])
        first_block = min(model.config.cross_attention_layers)
        llm_trains = not llm_frozen(STAGES[stage].trainable)  # the probe's rule for who gets a gradient
        for module_name, module in model.named_modules():
            if not isinstance(module, FSDPModule):
                continue
            group = module._get_fsdp_state()._fsdp_param_group
            if group is None:
                continue
            params = list(group.fsdp_params)
            trainable = sum(math.prod(fp._orig_size) for fp in params if fp.sharded_param.requires_grad)
            layer = _layer_index(module_name)
            path = trainable > 0 or (layer is not None and (layer >= first_block or llm_trains))
            # FSDP2 resolves the root's reshard_after_forward=None to False at its first forward.
            reshard = module_name != "" and group.post_forward_mesh_info is not None
            total = sum(math.prod(fp._orig_size) for fp in params)
            result.units.append(UnitShard(module_name, total, trainable, reshard, path))
    return result


def _layer_index(name: str) -> int | None:
    """The decoder-layer index in a unit's name (`...layers.7...`), or None."""
    parts = name.split(".")
    for before, after in zip(parts, parts[1:], strict=False):
        if before == "layers" and after.isdigit():
            return int(after)
    return None


def report(preset: str, stage: int, world_sizes: tuple[int, ...], config_file: str | Path) -> str:
    """Markdown: per world size, the units, each rank's shard (largest and smallest), and the step's traffic."""
    from ..presets import build_model

    lines = [
        f"{preset} stage {stage}, FSDP2 units from {config_file} (bf16 gathers, fp32 gradients, one micro-batch):",
        "",
        "| GPUs | units | params per rank (max / min) | trainable per rank | all-gather fwd + bwd | reduce-scatter |",
        "|---|---|---|---|---|---|",
    ]
    for world in world_sizes:
        model, _ = build_model(preset, device="meta")
        r = rehearse(model, stage, world, config_file)
        if r.unsharded:
            raise RuntimeError(f"parameters left unsharded: {r.unsharded[:5]}")
        held = [r.rank_elements(rank) for rank in range(world)]
        comm = r.communication()
        gib = 2**30
        most, least = max(h[0] for h in held) / 1e6, min(h[0] for h in held) / 1e6
        lines.append(
            f"| {world} | {len(r.units)} | {most:.1f} M / {least:.1f} M | {max(h[1] for h in held) / 1e6:.1f} M | "
            f"{(comm['all-gather (forward)'] + comm['all-gather (backward)']) / gib:.1f} GiB | "
            f"{comm['reduce-scatter (gradients)'] / gib:.1f} GiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m infimm_hd.planning.rehearsal", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper-13b")
    parser.add_argument("--stage", type=int, default=4, choices=sorted(STAGES))
    parser.add_argument("--world-sizes", default="8,64,256")
    parser.add_argument("--config", default="launch/accelerate/fsdp2_8gpu.yaml", help="an accelerate FSDP2 config")
    args = parser.parse_args(argv)
    sizes = tuple(int(x) for x in args.world_sizes.split(","))
    print(report(args.preset, args.stage, sizes, args.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
