"""AdamW over the trainable parameters, and the warmup + cosine-to-floor learning-rate schedule.

Weight decay pulls weights towards zero, which is right for matrices and wrong for parameters whose zero means
something else: biases and norm scales (zero = dead unit), the cross-attention gates (zero = block off; decaying them
would slowly switch the vision path back off) and embeddings (token rows that are rarely seen would shrink between
their updates; position embeddings and class tokens likewise, timm's `no_weight_decay()` convention). So decay goes
only to >= 2-D weights that are not embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .trainable import token_embedding_ids


def embedding_parameter_names(model: nn.Module) -> set[str]:
    """Names of the LLM's input/output token embeddings plus every `no_weight_decay()` name a submodule declares
    (timm / open_clip towers: position embeddings, class token)."""
    embeddings = token_embedding_ids(model)
    names = {name for name, p in model.named_parameters() if id(p) in embeddings}
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names.update(f"{prefix}.{n}" if prefix else n for n in declared())
    return names


def decays(name: str, param: torch.Tensor, embeddings: set[str]) -> bool:
    """Whether a parameter gets weight decay: >= 2-D and not an embedding (so not a bias, norm, gate or token row)."""
    return param.ndim >= 2 and name not in embeddings


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the parameters with requires_grad: `decay` and `no_decay` (empty groups dropped)."""
    embeddings = embedding_parameter_names(model)
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["decay" if decays(name, param, embeddings) else "no_decay"].append(param)
    if not any(groups.values()):
        raise ValueError("the model has no trainable parameters; declare some with trainable.apply_trainable")
    wd = {"decay": weight_decay, "no_decay": 0.0}
    return [{"params": params, "weight_decay": wd[key]} for key, params in groups.items() if params]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


@dataclass
class WarmupCosine:
    """LR multiplier at optimizer step `step` (0-based: the multiplier of the step-th update).

    warmup (step < warmup_steps): (step + 1) / warmup_steps, so the first update is not wasted at LR 0 and the last
    warmup step reaches the peak; then cosine from 1 at step warmup_steps to min_ratio at step max_steps (and flat
    beyond).

    >>> f = WarmupCosine(warmup_steps=2, max_steps=6, min_ratio=0.1)
    >>> [round(f(s), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1]
    """

    warmup_steps: int
    max_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, lr: float, min_lr: float
) -> LambdaLR:
    """A `LambdaLR` (its state_dict is JSON: base LRs, step count, and the `WarmupCosine` fields)."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, max_steps, min_lr / lr))
