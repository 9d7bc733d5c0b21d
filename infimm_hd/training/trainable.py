"""Which parameters a stage trains, declared as a small spec, applied idempotently and checked.

Groups (by parameter name in `InfiMMHDForConditionalGeneration`):

* `cross_attention`: the gated blocks, `...layers.<i>.cross_attn.*` (see `xattn.CrossAttentionDecoderLayer`);
* `vision_tower`: `vision_tower.*`;
* `embeddings`: the LLM's input and output token embeddings (one group, so a stage can train the new `<image>` rows
  without the LLM body);
* `language_model`: the rest of `language_model.*`;
* `other`: anything else (nothing today; a future projector would land here until it gets its own group).

>>> import infimm_hd
>>> model, _ = infimm_hd.build_model("tiny")
>>> apply_trainable(model, TrainableSpec(cross_attention=True))
>>> check_trainable(model, TrainableSpec(cross_attention=True))
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from torch import nn

GROUPS = ("cross_attention", "vision_tower", "language_model", "embeddings", "other")
LABELS = {
    "cross_attention": "cross-attention",
    "vision_tower": "vision tower",
    "language_model": "LLM body",
    "embeddings": "token embeddings",
    "other": "other",
}


@dataclass(frozen=True)
class TrainableSpec:
    """What trains: one flag per group (see the module docstring). Stage 1: `TrainableSpec(cross_attention=True)`."""

    cross_attention: bool = False
    vision_tower: bool = False
    language_model: bool = False
    embeddings: bool = False
    other: bool = False

    def trains(self, group: str) -> bool:
        return bool(getattr(self, group))


def token_embedding_ids(model: nn.Module) -> set[int]:
    """`id()`s of the input and output token-embedding parameters (one id when they are tied)."""
    found: set[int] = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None:
            found.update(id(p) for p in module.parameters())
    return found


def parameter_groups(model: nn.Module) -> dict[str, str]:
    """Parameter name -> group, for every (deduplicated) parameter of the model."""
    embeddings = token_embedding_ids(model)
    groups = {}
    for name, param in model.named_parameters():
        if ".cross_attn." in name or name.startswith("cross_attn."):
            groups[name] = "cross_attention"
        elif name.startswith("vision_tower."):
            groups[name] = "vision_tower"
        elif id(param) in embeddings:
            groups[name] = "embeddings"
        elif name.startswith("language_model."):
            groups[name] = "language_model"
        else:
            groups[name] = "other"
    return groups


def apply_trainable(model: nn.Module, spec: TrainableSpec) -> None:
    """Set `requires_grad` on every parameter from its group's flag (explicitly on each, so repeated calls and calls
    after any earlier freezing give the same result)."""
    params = dict(model.named_parameters())
    for name, group in parameter_groups(model).items():
        params[name].requires_grad_(spec.trains(group))


def trainable_table(model: nn.Module) -> str:
    """A per-group table of trainable / total parameter counts, for the start-of-run printout."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    params = dict(model.named_parameters())
    for name, group in parameter_groups(model).items():
        counts[group][1] += params[name].numel()
        if params[name].requires_grad:
            counts[group][0] += params[name].numel()
    rows = [(LABELS[g], *counts[g]) for g in GROUPS if g in counts]
    rows.append(("total", sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())))
    lines = [f"{'group':<18}{'trainable':>15}{'total':>15}"]
    lines += [f"{label:<18}{trainable:>15,}{total:>15,}" for label, trainable, total in rows]
    return "\n".join(lines)


def check_trainable(model: nn.Module, spec: TrainableSpec) -> None:
    """Raise `ValueError` naming each group (and a few parameters) whose actual trainability differs from `spec`."""
    params = dict(model.named_parameters())
    wrong: dict[str, list[str]] = defaultdict(list)
    for name, group in parameter_groups(model).items():
        if params[name].requires_grad != spec.trains(group):
            wrong[group].append(name)
    if not wrong:
        return
    details = []
    for group, names in wrong.items():
        state = "declared trainable but frozen" if spec.trains(group) else "declared frozen but trainable"
        shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
        details.append(f"{group} ({LABELS[group]}): {len(names)} parameters {state}: {shown}")
    raise ValueError(
        f"the model's trainable parameters differ from {spec} -> " + "; ".join(details) + ". "
        "Call apply_trainable(model, spec) after any code that changes requires_grad, or fix the declaration."
    )
