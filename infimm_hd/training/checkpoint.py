"""Atomic training checkpoints that resume a run exactly.

Layout (`output_dir/checkpoints/`):

    step-00000004/
        trainable.safetensors   every parameter with requires_grad, by full model key (gathered under FSDP)
        optimizer.safetensors   AdamW state tensors, "<param key>/<name>" (gathered: independent of the sharding)
        optimizer.json          param groups (hyper-parameters, param keys) and any non-tensor state
        scheduler.json          the LambdaLR state (base LRs, step count, WarmupCosine fields)
        objective.json          the objective's state_dict(), when it has one
        objective_module.safetensors, objective_optimizer.{safetensors,json}
                                parameters the objective trains itself (PPO's value head), when it has some
        trainer_state.json      step, world size, samples/tokens seen, format
        config.json             the resolved run config
        rank-00000/rng.json     python / numpy / torch (+ CUDA) generator states of that rank
        rank-00000/data.json    that rank's batch-source state_dict() (its exact data position)
    .tmp-step-00000005/         being written; renamed to step-00000005 only once complete

A checkpoint is written into `.tmp-step-X`, every file fsynced, then renamed with `os.replace` (atomic on POSIX), so
a kill at any moment leaves either the whole previous checkpoint set or the new one; `.tmp-*` leftovers are deleted
at the next start. Nothing here is unpickled: tensors are safetensors, the rest JSON. Every rank must call
`save_checkpoint` and `load_checkpoint` (they gather / scatter under FSDP); the folders must be on a file system all
ranks share.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

FORMAT = "infimm-hd-train-checkpoint/1"
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"
TRAINABLE = "trainable.safetensors"


@dataclass
class TrainerState:
    """Counters of the run so far. `step` = optimizer steps done; the next logged step is `step + 1`."""

    step: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    world_size: int = 1
    format: str = FORMAT


# -- folders ------------------------------------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (renamed `step-*` folders), oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | Path | None, output_dir: str | Path) -> Path | None:
    """ "auto" -> the latest checkpoint of output_dir (None on a fresh run); a path -> that checkpoint; None -> fresh,
    refusing an output_dir with checkpoints (continuing or overwriting must be a decision, not an accident)."""
    if resume == "auto":
        return latest_checkpoint(output_dir)
    if resume is None:
        if list_checkpoints(output_dir):
            raise FileExistsError(
                f"{output_dir} already holds checkpoints; pass resume='auto' to continue that run or use a new "
                "output_dir"
            )
        return None
    folder = Path(resume)
    if not (folder / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{folder} is not a training checkpoint (no trainer_state.json)")
    return folder


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete `.tmp-*` folders a killed run left behind (call on the main process before training). Returns them."""
    root = Path(output_dir) / CHECKPOINTS
    stale = sorted(root.glob(TMP_PREFIX + "*")) if root.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def prune(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (renamed to `.tmp-` first, so a half-deleted checkpoint is
    never mistaken for a complete one)."""
    for folder in list_checkpoints(output_dir)[:-keep_last]:
        doomed = folder.with_name(TMP_PREFIX + "delete-" + folder.name)
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


# -- durable files ------------------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})
    _fsync(path)


# -- what gets saved ----------------------------------------------------------------------------------------------
def gather_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every requires_grad parameter as a full CPU tensor (a collective under FSDP: call on every rank)."""
    out = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            full = param.full_tensor() if isinstance(param, DTensor) else param
            out[name] = full.detach().to("cpu", copy=True)
    return out


def load_trainable(model: nn.Module, folder: Path) -> None:
    """Copy the saved trainable tensors into an unsharded model (before `accelerator.prepare`), strictly."""
    saved = load_file(folder / TRAINABLE)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
    if missing or unexpected:
        raise ValueError(
            f"{folder / TRAINABLE} does not match the model's trainable parameters (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); resume with the TrainableSpec of the run that wrote it"
        )
    with torch.no_grad():
        for name, param in params.items():
            if saved[name].shape != param.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(saved[name].shape)}, model {tuple(param.shape)}")
            param.copy_(saved[name])


