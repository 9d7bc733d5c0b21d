"""Parameters an objective trains beside the model (PPO's value head), trained and checkpointed like the model's.

An objective that owns such a module exposes it with `trainable_module() -> nn.Module | None`. The module stays out
of the model (which remains a pure generator) and out of DDP/FSDP: it gets its own AdamW with the run's settings and
schedule, its gradients are averaged over ranks here (what DDP does for the model) and scaled like the model's, and
its weights and optimizer state go into every checkpoint as `objective_module.safetensors` and
`objective_optimizer.{safetensors,json}`. The module must be identical on every rank at start (a zero-initialised
head is).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from . import checkpoint as ckpt
from .config import TrainConfig
from .optim import build_optimizer, build_scheduler

WEIGHTS = "objective_module.safetensors"


class ObjectiveModule:
    """A module from `objective.trainable_module()` with its optimizer and learning-rate schedule."""

    def __init__(self, module: nn.Module, config: TrainConfig, device: torch.device):
        self.module = module.to(device).train()
        self.optimizer = build_optimizer(module, config.learning_rate, config.weight_decay, config.betas, config.eps)
        self.scheduler = build_scheduler(
            self.optimizer, config.warmup_steps, config.max_steps, config.learning_rate, config.min_learning_rate
        )

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def scale_gradients(self, scale: float, world_size: int) -> None:
        """Average the gradients over ranks (as DDP does for the model), then multiply by `scale`."""
        for param in self.parameters():
            if param.grad is None:
                param.grad = torch.zeros_like(param)  # every rank joins the all-reduce
            if world_size > 1:
                dist.all_reduce(param.grad)
                param.grad.div_(world_size)
            param.grad.mul_(scale)

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path) -> None:
        """Write the weights and optimizer state into a checkpoint folder (main process only)."""
        ckpt.write_tensors(folder / WEIGHTS, {k: v.detach().cpu() for k, v in self.module.state_dict().items()})
        state = get_optimizer_state_dict(self.module, self.optimizer, options=StateDictOptions(full_state_dict=True))
        tensors, meta = ckpt.optimizer_files(state)
        ckpt.write_tensors(folder / "objective_optimizer.safetensors", tensors)
        ckpt.write_json(folder / "objective_optimizer.json", meta | {"scheduler": self.scheduler.state_dict()})

    def load(self, folder: Path) -> None:
        """Restore what `save` wrote (strict: every key, every shape); a checkpoint without it is an error."""
        if not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(
                f"{folder} has no {WEIGHTS}: it was written by a run whose objective trained no module of its own"
            )
        self.module.load_state_dict(load_file(folder / WEIGHTS, device=str(next(self.module.parameters()).device)))
        meta = ckpt.read_json(folder / "objective_optimizer.json")
        schedule = meta.pop("scheduler")
        state = ckpt.optimizer_from_files(load_file(folder / "objective_optimizer.safetensors"), meta)
        set_optimizer_state_dict(self.module, self.optimizer, state, options=StateDictOptions(full_state_dict=True))
        schedule["lr_lambdas"] = [None] * len(schedule.get("lr_lambdas", []))
        self.scheduler.load_state_dict(schedule)
