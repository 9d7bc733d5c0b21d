"""Masked Thought in miniature: `sft` versus `masked-thought` on the synthetic word problems, several seeds.

    python -m stages.masked_thought_miniature                       # smollm2-135m, 3 seeds (CPU, ~15 min)
    python -m stages.masked_thought_miniature --steps 4 --seeds 0 --eval-limit 8 --preset tiny   # smoke run

The paper (Chen et al. 2024, see `../shared/design/objectives.md`) fine-tunes on GSM8K with and without masking the
reasoning tokens and reports about +5 points. Here the same comparison runs at laptop scale: `data_prep.synthetic`
writes GSM8K-style word problems (2-4 steps of +, -, x; text only), stage 4's script fine-tunes the LLM (and the
cross-attention blocks, which text-only data leaves untouched) for the same steps, data order and seed with each
objective, and the held-out problems are answered greedily and scored on the final answer after the thought
("The answer is N."). The zero-shot accuracy of the starting model is reported beside them.

Writes `OUT/results.json` and `OUT/results.md` (mean and spread over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import webdataset as wds

from infimm_hd.training.data import iterate_records

OBJECTIVES = {"sft": [], "masked-thought": ["p=0.2"]}


def word_problem_shards(data: Path, train: int, heldout: int) -> dict[str, str]:
    """Generate the synthetic set's "cot" task and keep only its text-only word problems, one shard per split."""
    from data_prep.synthetic import generate

    # word problems per image: the images' own (corner-digit) CoT records are dropped below.
    generate(data / "synthetic", num_images_train=train, num_images_heldout=heldout, tasks=("cot",), workers=2)
    out = {}
    for split in ("train", "heldout"):
        path = data / f"words-{split}.tar"
        out[split] = str(path)
        if path.is_file():
            continue
        shards = sorted(str(p) for p in (data / "synthetic" / "cot").glob(f"{split}-*.tar"))
        with wds.TarWriter(str(path)) as sink:
            for item in iterate_records(shards):
                if "template" in item.record.get("meta", {}):  # a word problem (the others ask about an image)
                    sink.write({"__key__": item.key, "json": json.dumps(item.record).encode()})
    return out


def accuracy(folder: Path, heldout: str, limit: int, max_new_tokens: int) -> float:
    from infimm_hd.evaluation import evaluate_vqa
    from infimm_hd.inference.loading import load_model

    model, processor = load_model(str(folder))
    result = evaluate_vqa(
        model, processor, [heldout], max_windows=0, limit=limit, tasks=("cot",), max_new_tokens=max_new_tokens
    )
    return result.accuracy


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/masked_thought"))
    parser.add_argument("--preset", default="smollm2-135m", choices=["tiny", "smollm2-135m"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--p", type=float, default=0.2, help="masked-thought final mask rate")
    parser.add_argument("--train-problems", type=int, default=400)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    OBJECTIVES["masked-thought"] = [f"p={args.p}"]
    started = time.perf_counter()

    from infimm_hd import build_model
    from stages import stage4_instruction_tuning

    shards = word_problem_shards(args.out / "data", args.train_problems, max(args.eval_limit, 8))
    start = args.out / "start"
    if not (start / "config.json").is_file():
        model, processor = build_model(args.preset)
        model.save_pretrained(start, trained_only=args.preset != "tiny")
        processor.save_pretrained(start)
    results: dict[str, Any] = {"preset": args.preset, "arguments": {k: str(v) for k, v in vars(args).items()}}
    results["zero_shot"] = accuracy(start, shards["heldout"], args.eval_limit, args.max_new_tokens)
    print(f"zero-shot accuracy: {results['zero_shot']:.1%}", flush=True)
    runs: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    for seed in args.seeds:
        for name, options in OBJECTIVES.items():
            out = args.out / f"{name}-seed{seed}"
            argv_stage = ["--preset", args.preset, "--init", str(start), "--shards", shards["train"]]
            argv_stage += ["--output", str(out), "--max-steps", str(args.steps), "--batch-size", str(args.batch_size)]
            argv_stage += ["--learning-rate", str(args.learning_rate), "--warmup-steps", str(max(1, args.steps // 10))]
            argv_stage += ["--seed", str(seed), "--num-workers", "1", "--resume", "none", "--objective", name]
            argv_stage += ["--save-every", str(args.steps), "--log-every", str(max(1, args.steps // 4))]
            argv_stage += [x for option in options for x in ("--objective-option", option)]
            final = stage4_instruction_tuning.main(argv_stage)
            runs[name].append(accuracy(final, shards["heldout"], args.eval_limit, args.max_new_tokens))
            print(f"{name} seed {seed}: {runs[name][-1]:.1%}", flush=True)
    summary = {
        name: {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "runs": accs}
        for name, accs in runs.items()
    }
    results |= {"objectives": summary, "minutes": (time.perf_counter() - started) / 60}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| objective | held-out accuracy (mean ± std over seeds) | runs |", "|---|---|---|"]
    lines.append(f"| zero-shot ({args.preset}) | {results['zero_shot']:.1%} | 1 |")
    lines += [
        f"| {name} | {s['mean']:.1%} ± {s['std']:.1%} | {', '.join(f'{a:.0%}' for a in s['runs'])} |"
        for name, s in summary.items()
    ]
    report = "\n".join(lines) + (
        f"\n\n{args.steps} steps x batch {args.batch_size}, LR {args.learning_rate}, masked-thought p={args.p} "
        f"(random replacement, ramp over 0.66 of the steps); {args.eval_limit} held-out problems; "
        f"{results['minutes']:.1f} min."
    )
    (args.out / "results.md").write_text(report + "\n")
    print("\n" + report)
    return results


if __name__ == "__main__":
    main()
