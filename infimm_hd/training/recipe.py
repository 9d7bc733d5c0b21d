"""The four-stage recipe as data: what each stage trains and at what resolution, and its hyperparameters.

Why in the package and not in `stages/`: the stage scripts run it, and the training planner (`infimm-hd plan-train`)
sizes it; both must read the same Table 8, so it lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .trainable import TrainableSpec


@dataclass(frozen=True)
class StageSpec:
    """One stage of the recipe (the paper's Table 8 columns that are not hyperparameters).

    window_size: crop side the vision tower runs at (224 in stage 1, 448 after).
    max_windows: window budget of the tiling; 0 = thumbnail only (stages 1 and 2).
    trainable: what trains; the model's actual trainable set is checked against it before the first step.
    data: sub-folders of a data_prep output root this stage reads (`<root>/<name>/train-*.tar`).
    """

    number: int
    name: str
    window_size: int
    max_windows: int
    trainable: TrainableSpec
    data: tuple[str, ...]
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class Hyperparameters:
    """The optimisation settings of one stage at one scale (global batch = micro batch x accumulation x ranks)."""

    learning_rate: float
    min_learning_rate: float
    max_steps: int
    warmup_steps: int
    global_batch: int
    grad_accumulation: int
    max_length: int
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-5


# The paper's Appendix A, Table 8 (PT uses the (0.9, 0.95) / 1e-8 Adam setting; which stage used which of the two
# listed settings is not stated: this split is the likely one, see the design notes).
PAPER = {
    1: Hyperparameters(1e-4, 1e-4, 120_000, 6_000, 768, 2, 384, betas=(0.9, 0.95), eps=1e-8),
    2: Hyperparameters(1e-5, 1e-6, 8_000, 400, 256, 1, 128),
    3: Hyperparameters(1e-5, 1e-6, 8_000, 400, 256, 1, 128),
    4: Hyperparameters(5e-6, 5e-7, 11_000, 550, 64, 2, 1024),
}
# Laptop scale: random new parameters on a small model learn at higher rates, for a few hundred steps.
SMALL = {
    0: Hyperparameters(3e-3, 3e-4, 150, 10, 16, 1, 768),  # the demo's base-LLM text stage (tiny preset only)
    1: Hyperparameters(1e-3, 1e-4, 200, 20, 8, 1, 384, betas=(0.9, 0.95), eps=1e-8),
    2: Hyperparameters(1e-3, 1e-4, 200, 20, 8, 1, 384),
    3: Hyperparameters(1e-3, 1e-4, 300, 30, 8, 1, 384),
    4: Hyperparameters(3e-4, 3e-5, 200, 20, 8, 1, 768),
}


def hyperparameters(preset: str, stage: int) -> Hyperparameters:
    """The default hyperparameters of `stage` for `preset`: the paper's for `paper-13b`, small ones otherwise."""
    table = PAPER if preset == "paper-13b" else SMALL
    if stage not in table:
        raise ValueError(f"no default hyperparameters for stage {stage} with preset {preset!r}")
    return table[stage]


STAGES = {
    1: StageSpec(1, "pretraining", 224, 0, TrainableSpec(cross_attention=True), ("caption",)),
    2: StageSpec(
        2, "continued pretraining", 448, 0, TrainableSpec(cross_attention=True, vision_tower=True), ("caption", "vqa")
    ),
    3: StageSpec(
        3,
        "dynamic resolution adaptation",
        448,
        9,
        TrainableSpec(cross_attention=True, vision_tower=True),
        ("caption", "vqa"),
        gradient_checkpointing=True,
    ),
    4: StageSpec(
        4,
        "instruction fine-tuning",
        448,
        9,
        TrainableSpec(cross_attention=True, language_model=True, embeddings=True),
        ("vqa", "cot"),
    ),
}
