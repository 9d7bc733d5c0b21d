"""The training planner against measurement on this machine: predicted vs measured peak memory, activations and
FLOPs of real training steps, for the tiny and SmolLM2-135M presets, checkpointing on and off, at shapes the
planner's probe never ran (its probe is a reduced-depth copy at 48-192 tokens and 1-3 crops).

    PYTHONPATH=. python benchmarks/bench_planner.py [--quick]

Measured: one float32 training step (forward, backward, fused AdamW step) of the full model, the second of two (so
AdamW's moments exist, as in a running job), with `LiveTensorMemory` (bytes of live tensors), and its FLOPs by
FlopCounterMode in a pass of their own.
Predicted: `plan_train` for the same preset, stage, micro-batch, tokens, crops and checkpointing on one process
(fp32, so no dtype scaling is involved). Ratios are predicted / measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import machine_line

from infimm_hd.planning.live_memory import LiveTensorMemory, model_state_tensors
from infimm_hd.planning.plan import PlanRequest, plan_train
from infimm_hd.planning.probe import ProbeSample, count_flops, probe_batch
from infimm_hd.presets import build_model
from infimm_hd.training.loop import enable_gradient_checkpointing
from infimm_hd.training.recipe import STAGES
from infimm_hd.training.trainable import apply_trainable

POINTS = [  # (preset, stage, checkpointing, micro-batch, text tokens, crops)
    ("tiny", 1, False, 2, 300, 1),
    ("tiny", 2, False, 2, 256, 1),
    ("tiny", 3, False, 2, 200, 5),
    ("tiny", 3, True, 2, 200, 5),
    ("tiny", 4, False, 2, 400, 7),
    ("tiny", 4, True, 2, 400, 7),
    ("smollm2-135m", 1, False, 2, 320, 1),
    ("smollm2-135m", 3, True, 1, 256, 5),
    ("smollm2-135m", 4, False, 2, 384, 5),
    ("smollm2-135m", 4, True, 2, 384, 5),
]
QUICK = POINTS[:6]
# (stage, checkpointing, micro-batch, text tokens, crops); the first peaks at the root unit's reduce-scatter
TWO_RANKS = [
    (2, False, 1, 12, 1),
    (2, False, 2, 256, 1),
    (3, False, 2, 200, 5),
    (4, False, 2, 400, 7),
    (4, True, 2, 400, 7),
]


def batch_of(config, samples: int, text_tokens: int, crops: int, window: int) -> dict[str, torch.Tensor]:
    one = [probe_batch(config, ProbeSample(text_tokens, crops), window) for _ in range(samples)]
    out = {k: torch.cat([b[k] for b in one]) for k in one[0] if k != "image_sample_index"}
    out["image_sample_index"] = torch.arange(samples)
    return out


def stage_model(preset: str, stage: int, checkpointing: bool):
    """The preset at the stage's window, with its trainable set, in training mode (checkpointing as the loop sets
    it)."""
    spec = STAGES[stage]
    model, _ = build_model(preset)
    model.set_window_size(spec.window_size)
    apply_trainable(model, spec.trainable)
    model.train()
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model


def training_step(model, optimizer, batch) -> None:
    model(**batch, skip_logits=True).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(preset: str, stage: int, checkpointing: bool, micro: int, text: int, crops: int) -> dict[str, float]:
    model = stage_model(preset, stage, checkpointing)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    batch = batch_of(model.config, micro, text, crops, STAGES[stage].window_size)
    training_step(model, optimizer, batch)  # AdamW's moments exist from here on, as in a running job
    with LiveTensorMemory(model_state_tensors(model, optimizer)) as memory:
        base = memory.live_bytes
        out = model(**batch, skip_logits=True)
        activations = memory.live_bytes - base
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del out
    # FLOPs in a pass of their own: FlopCounterMode keeps checkpointed recomputations alive (probe.count_flops)
    _, flops = count_flops(model, batch)
    return {"peak": memory.peak_bytes, "activations": activations, "flops": flops}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the tiny preset only")
    args = parser.parse_args()
    print(f"# training planner vs measurement ({machine_line(torch.float32)})\n")
    print("| preset | stage | ckpt | micro-batch x T x K | peak pred / meas (MiB) | ratio | activations ratio | "
          "FLOPs ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    worst = {"peak": 0.0, "activations": 0.0, "flops": 0.0}
    started = time.perf_counter()
    for preset, stage, ckpt, micro, text, crops in QUICK if args.quick else POINTS:
        request = PlanRequest(preset=preset, stage=stage, world_size=1, strategy="fsdp2", micro_batch=micro,
                              grad_accumulation=1, text_tokens=text, crops=crops, gradient_checkpointing=ckpt,
                              dtype="fp32")  # fmt: skip
        plan = plan_train(request)
        got = measure(preset, stage, ckpt, micro, text, crops)
        ratios = {
            "peak": plan.peak_bytes / got["peak"],
            "activations": plan.memory["activations (micro-batch)"] / got["activations"],
            "flops": plan.hardware_flops / got["flops"],
        }
        for key, ratio in ratios.items():
            worst[key] = max(worst[key], abs(ratio - 1))
        print(f"| {preset} | {stage} | {'on' if ckpt else 'off'} | {micro} x {text} x {crops} | "
              f"{plan.peak_bytes / 2**20:.1f} / {got['peak'] / 2**20:.1f} | {ratios['peak']:.3f} | "
              f"{ratios['activations']:.3f} | {ratios['flops']:.6f} |", flush=True)  # fmt: skip
    print(f"\nlargest miss: peak {worst['peak']:.1%}, activations {worst['activations']:.1%}, FLOPs "
          f"{worst['flops']:.2e} ({time.perf_counter() - started:.0f} s, probes included)")  # fmt: skip
    two_ranks(worst)


def two_ranks(worst: dict[str, float]) -> None:
    """FSDP2 on 2 gloo processes (tests/helpers/accelerate_cpu_fsdp.yaml's units): each rank's measured peak vs the
    plan for world size 2."""
    print(
        "\n| tiny, FSDP2, 2 processes | stage | ckpt | micro-batch x T x K | peak pred / meas rank 0, 1 (MiB) | ratio |"
    )
    print("|---|---|---|---|---|---|")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=f"{here.parent}{os.pathsep}{here}", OMP_NUM_THREADS="1")
    miss = 0.0
    for stage, ckpt, micro, text, crops in TWO_RANKS:
        request = PlanRequest(preset="tiny", stage=stage, world_size=2, strategy="fsdp2", micro_batch=micro,
                              grad_accumulation=1, text_tokens=text, crops=crops, gradient_checkpointing=ckpt,
                              dtype="fp32")  # fmt: skip
        plan = plan_train(request)
        settings = [str(x) for x in (stage, micro, text, crops, int(ckpt))]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                   str(here / "planner_ranks.py"), *settings]  # fmt: skip
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            print(f"| stage {stage} failed: {run.stderr[-400:]!r} |")
            continue
        peaks = json.loads(run.stdout.strip().splitlines()[-1])["peaks"]
        ratio = plan.peak_bytes / max(peaks)
        miss = max(miss, abs(ratio - 1))
        print(f"| | {stage} | {'on' if ckpt else 'off'} | {micro} x {text} x {crops} | {plan.peak_bytes / 2**20:.1f} / "
              f"{peaks[0] / 2**20:.1f}, {peaks[1] / 2**20:.1f} | {ratio:.3f} |", flush=True)  # fmt: skip
    worst["peak (2 processes)"] = miss
    print(f"\nlargest miss on 2 processes: peak {miss:.1%}")


if __name__ == "__main__":
    main()
