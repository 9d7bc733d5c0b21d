"""PPO's value head: a linear map from the policy's last hidden state to a scalar value per position.

It shares the policy's trunk (no separate critic: half the memory, as the design notes recommend) and belongs to the
objective, not to the model: the model stays a pure generator. The training loop trains it beside the model through
the objective's `trainable_module()` hook (optimizer, gradient clipping and scaling, checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """hidden (B, T, D) -> values (B, T) in float32.

    Zero-initialised: every value starts at 0 (returns are then the plain reward-to-go at first), and every rank of a
    data-parallel run starts from the same head without broadcasting anything.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):  # values are regression targets: keep float32
            return self.proj(hidden.float()).squeeze(-1)  # (B, T)
