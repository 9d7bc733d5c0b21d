"""Streaming loader throughput versus the stage-3 training step's consumption, at 1344x1344.

What: the loader must never be what a stage waits on. Its samples/s (webdataset shards -> decoded, tiled, tokenised,
collated batches) is measured alone, with no model running, and the stage-3 step's samples/s (the `smollm2-135m`
preset, ViT + cross-attention trained, LLM frozen; see `bench_stage3_memory.py`) alone, on batches the loader made
beforehand, at the same batch size. Target: loader >= 3x the step on this machine.

Data: `data_prep.synthetic` VQA shards of 3x3-window canvases (1344x1344 PNG: 10 crops of 448 per image), written
to a temporary folder (16 images per shard, so each worker reads its own shards, as with a real dataset). Loader:
`StreamingLoader` with the stage defaults (`LoaderConfig`: 2 workers, shuffle buffer and bucket pool 256, prefetch
2, max_windows 9). Each loader run starts fresh workers, waits for the first batch (start-up: forking, filling the
shuffle buffer and bucket pool, reported apart), then times the next batches; the workers are shut down before the
step runs, so neither side steals the other's cores. Runs alternate: loader, step, step, loader, ...

    PYTHONPATH=. .venv/bin/python benchmarks/bench_loader_vs_step.py [--quick] [--batch-size 8] [--reps 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import repo_path  # noqa: F401
import torch
from bench_stage3_memory import PRESET, adamw, build_stage, train_step
from flags import setup_torch
from machine import machine_line
from timing import BackgroundLoad, interleaved, median, result_line

TARGET = 3.0


class LoadWithoutWorkers(BackgroundLoad):
    """`BackgroundLoad`, less the CPU time of this process's reaped children (the loader's workers), which it would
    otherwise count as other processes' load."""

    def __enter__(self) -> LoadWithoutWorkers:
        self.children0 = _children_seconds()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.other_cores is not None:
            workers = (_children_seconds() - self.children0) / self.wall
            self.other_cores = max(0.0, self.other_cores - workers)


def _children_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


def loader_run(loader, batches: int) -> tuple[float, float, int]:
    """Fresh workers: (start-up seconds to the first batch, seconds for the next `batches`, samples in them)."""
    start = time.perf_counter()
    stream = iter(loader)
    next(stream)
    first = time.perf_counter()
    samples = sum(next(stream)["num_samples"] for _ in range(batches))
    seconds = time.perf_counter() - first
    stream.close()  # ends the DataLoader iterator: its workers exit before anything else is timed
    gc.collect()
    return first - start, seconds, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, batches and reps (~35 s)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch on both sides (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes (stage default 2)")
    parser.add_argument("--images", type=int, default=None, help="synthetic training images (default 192)")
    parser.add_argument("--reps", type=int, default=None, help="loader runs and step runs each (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default=PRESET, help=f"model preset (default {PRESET})")
    args = parser.parse_args()
    setup_torch(args.threads)
    images = args.images or (64 if args.quick else 192)
    reps = args.reps or (1 if args.quick else 3)
    loader_batches = 4 if args.quick else 12  # timed batches per loader run
    steps = 1 if args.quick else 2  # timed steps per step run
    print(machine_line(torch.bfloat16).replace("dtype bfloat16", "bf16 autocast, fp32 weights"))

    from data_prep.synthetic import generate
    from infimm_hd.training.data import LoaderConfig, StreamingLoader

    print(f"building {args.preset} (stage 3) ...", flush=True)
    model, processor = build_stage(3, args.preset)
    optimizer = adamw(model)

    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {images} synthetic 1344x1344 VQA images to {tmp} ...", flush=True)
        start = time.perf_counter()
        generate(
            tmp,
            workers=args.workers,
            log=lambda *a: None,
            num_images_train=images,
            num_images_heldout=0,
            tasks=("vqa",),
            grids=((3, 3),),
            shard_size=16,
        )
        shards = sorted(str(p) for p in Path(tmp).glob("vqa/train-*.tar"))
        size = sum(Path(p).stat().st_size for p in shards) / len(shards) / 16 / 2**20
        print(f"  {len(shards)} shards, {size:.2f} MB per sample, {time.perf_counter() - start:.0f} s")
        config = LoaderConfig(shards=shards, batch_size=args.batch_size, num_workers=args.workers, max_windows=9)
        loader = StreamingLoader(config, processor)

        # The step's batches come from the loader itself (real tiling and lengths), loaded before any timing.
        stream = iter(loader)
        batches = [next(stream) for _ in range(2)]
        stream.close()
        print(
            f"batch: {batches[0]['num_samples']} samples, {batches[0]['pixel_values'].shape[0]} crops, text "
            f"{tuple(batches[0]['input_ids'].shape)}; loader: {args.workers} workers, {loader_batches} timed batches "
            f"per run; step: {steps} timed steps per run",
            flush=True,
        )

        startups, loads = [], []

        def run_loader() -> float:
            startup, seconds, samples = loader_run(loader, loader_batches)
            startups.append(startup)
            loads.append(samples / seconds)
            return seconds

        rates = []

        def run_step() -> float:
            total, samples = 0.0, 0
            for i in range(steps):
                batch = batches[i % len(batches)]
                total += train_step(model, optimizer, batch)
                samples += batch["num_samples"]
            rates.append(samples / total)
            return total

        print(f"{reps} interleaved runs each after 1 warm-up ...", flush=True)
        with LoadWithoutWorkers() as load:
            interleaved({"loader": run_loader, "step": run_step}, reps=reps, warmup=1)
        print(load.line())

    loader_rate, step_rate = median(loads[1:]), median(rates[1:])  # the first of each was the warm-up
    ratio = loader_rate / step_rate
    print(f"loader alone: {loader_rate:.2f} samples/s (runs {', '.join(f'{r:.2f}' for r in loads[1:])})")
    print(f"  start-up to the first batch: {median(startups[1:]):.1f} s (fresh workers, buffers filled)")
    print(f"stage-3 step alone: {step_rate:.2f} samples/s (runs {', '.join(f'{r:.2f}' for r in rates[1:])})")
    print(result_line("loader_vs_stage3_step", f"{ratio:.2f}x", f">= {TARGET:.0f}x", ratio >= TARGET))


if __name__ == "__main__":
    main()