def optimizer_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A key-addressed optimizer state dict -> (tensors for safetensors, JSON for the rest)."""
    tensors, scalars = {}, {}
    for key, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}/{name}"] = value
            else:
                scalars.setdefault(key, {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict[str, Any]] = {key: dict(v) for key, v in meta["scalars"].items()}
    for flat, value in tensors.items():
        key, name = flat.rsplit("/", 1)
        state.setdefault(key, {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _from_b64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (+ CUDA) generator states, as JSON values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_from_b64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_from_b64(s) for s in state["cuda"]])


# -- save / load --------------------------------------------------------------------------------------------------
def save_checkpoint(
    output_dir: Path,
    trainer_state: TrainerState,
    *,
    accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Any,
    objective: Any,
    config: dict[str, Any],
    extra_module: Any = None,
) -> Path:
    """Write `checkpoints/step-<step>` atomically (collective: every rank calls it). `model` is the unwrapped model,
    `optimizer` the raw torch optimizer. Returns the final folder."""
    root = Path(output_dir) / CHECKPOINTS
    final = root / checkpoint_name(trainer_state.step)
    tmp = root / (TMP_PREFIX + final.name)
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()

    weights = gather_trainable(model)  # collectives first, on every rank, in the same order
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered on rank 0, empty elsewhere
    optim_state = get_optimizer_state_dict(model, optimizer, options=full)
    rank_dir = tmp / f"rank-{accelerator.process_index:05d}"
    rank_dir.mkdir()
    write_json(rank_dir / "rng.json", rng_state())
    write_json(rank_dir / "data.json", batches.state_dict())
    _fsync(rank_dir)
    if main:
        write_tensors(tmp / TRAINABLE, weights)
        tensors, meta = optimizer_files(optim_state)
        write_tensors(tmp / "optimizer.safetensors", tensors)
        write_json(tmp / "optimizer.json", meta)
        write_json(tmp / "scheduler.json", scheduler.state_dict())
        if hasattr(objective, "state_dict"):
            write_json(tmp / "objective.json", objective.state_dict())
        if extra_module is not None:  # parameters the objective trains itself (`objective_module.ObjectiveModule`)
            extra_module.save(tmp)
        write_json(tmp / "trainer_state.json", asdict(trainer_state))
        write_json(tmp / "config.json", config)
    accelerator.wait_for_everyone()
    if main:
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(root)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    folder: Path,
    *,
    accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Any,
    objective: Any,
) -> TrainerState:
    """Restore optimizer, scheduler, this rank's RNG and data position, and the objective, after
    `accelerator.prepare` (the trainable weights were loaded before it with `load_trainable`)."""
    state = TrainerState(**read_json(folder / "trainer_state.json"))
    if state.format != FORMAT:
        raise ValueError(f"{folder}: unknown checkpoint format {state.format!r}, expected {FORMAT!r}")
    if state.world_size != accelerator.num_processes:
        raise ValueError(
            f"{folder} was written by {state.world_size} processes but this run has {accelerator.num_processes}: "
            "each rank's data position and RNG cannot be remapped; resume with the same number of processes"
        )
    tensors, meta = load_file(folder / "optimizer.safetensors"), read_json(folder / "optimizer.json")
    optim_state = optimizer_from_files(tensors, meta)
    set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
    schedule = read_json(folder / "scheduler.json")
    # The schedule's shape (warmup, max_steps, floor) comes from this run's config, so a run can be extended.
    schedule["lr_lambdas"] = [None] * len(schedule.get("lr_lambdas", []))
    scheduler.load_state_dict(schedule)
    if hasattr(objective, "load_state_dict") and (folder / "objective.json").is_file():
        objective.load_state_dict(read_json(folder / "objective.json"))
    rank_dir = folder / f"rank-{accelerator.process_index:05d}"
    batches.load_state_dict(read_json(rank_dir / "data.json"))
    set_rng_state(read_json(rank_dir / "rng.json"))
    return state


# -- the exported model -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_parameters(model: nn.Module):
    """Under FSDP2, all-gather every shard so the module's parameters are plain full tensors inside the block (each
    rank holds the whole model meanwhile); a no-op for unsharded models."""
    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.unshard()
    try:
        yield
    finally:
        for module in sharded:
            module.reshard()


def save_final(model: nn.Module, folder: Path, accelerator, *, trained_only: bool, processor: Any = None) -> Path:
    """`model.save_pretrained(folder, trained_only=...)` (+ the processor) from the unwrapped, possibly sharded model,
    so that `InfiMMHDForConditionalGeneration.from_pretrained(folder)` loads it. Written beside `folder` and renamed
    into place. Collective: every rank calls it."""
    folder = Path(folder)
    tmp = folder.with_name(TMP_PREFIX + folder.name)
    sharded = any(isinstance(m, FSDPModule) for m in model.modules())
    # transformers' full save reads state_dict(), which FSDP2 always returns sharded: gather it explicitly.
    full = None
    if sharded and not trained_only:
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    with full_parameters(model):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            kwargs = {"state_dict": full} if full is not None else {}
            model.save_pretrained(tmp, trained_only=trained_only, **kwargs)
            if processor is not None:
                processor.save_pretrained(tmp)
            if folder.exists():
                old = folder.with_name(TMP_PREFIX + "old-" + folder.name)
                os.replace(folder, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, folder)
        accelerator.wait_for_everyone()
    return folder
