"""What the four stage scripts share: the stage declaration, the paper's hyperparameters, and `run_stage`.

A stage script is a `StageSpec` (what the stage is: resolution, windows, what trains, which data) plus `main(argv)`.
`run_stage` loads the previous stage's output (or builds a preset for stage 1), moves the model to the stage's
resolution, declares what trains and *checks* it, streams the stage's shards, runs the one training loop with the
chosen objective, and leaves `OUTPUT/final/` (a folder `from_pretrained` loads) and `OUTPUT/loss.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from infimm_hd.evaluation.during_training import BenchmarkDuringTraining
from infimm_hd.objectives import add_mask_token, build_objective, objective_names
from infimm_hd.presets import PRESETS
from infimm_hd.training.config import TrainConfig
from infimm_hd.training.data import LoaderConfig, StreamingLoader
from infimm_hd.training.loop import make_accelerator, train
from infimm_hd.training.plots import plot_loss
from infimm_hd.training.recipe import PAPER, SMALL, STAGES, Hyperparameters, StageSpec, hyperparameters
from infimm_hd.training.trainable import apply_trainable, check_trainable, trainable_table

# The recipe (stage specs, Table 8) lives in infimm_hd.training.recipe; re-exported for the stage scripts.
__all__ = ["PAPER", "PRESETS", "SMALL", "STAGES", "Hyperparameters", "StageSpec", "hyperparameters", "run_stage"]


def build_parser(spec: StageSpec, doc: str) -> argparse.ArgumentParser:
    """The arguments every stage takes; unset optimisation flags fall back to `hyperparameters(preset, stage)`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=PRESETS, help="model scale and default hyperparameters")
    init_help = "model folder to start from" + (
        " (default: build the preset)" if spec.number == 1 else f" (default: runs/stage{spec.number - 1}/final)"
    )
    p.add_argument("--init", type=Path, default=None, help=init_help)
    p.add_argument("--data", type=Path, default=Path("runs/data"), help="data_prep output root (holds <task>/ shards)")
    p.add_argument("--shards", nargs="+", default=None, help="explicit shard paths/globs (instead of --data)")
    p.add_argument("--output", type=Path, default=Path(f"runs/stage{spec.number}"))
    p.add_argument("--objective", default="sft", choices=objective_names())
    p.add_argument("--objective-option", action="append", default=[], metavar="KEY=VALUE", help="objective setting")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="micro-batch per process (default: global batch / accum / ranks)")
    p.add_argument("--grad-accumulation", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--min-learning-rate", type=float)
    p.add_argument(
        "--lr-scale",
        action="append",
        default=[],
        metavar="GROUP=FACTOR",
        help="LR multiplier for one parameter group (vision_tower, cross_attention, language_model, embeddings), "
        "e.g. vision_tower=0.01; repeatable",
    )
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mixed-precision",
        default="auto",
        choices=["auto", "bf16", "no"],
        help="auto (default): bf16 where the GPU or CPU multiplies it natively, else float32",
    )
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--resume", default="auto", help="'auto' (latest checkpoint in --output), 'none', or a folder")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact resume)")
    p.add_argument("--full-save", action="store_true", help="write every weight in final/, not only trained ones")
    e = p.add_argument_group("evaluation during training (scores logged beside the loss)")
    e.add_argument("--eval-benchmark", default=None, help="a benchmark name (infimm-hd eval's --benchmark)")
    e.add_argument("--eval-data", default=None, help="its held-out files, as published")
    e.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (and at the last step)")
    e.add_argument("--eval-limit", type=int, default=64, help="held-out samples per evaluation")
    return p


def periodic_eval(args: argparse.Namespace, processor: Any) -> BenchmarkDuringTraining | None:
    """The `--eval-*` flags -> the loop's periodic evaluation (None without `--eval-benchmark`)."""
    if args.eval_benchmark is None:
        return None
    if args.eval_data is None:
        raise ValueError("--eval-benchmark needs --eval-data (the benchmark's held-out files)")
    return BenchmarkDuringTraining(
        args.eval_benchmark, args.eval_data, processor, args.output, every=args.eval_every, limit=args.eval_limit
    )


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`["p=0.4", "replace=random"]` -> `{"p": 0.4, "replace": "random"}` (values parsed as JSON when they are)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"objective options are KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def load_start(spec: StageSpec, args: argparse.Namespace):
    """(model, processor) this stage starts from: the previous stage's folder, or the preset for stage 1."""
    from infimm_hd import InfiMMHDForConditionalGeneration, InfiMMHDProcessor, build_model

    init = args.init
    if init is None and spec.number > 1:
        init = Path(f"runs/stage{spec.number - 1}/final")
    if init is None:
        if args.preset == "paper-13b":
            raise ValueError(
                "paper-13b has no offline weights: assemble EVA02-CLIP-E + Vicuna-13B with infimm_hd.from_components, "
                "save_pretrained it, and pass that folder as --init"
            )
        return build_model(args.preset, seed=args.seed)
    if not Path(init).is_dir():
        raise FileNotFoundError(f"--init {init} is not a folder; run stage {spec.number - 1} first or pass --init")
    model = InfiMMHDForConditionalGeneration.from_pretrained(init)
    return model, InfiMMHDProcessor.from_pretrained(init)


