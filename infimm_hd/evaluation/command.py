"""`infimm-hd eval`: score a model on public benchmarks, one setting or the paper's resolution ablation.

    infimm-hd eval --model ./final --benchmark textvqa --data ~/data/textvqa
    infimm-hd eval --model ./final --benchmark docvqa --data ~/data/docvqa --benchmark gqa --data ~/data/gqa \
        --resolution-ablation                       # thumbnail only / 1x1 / dynamic: the paper's Table 5 layout
    accelerate launch --num_processes 8 -m infimm_hd.evaluation.command --model ... --benchmark ... --data ...

Each (benchmark, window budget) writes `OUTPUT/<benchmark>/max_windows-<K>/` (see `runner`); a killed run resumes
when the same command is run again. The ablation also writes `OUTPUT/resolution_ablation.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .benchmark import get_benchmark
from .runner import EvalSettings, Ranks, evaluate_benchmark
from .samples import BenchmarkDataError

# The paper's Table 5 rows, as window budgets of one trained model: what the windows add at each step.
ABLATION_ROWS = (("thumbnail only (448)", 0), ("1x1 window + thumbnail", 1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infimm-hd eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a saved folder, a Hub id, or a preset (tiny, smollm2-135m)")
    p.add_argument("--benchmark", action="append", required=True, help="benchmark name (repeat for several)")
    p.add_argument("--data", action="append", required=True, help="its files, as published (one per --benchmark)")
    p.add_argument("--output", default="eval_results", help="results folder (default: eval_results)")
    p.add_argument("--max-windows", type=int, default=None, help="window budget (0 = thumbnail only)")
    p.add_argument("--resolution-ablation", action="store_true", help="thumbnail only, 1x1 and the dynamic budget")
    p.add_argument("--limit", type=int, default=None, help="first N samples of each benchmark")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's own")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    p.add_argument("--device", default=None, help="default: this process's GPU when there is one, else CPU")
    p.add_argument("--no-progress", action="store_true")
    return p


def ablation_table(rows: list[tuple[str, dict[str, dict[str, Any]]]]) -> str:
    """Markdown in the paper's Table 5 layout: one row per resolution setting, one column per benchmark."""
    names = list(dict.fromkeys(name for _, by_name in rows for name in by_name))
    first = rows[0][1]
    head = "| resolution | " + " | ".join(f"{n} ({first[n]['metric']})" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for label, by_name in rows:
        lines.append(
            f"| {label} | " + " | ".join(f"{by_name[n]['scores'][by_name[n]['metric']]:.1f}" for n in names) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(args.benchmark) != len(args.data):
        print(f"error: {len(args.benchmark)} --benchmark but {len(args.data)} --data; give one --data per benchmark")
        return 2
    try:
        benchmarks = [get_benchmark(name) for name in args.benchmark]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, data in zip(args.benchmark, args.data, strict=True):
        if not Path(data).exists() and not any(c in data for c in "*?[{"):  # shard globs are checked by loaders
            print(f"error: --data {data} (for {name}) does not exist", file=sys.stderr)
            return 2

    from ..inference.loading import load_model

    ranks = Ranks.from_environment()
    local_rank = int(os.environ.get("LOCAL_RANK", ranks.rank))
    device = args.device or (f"cuda:{local_rank % _gpus()}" if _gpus() else "cpu")
    model, processor = load_model(args.model, dtype=args.dtype, device=device)
    dynamic = model.config.max_windows_inference
    if args.resolution_ablation:
        budgets = [(label, k) for label, k in ABLATION_ROWS] + [(f"dynamic (up to {dynamic} windows)", dynamic)]
    else:
        k = dynamic if args.max_windows is None else args.max_windows
        budgets = [(f"max_windows {k}", k)]
    rows = []
    try:
        for label, k in budgets:
            by_name = {}
            for bench, data in zip(benchmarks, args.data, strict=True):
                settings = EvalSettings(args.batch_size, k, args.limit, args.max_new_tokens, not args.no_progress)
                folder = Path(args.output) / bench.name / f"max_windows-{k}"
                by_name[bench.name] = evaluate_benchmark(model, processor, bench, data, folder, settings, ranks)
            rows.append((label, by_name))
    except BenchmarkDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = ablation_table(rows)
    if ranks.rank == 0:
        print(table, end="")
        if args.resolution_ablation:
            out = Path(args.output)
            (out / "resolution_ablation.md").write_text(table)
            flat = [{"resolution": label, **{n: s["scores"][s["metric"]] for n, s in by.items()}} for label, by in rows]
            (out / "resolution_ablation.json").write_text(json.dumps(flat, indent=2) + "\n")
    return 0


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


if __name__ == "__main__":
    sys.exit(main())
