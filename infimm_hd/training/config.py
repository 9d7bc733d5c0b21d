"""`TrainConfig`: the run settings of one training loop (nothing model- or data-specific).

Stage scripts build one with a function (`cfg = stage1_config(); cfg.max_steps = 10`) and pass their own component
configs (data, trainable spec) to `train(extra_config=...)` so that they are saved beside every checkpoint too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .precision import resolve_mixed_precision


@dataclass
class TrainConfig:
    """Everything the loop needs; the parallelism (DDP / FSDP / DeepSpeed) comes from `accelerate launch`, not here.

    output_dir: holds `config.json`, `train_log.jsonl`, `tensorboard/`, `checkpoints/step-XXXXXXXX/` and `final/`.
    max_steps: optimizer steps; the cosine schedule ends here.
    learning_rate / min_learning_rate: peak LR after warmup, and the floor the cosine decays to at `max_steps`.
    warmup_steps: linear warmup from learning_rate / warmup_steps to learning_rate.
    lr_scales: component -> LR multiplier (e.g. {"vision_tower": 0.01}); components are `trainable.GROUPS`.
    weight_decay: AdamW decoupled decay on >= 2-D non-embedding weights only (see `optim.param_groups`).
    grad_clip: max global L2 norm; None or 0 disables clipping (the norm is still logged).
    grad_accumulation: micro-batches per optimizer step and rank.
    mixed_precision: "bf16" autocast (works on CPU too), "no" (float32), or "auto" (the default): bf16 where the
        hardware multiplies it natively (`training.precision`), float32 elsewhere; resolved when the config is made,
        so the config (and the run's saved config.json) holds "bf16" or "no". Weights stay float32 either way.
    gradient_checkpointing: recompute activations in backward (LLM layers, cross-attention blocks, ViT blocks).
    save_every / keep_last: checkpoint period in steps, and how many checkpoints to keep (older ones are deleted).
    log_every: steps between progress lines / TensorBoard points.
    resume: "auto" (the latest checkpoint in output_dir, if any), a checkpoint folder, or None (fresh; refuses an
        output_dir that already holds checkpoints).
    final_trained_only: write `final/` with `save_pretrained(trained_only=True)` (trainable tensors + base manifest).
    deterministic: `torch.use_deterministic_algorithms(True)` while `train` runs, for bit-exact resume tests (the
        previous setting is restored when it returns or raises; False leaves a caller's own setting alone). On
        CUDA, `train` sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` if unset, but PyTorch reads it at the process's first
        cuBLAS call: a process that ran CUDA matmuls before `train` must set it in the environment beforehand, or
        PyTorch's first deterministic matmul raises (naming the variable).
    """

    output_dir: str | Path
    max_steps: int
    learning_rate: float = 1e-4
    min_learning_rate: float = 1e-5
    warmup_steps: int = 0
    lr_scales: dict[str, float] = field(default_factory=dict)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    grad_accumulation: int = 1
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    gradient_checkpointing: bool = False
    save_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    resume: str | Path | None = "auto"
    final_trained_only: bool = True
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "infimm-hd"
    deterministic: bool = False

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        problems = []
        if self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.min_learning_rate <= self.learning_rate or self.learning_rate <= 0:
            problems.append(
                f"need 0 <= min_learning_rate <= learning_rate and learning_rate > 0, got {self.min_learning_rate} "
                f"and {self.learning_rate}"
            )
        if not 0 <= self.warmup_steps <= self.max_steps:
            problems.append(f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}")
        for name in ("grad_accumulation", "save_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        try:
            self.mixed_precision = resolve_mixed_precision(self.mixed_precision)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


def to_jsonable(value: Any) -> Any:
    """Dataclasses (nested), paths, tuples and mappings -> plain JSON values; anything else -> its repr."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def resolved_config(config: TrainConfig, **sections: Any) -> dict[str, Any]:
    """The run's full settings as JSON values: `{"train": ..., <section>: ...}` (sections: dataclasses or dicts)."""
    return {"train": to_jsonable(config)} | {name: to_jsonable(value) for name, value in sections.items()}


def config_json(resolved: dict[str, Any]) -> str:
    return json.dumps(resolved, indent=2, sort_keys=False) + "\n"