def shard_patterns(spec: StageSpec, args: argparse.Namespace) -> list[str]:
    if args.shards:
        return list(args.shards)
    return [str(args.data / name / "train-*.tar") for name in spec.data]


def train_config(spec: StageSpec, args: argparse.Namespace, hp: Hyperparameters) -> TrainConfig:
    def pick(name: str, default: Any) -> Any:
        value = getattr(args, name)
        return default if value is None else value

    return TrainConfig(
        output_dir=args.output,
        max_steps=pick("max_steps", hp.max_steps),
        learning_rate=pick("learning_rate", hp.learning_rate),
        min_learning_rate=pick("min_learning_rate", min(hp.min_learning_rate, pick("learning_rate", hp.learning_rate))),
        lr_scales={k: float(v) for k, v in parse_options(args.lr_scale).items()},
        warmup_steps=min(pick("warmup_steps", hp.warmup_steps), pick("max_steps", hp.max_steps)),
        betas=hp.betas,
        eps=hp.eps,
        grad_accumulation=pick("grad_accumulation", hp.grad_accumulation),
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=pick("gradient_checkpointing", spec.gradient_checkpointing),
        save_every=args.save_every,
        keep_last=args.keep_last,
        log_every=args.log_every,
        seed=args.seed,
        resume=None if args.resume == "none" else args.resume,
        final_trained_only=not args.full_save,
        deterministic=args.deterministic,
    )


def prepare_model(spec: StageSpec, model, processor) -> None:
    """Move the model and processor to the stage's resolution, then declare what trains."""
    if model.config.window_size != spec.window_size:
        model.set_window_size(spec.window_size)  # resamples the ViT position embedding (224 <-> 448)
    processor.image_processor.window_size = spec.window_size
    apply_trainable(model, spec.trainable)


def run_stage(spec: StageSpec, argv: list[str] | None, doc: str) -> Path:
    """Parse `argv`, train the stage, write `OUTPUT/final` and `OUTPUT/loss.png`; returns the final folder."""
    args = build_parser(spec, doc).parse_args(argv)
    hp = hyperparameters(args.preset, spec.number)
    config = train_config(spec, args, hp)
    options = parse_options(args.objective_option)
    accelerator = make_accelerator(config)

    model, processor = load_start(spec, args)
    if args.objective == "masked-thought" and options.get("replacement") == "mask":
        add_mask_token(model, processor.tokenizer)  # a new row, before the trainable set is declared
    prepare_model(spec, model, processor)
    run = {"max_steps": config.max_steps, "tokenizer": processor.tokenizer}
    objective = build_objective(args.objective, run=run, **options)
    print(f"stage {spec.number} ({spec.name}): declared {spec.trainable}\n{trainable_table(model)}", flush=True)
    check_trainable(model, spec.trainable)  # fails the run if the model trains anything but the declaration

    world = accelerator.num_processes
    micro = args.batch_size or hp.global_batch // (config.grad_accumulation * world)
    if micro < 1:
        raise ValueError(f"global batch {hp.global_batch} is smaller than grad accumulation x {world} processes")
    loader_config = LoaderConfig(
        shards=shard_patterns(spec, args),
        batch_size=micro,
        max_windows=spec.max_windows,
        max_length=args.max_length or hp.max_length,
        seed=args.seed,
        num_workers=args.num_workers,
    )
    batches = StreamingLoader(loader_config, processor, accelerator.process_index, world)
    result = train(
        model,
        batches,
        objective,
        config,
        accelerator=accelerator,
        processor=processor,
        extra_config={"stage": spec, "hyperparameters": hp, "loader": loader_config, "argv": vars(args)},
        periodic_eval=periodic_eval(args, processor),
    )
    if accelerator.is_main_process:
        plot_loss(args.output, title=f"stage {spec.number}: {spec.name} ({args.preset})")
    return result.final_dir


def spec_dict(spec: StageSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)
