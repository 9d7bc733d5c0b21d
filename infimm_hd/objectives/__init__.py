"""Training objectives: what a micro-batch costs. The loop (`infimm_hd.training.loop`) owns normalisation.

Each objective returns a *sum* over the tokens it scores plus how many tokens that was, so the loop can divide by the
tokens of the whole optimizer step (all micro-batches, all ranks) and a 2-process run computes the gradient of a
1-process run with the same global batch.
"""

from .base import MODEL_INPUT_KEYS, Objective, ObjectiveOutput, model_inputs
from .masked_thought import MaskedThoughtObjective, add_mask_token, mask_thoughts, ramp_p
from .reference import SwappedReference
from .registry import build_objective, objective_names
from .rlhf import RLHFObjective
from .sft import SFTObjective, next_token_loss_sum

__all__ = [
    "MODEL_INPUT_KEYS",
    "MaskedThoughtObjective",
    "Objective",
    "ObjectiveOutput",
    "RLHFObjective",
    "SFTObjective",
    "SwappedReference",
    "add_mask_token",
    "build_objective",
    "mask_thoughts",
    "model_inputs",
    "next_token_loss_sum",
    "objective_names",
    "ramp_p",
]
