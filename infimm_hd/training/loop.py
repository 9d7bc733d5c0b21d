"""The training loop: one `train()` for every stage, on `accelerate`, resuming exactly.

What runs where is decided by `accelerate launch` and its config (one process, DDP, FSDP): this code only calls the
Accelerator, so the same stage script runs on a laptop CPU and on a GPU node.

    accelerate launch --num_processes 8 stages/<stage>.py ...             # DDP
    accelerate launch --config_file fsdp.yaml stages/<stage>.py ...      # FSDP2 (fsdp_version: 2)

Loss normalisation: the objective returns a summed loss and its token count per micro-batch; the loop backpropagates
the sums, all-reduces the step's token count over micro-batches and ranks, and scales the gradients by
world_size / tokens (DDP and FSDP average over ranks). So every label token of the optimizer step weighs the same, and
2 processes x B compute the gradient of 1 process x 2B.

Text-only batches skip the vision tower and the cross-attention. DDP copes (find_unused_parameters, set by
`make_accelerator`), FSDP2 too (`allow_rank_dependent_unused_parameters`) as long as the vision tower is not an FSDP
unit of its own (every rank must run the same units: see tests/helpers/accelerate_cpu_fsdp.yaml). A text-only batch
in a stage where only the cross-attention trains reaches nothing trainable: fine on one process, an error under
DDP/FSDP (that rank has no backward to join).

An objective may use each drawn micro-batch for several optimizer steps (`steps_per_batch`: PPO's epochs re-score a
kept rollout); the loop then draws on every n-th step only, and checkpoints must fall between cycles (checked).

Micro-batch shapes (from the batch source, see `BatchSource`):
    input_ids, attention_mask, labels (B, T); pixel_values (N, 3, S, S); image_grids (I, 2); image_sample_index (I,)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object, set_seed
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from ..objectives import Objective
from . import checkpoint as ckpt
from .config import TrainConfig, config_json, resolved_config
from .objective_module import ObjectiveModule
from .optim import build_optimizer, build_scheduler
from .progress import ProgressLogger
from .trainable import trainable_table


class PeriodicEvaluation(Protocol):
    """Scores of the model at a step (e.g. `evaluation.during_training.BenchmarkDuringTraining`), every `every`
    steps and at the last one; keys are logged as they are (`eval/<benchmark>/<metric>`)."""

    every: int

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]: ...


class BatchSource(Protocol):
    """An infinite iterator of batches with an exact, JSON-serialisable position (one per rank; it shards itself).

    A batch holds the model inputs, `labels`, and the bookkeeping `num_tokens`, `num_samples` and `stats` (a dict of
    cumulative skip counters, logged as `data/<name>` summed over ranks).
    """

    def __next__(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class StepTotals:
    """One optimizer step, summed over micro-batches and ranks."""

    loss: float  # mean loss per label token
    tokens: int
    samples: int
    metrics: dict[str, float] = field(default_factory=dict)  # objective metrics, mean over micro-batches and ranks


@dataclass
class TrainResult:
    step: int
    history: list[dict[str, float]]  # the logged steps' metrics, each with its "step"
    last_checkpoint: Path | None
    final_dir: Path | None


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator `train` builds when given none. find_unused_parameters: a text-only micro-batch leaves the
    cross-attention blocks unused, which plain DDP treats as an error. An FSDP launch on CPU processes gets FSDP
    (see `activate_fsdp_on_cpu`)."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    activate_fsdp_on_cpu(accelerator)
    return accelerator


def activate_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Make an `accelerate launch` FSDP configuration take effect on CPU processes (gloo).

    accelerate 1.15 turns `--use_fsdp` / `distributed_type: FSDP` into FSDP only on accelerators: `AcceleratorState`
    switches `distributed_type` to FSDP for MULTI_GPU / NPU / XPU / ... but not for MULTI_CPU, so on CPU the same
    launch silently runs DDP. torch's FSDP2 (`fully_shard`) works on CPU with gloo, so the FSDP plugin accelerate
    already parsed from the launch environment becomes the active one here and `accelerator.prepare` then takes its
    real FSDP2 path. Nothing changes on GPUs or without an FSDP launch.
    """
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return  # on accelerators accelerate already did it
    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* from the launcher's environment
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


