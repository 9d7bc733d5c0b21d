"""`infimm-hd plan-train`: a stage's per-GPU memory, FLOPs, step time and communication, before renting a cluster.

    infimm-hd plan-train --preset paper-13b --stage 4 --world-size 8 --strategy fsdp2 --gpu h100
    infimm-hd plan-train --preset paper-13b --all-stages --world-size 8          # one table row per stage
    infimm-hd plan-train --preset tiny --stage 3 --micro-batch 2 --json

The first plan of a preset and stage measures its unit shape laws on this machine (seconds for the small presets,
minutes for paper-13b at full width; see `infimm_hd.planning.probe`). An impossible plan (does not fit, a batch the
world size does not divide, an unknown GPU) is a message with the nearest configuration that fits, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace

from .hardware import GIB, GPUS, USABLE_FRACTION
from .plan import PRESETS, STRATEGIES, Plan, PlanError, PlanRequest, nearest_fit, plan_train


def _size(value: float, unit: float) -> str:
    return f"{value / unit:.2f}"


def describe(plan: Plan) -> str:
    """The plan as Markdown: its settings, the memory table, FLOPs, time and communication."""
    r = plan.request
    lines = [
        f"{r.preset} stage {r.stage} on {r.world_size} x {plan.gpu.name}, {r.strategy}, {r.dtype}: micro-batch "
        f"{plan.micro_batch} x accumulation {plan.grad_accumulation} x {r.world_size} GPUs = global batch "
        f"{plan.global_batch}; {plan.text_tokens} text tokens, {plan.crops} crops per image, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}",
        "",
    ]
    unit, label = (GIB, "GiB") if plan.peak_bytes >= GIB else (2**20, "MiB")
    lines += [f"| per GPU | {label} |", "|---|---|"]
    lines += [f"| {name} | {_size(value, unit)} |" for name, value in plan.memory.items()]
    lines += [f"| **peak** | **{_size(plan.peak_bytes, unit)}** |"]
    lines += [f"| (of which {name}) | {_size(max(value, 0.0), unit)} |" for name, value in plan.shares.items()]
    limit = USABLE_FRACTION * plan.gpu.memory_gib
    verdict = "fits" if plan.fits else "does NOT fit"
    lines += [
        "",
        f"{verdict}: {plan.peak_bytes / GIB:.1f} GiB of {limit:.1f} usable ({USABLE_FRACTION:.0%} of "
        f"{plan.gpu.memory_gib} GiB)",
    ]
    lines += [
        f"model FLOPs per GPU per step {plan.model_flops:.3e} (hardware, with recomputation, "
        f"{plan.hardware_flops:.3e}); at MFU {r.mfu:.0%}: {plan.step_seconds:.2f} s per step, "
        f"{plan.tokens_per_second:,.0f} text tokens/s over the cluster",
        "communication per GPU per step: "
        + (", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in plan.communication.items()) or "none")
        + f" (~{plan.communication_seconds:.2f} s at link bandwidth if not overlapped)",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infimm-hd plan-train", description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, choices=PRESETS)
    stage = p.add_mutually_exclusive_group(required=True)
    stage.add_argument("--stage", type=int, choices=(1, 2, 3, 4))
    stage.add_argument("--all-stages", action="store_true")
    p.add_argument("--world-size", type=int, default=8)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--strategy", default="fsdp2", choices=STRATEGIES)
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--grad-accumulation", type=int)
    p.add_argument("--global-batch", type=int)
    p.add_argument("--text-tokens", type=int, help="tokens per sample (default: the stage's max length)")
    p.add_argument("--crops", type=int, help="crops per image incl. the thumbnail (default: window budget + 1)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--gpu", default="h100", help=f"one of {', '.join(GPUS)}")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed for the step time")
    p.add_argument("--json", action="store_true", help="print the plan(s) as JSON")
    return p


def _as_json(plan: Plan) -> dict:
    out = asdict(plan)
    out["gpu"] = plan.gpu.name
    out["fits"] = plan.fits
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = PlanRequest(
        preset=args.preset, stage=args.stage or 1, world_size=args.world_size, strategy=args.strategy,
        micro_batch=args.micro_batch, text_tokens=args.text_tokens, crops=args.crops,
        gradient_checkpointing=args.gradient_checkpointing, dtype=args.dtype, gpu=args.gpu, mfu=args.mfu,
        gpus_per_node=args.gpus_per_node, global_batch=args.global_batch, grad_accumulation=args.grad_accumulation,
    )  # fmt: skip
    stages = (1, 2, 3, 4) if args.all_stages else (args.stage,)
    status, plans = 0, []
    for stage in stages:
        request = replace(base, stage=stage)
        try:
            plan = plan_train(request)
        except PlanError as err:
            print(f"error: stage {stage}: {err}", file=sys.stderr)
            status = 1
            continue
        plans.append(plan)
        if not args.json:
            print(describe(plan), end="\n\n")
        if not plan.fits:
            status = 1
            nearest = nearest_fit(request)
            if args.json:
                plans.append(nearest) if nearest is not None else None
            elif nearest is None:
                print("nothing fits: no micro-batch, sharding or checkpointing choice brings it under the limit\n")
            else:
                print("nearest configuration that fits:\n\n" + describe(nearest), end="\n\n")
    if args.json:
        print(json.dumps([_as_json(p) for p in plans], indent=1, default=str))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