@contextlib.contextmanager
def determinism(seed: int, deterministic: bool) -> Iterator[None]:
    """Seed python / numpy / torch (per rank: seed + rank) and, while the block runs, forbid nondeterministic kernels
    when `deterministic` (for bit-exact resume tests).

    Why a context: the switches are process-wide, and a notebook or test session that trains twice would otherwise
    keep the first run's deterministic kernels (and cuDNN autotuning off) for everything after it. On exit they are
    restored as they were; ``deterministic=False`` leaves a caller's own setting alone rather than switching it off.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    set_seed(seed, device_specific=True)
    if deterministic:
        if torch.cuda.is_available():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in backward: the LLM's layers and blocks (transformers' switch; `activation_...` is the v5
    name) and the vision tower's blocks. Non-reentrant, so frozen inputs need no requires_grad tricks."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    tower = getattr(model, "vision_tower", None)
    if tower is not None and hasattr(tower, "set_grad_checkpointing"):
        tower.set_grad_checkpointing(True)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


NO_GRAD_PATH = (
    "a micro-batch reached no trainable parameter (e.g. a text-only batch while only the cross-attention trains), "
    "so this rank has nothing to backpropagate while the others wait in the gradient all-reduce; under DDP/FSDP "
    "give every batch at least one image in such stages (text-only samples can share a batch with images)"
)


def accumulate_step(
    model: nn.Module,
    objective: Objective,
    batches: Iterator[dict[str, Any]],
    step: int,
    accelerator: Accelerator,
    grad_accumulation: int,
    extra: ObjectiveModule | None = None,
) -> tuple[StepTotals, dict[str, float]]:
    """Forward + backward `grad_accumulation` micro-batches, then scale the gradients to the mean over every label
    token of the step on every rank. Returns the totals and this rank's last data `stats` (empty on a replay step).

    On a replay step (`is_replay_step`) nothing is drawn from `batches`: the objective gets ``batch=None`` and scores
    again what it kept from the micro-batch of the same index at the last drawing step (PPO's epochs)."""
    sums: dict[str, float] = {}
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    tokens = samples = 0
    stats: dict[str, float] = {}
    replay = is_replay_step(objective, step)
    for i in range(grad_accumulation):
        batch = None if replay else to_device(next(batches), accelerator.device)
        # Only the last micro-batch synchronises gradients (DDP all-reduce / FSDP reduce-scatter).
        sync = contextlib.nullcontext() if i == grad_accumulation - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                out = objective.loss(model, batch, step)
            if out.loss_sum.requires_grad:
                accelerator.backward(out.loss_sum)
            elif accelerator.num_processes > 1:
                raise RuntimeError(NO_GRAD_PATH)
            # else: nothing trainable was reached (a text-only batch while only the cross-attention trains); its
            # tokens still count in the step's mean, as they count in the loss.
        loss_sum += out.loss_sum.detach().double()
        tokens += int(out.num_tokens)
        if batch is not None:
            samples += int(batch.get("num_samples", len(batch["input_ids"])))
            stats = batch.get("stats", stats)
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    keys = sorted(sums)
    local = torch.tensor([float(loss_sum), tokens, samples, *(sums[k] for k in keys)], dtype=torch.float64)
    total = accelerator.reduce(local.to(accelerator.device), reduction="sum").cpu()  # one collective per step
    total_tokens = int(total[1])
    # DDP / FSDP averaged the ranks' summed-loss gradients: x world_size / tokens gives the per-token mean.
    scale = accelerator.num_processes / max(total_tokens, 1)
    for param in model.parameters():
        if param.grad is not None:
            param.grad.mul_(scale)
    if extra is not None:  # the objective's own parameters (PPO's value head): averaged over ranks, then scaled
        extra.scale_gradients(scale, accelerator.num_processes)
    per_call = grad_accumulation * accelerator.num_processes
    metrics = {k: float(total[3 + i]) / per_call for i, k in enumerate(keys)}
    loss = float(total[0]) / max(total_tokens, 1)
    return StepTotals(loss=loss, tokens=total_tokens, samples=int(total[2]), metrics=metrics), stats


def steps_per_batch(objective: Objective) -> int:
    """How many optimizer steps each drawn micro-batch serves: the objective's ``steps_per_batch`` (PPO's epochs per
    rollout), 1 for objectives without one."""
    n = getattr(objective, "steps_per_batch", 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"objective.steps_per_batch must be a positive integer, got {n!r}")
    return n


def is_replay_step(objective: Objective, step: int) -> bool:
    """Step `step` (0-based) re-scores the micro-batches of the last drawing step instead of drawing new ones."""
    return step % steps_per_batch(objective) != 0


def check_replay_schedule(objective: Objective, config: TrainConfig) -> None:
    """Checkpoints (and the final step) must fall where a drawing cycle ends: what an objective keeps between the
    steps of a cycle (a PPO rollout: samples, old log-probs, values, advantages) is not saved, so a resume must
    start a new cycle. Clear error otherwise, before any work."""
    n = steps_per_batch(objective)
    if n == 1:
        return
    for name in ("save_every", "max_steps"):
        value = getattr(config, name)
        if value % n:
            raise ValueError(
                f"the objective takes {n} optimizer steps per drawn batch (e.g. PPO epochs), so {name} must be a "
                f"multiple of {n} (checkpoints are only taken between cycles); got {name}={value}"
            )


def allow_rank_dependent_unused_parameters(model: nn.Module) -> None:
    """FSDP2 counterpart of DDP's find_unused_parameters: a text-only batch leaves a unit's cross-attention without
    gradients on one rank while another rank has them; zero gradients keep the reduce-scatters matched."""
    for module in model.modules():
        if isinstance(module, FSDPModule) and hasattr(module, "set_reduce_scatter_unused_params"):  # newer torch
            module.set_reduce_scatter_unused_params(True, recurse=False)


def _global_stats(accelerator: Accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Sum each rank's cumulative skip counters (a collective: every rank calls it at the same steps)."""
    merged: dict[str, float] = {}
    for rank_stats in gather_object([stats]) if accelerator.num_processes > 1 else [stats]:
        for key, value in rank_stats.items():
            merged[f"data/{key}"] = merged.get(f"data/{key}", 0.0) + float(value)
    return merged


def _clip(accelerator: Accelerator, params: list[nn.Parameter], max_norm: float | None) -> float:
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def _config_changes(folder: Path, resolved: dict[str, Any]) -> list[str]:
    saved = ckpt.read_json(folder / "config.json").get("train", {})
    return [
        f"{key}: {saved.get(key)!r} -> {value!r}"
        for key, value in resolved["train"].items()
        if key != "resume" and saved.get(key) != value
    ]


def train(
    model: nn.Module,
    batches: BatchSource,
    objective: Objective,
    config: TrainConfig,
    accelerator: Accelerator | None = None,
    processor: Any = None,
    extra_config: dict[str, Any] | None = None,
    periodic_eval: PeriodicEvaluation | None = None,
) -> TrainResult:
    """Train `model` (its trainable set already declared, see `trainable.apply_trainable`) for `config.max_steps`
    optimizer steps, resuming per `config.resume`; returns the logged history and where things were saved.

    `accelerator`: pass one to control its construction (it must have gradient_accumulation_steps=1: the loop
    accumulates itself); by default `make_accelerator(config)`. `extra_config`: the stage's other settings (dataclasses
    or dicts), saved with the resolved config. Every rank calls `train` with its own `batches`. `periodic_eval`:
    scored every `periodic_eval.every` steps on the main process (the others wait) and logged beside the loss.
    """
    accelerator = accelerator or make_accelerator(config)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise NotImplementedError(
            "DeepSpeed is not supported by this loop yet: its engine owns accumulation, clipping and the optimizer "
            "step, so the per-token gradient scaling cannot be applied; use DDP or FSDP"
        )
    if accelerator.gradient_accumulation_steps != 1:
        raise ValueError("pass an Accelerator with gradient_accumulation_steps=1; set TrainConfig.grad_accumulation")
    if accelerator.mixed_precision != config.mixed_precision:
        raise ValueError(
            f"the Accelerator uses mixed_precision={accelerator.mixed_precision!r} but the config asks for "
            f"{config.mixed_precision!r}"
        )
    if periodic_eval is not None and accelerator.distributed_type == DistributedType.FSDP:
        raise NotImplementedError(
            "evaluation during training is not supported under FSDP yet (generation on one rank would need the "
            "other ranks' shards); evaluate the saved checkpoints with `infimm-hd eval` instead"
        )
    if not hasattr(batches, "__next__"):
        raise TypeError("batches must be an iterator (with state_dict/load_state_dict), not a re-iterable")
    output_dir, main = Path(config.output_dir), accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        stale = ckpt.remove_partial(output_dir)
    accelerator.wait_for_everyone()
    check_replay_schedule(objective, config)
    resume_from = ckpt.resolve_resume(config.resume, output_dir)
    with determinism(config.seed, config.deterministic):
        run = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "device": str(accelerator.device),
            "objective": type(objective).__name__,
            "resume_from": str(resume_from) if resume_from else None,
        }
        resolved = resolved_config(config, run=run, **(extra_config or {}))
        table = trainable_table(model)

        # Trainable weights go into the plain model before prepare() shards or wraps it.
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        # Objectives whose state depends on the starting weights (the RLHF reference) see them before a resume loads
        # others.
        if hasattr(objective, "setup"):
            objective.setup(model)
        if resume_from is not None:
            ckpt.load_trainable(model, resume_from)
        model.train()
        optimizer = build_optimizer(
            model, config.learning_rate, config.weight_decay, config.betas, config.eps, config.lr_scales
        )
        # Not prepared: accelerate's scheduler wrapper steps once per process, which would stretch the schedule.
        scheduler = build_scheduler(
            optimizer, config.warmup_steps, config.max_steps, config.learning_rate, config.min_learning_rate
        )
        prepared, optimizer = accelerator.prepare(model, optimizer)
        allow_rank_dependent_unused_parameters(prepared)
        raw_model, raw_optimizer = accelerator.unwrap_model(prepared), optimizer.optimizer
        owned = objective.trainable_module() if hasattr(objective, "trainable_module") else None
        extra = ObjectiveModule(owned, config, accelerator.device) if owned is not None else None
        state = ckpt.TrainerState(world_size=accelerator.num_processes)
        if resume_from is not None:
            state = ckpt.load_checkpoint(
                resume_from,
                accelerator=accelerator,
                model=raw_model,
                optimizer=raw_optimizer,
                scheduler=scheduler,
                batches=batches,
                objective=objective,
            )
            if extra is not None:
                extra.load(resume_from)
            if is_replay_step(objective, state.step):
                raise ValueError(
                    f"{resume_from} was saved at step {state.step}, inside a cycle of {steps_per_batch(objective)} "
                    "steps per drawn batch (e.g. PPO epochs): what the objective kept for the cycle is not in "
                    "checkpoints; resume from a checkpoint at a multiple of that number"
                )

        log = ProgressLogger(
            output_dir,
            config.max_steps,
            state.step,
            enabled=main,
            log_every=config.log_every,
            tensorboard=config.tensorboard,
            wandb=config.wandb,
            wandb_project=config.wandb_project,
            config=resolved,
        )
        if main:
            (output_dir / "config.json").write_text(config_json(resolved))
            log.print("resolved config:\n" + config_json(resolved) + "trainable parameters:\n" + table)
            for folder in stale:
                log.print(f"removed the partial checkpoint {folder} (a run was killed while writing it)")
        if resume_from is not None:
            log.print(f"resumed from {resume_from} at step {state.step}")
            for change in _config_changes(resume_from, resolved) if main else []:
                log.print(f"config changed since the checkpoint: {change}")
            log.event("resume", from_step=state.step, checkpoint=str(resume_from))
        else:
            log.event("start", max_steps=config.max_steps)

        params = [p for p in prepared.parameters() if p.requires_grad] + (extra.parameters() if extra else [])
        history: list[dict[str, float]] = []
        last = resume_from
        stats: dict[str, float] = {}  # the data counters of the last step that drew batches
        while state.step < config.max_steps:
            lr = scheduler.get_last_lr()[0] / raw_optimizer.param_groups[0].get("lr_scale", 1.0)  # the configured LR
            totals, step_stats = accumulate_step(
                prepared, objective, batches, state.step, accelerator, config.grad_accumulation, extra
            )
            stats = step_stats or stats
            grad_norm = _clip(accelerator, params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if extra is not None:
                extra.step()
            state.step += 1
            state.samples_seen += totals.samples
            state.tokens_seen += totals.tokens

            metrics = {"loss": totals.loss, "lr": lr, "grad_norm": grad_norm} | {
                f"objective/{k}": v for k, v in totals.metrics.items()
            }
            if state.step % config.log_every == 0 or state.step == config.max_steps:
                metrics |= _global_stats(accelerator, stats)
                history.append({"step": state.step, **metrics})
            log.step(state.step, metrics, totals.samples, totals.tokens)
            if periodic_eval is not None and (state.step % periodic_eval.every == 0 or state.step == config.max_steps):
                scores = {}
                if main:  # the unwrapped model: its forward has no collectives, so one rank can generate alone
                    raw_model.eval()
                    cuda = [accelerator.device] if accelerator.device.type == "cuda" else []
                    with torch.random.fork_rng(devices=cuda):  # evaluating must not change the training's RNG
                        scores = periodic_eval(raw_model, state.step)
                    raw_model.train()
                accelerator.wait_for_everyone()
                log.scalars(state.step, scores)

            if state.step % config.save_every == 0 or state.step == config.max_steps:
                last = ckpt.save_checkpoint(
                    output_dir,
                    state,
                    accelerator=accelerator,
                    model=raw_model,
                    optimizer=raw_optimizer,
                    scheduler=scheduler,
                    batches=batches,
                    objective=objective,
                    config=resolved,
                    extra_module=extra,
                )
                if main:
                    ckpt.prune(output_dir, config.keep_last)
                log.event("checkpoint", step=state.step, path=str(last))
                log.flush()

        final = ckpt.save_final(
            raw_model, output_dir / "final", accelerator, trained_only=config.final_trained_only, processor=processor
        )
        log.event("end", step=state.step, final=str(final))
        log.print(f"done at step {state.step}: {json.dumps(history[-1]) if history else ''} -> {final}")
        log.close()
        return TrainResult(step=state.step, history=history, last_checkpoint=last, final_dir=final)
