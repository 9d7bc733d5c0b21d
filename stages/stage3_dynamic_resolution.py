"""Stage 3 (DRA, dynamic resolution adaptation): a 448 px thumbnail plus up to 3x3 windows of 448 px, each window
with its fixed 2D sin-cos position embedding; the ViT and the gated cross-attention train, with gradient
checkpointing (up to 10 crops per image).

    python -m stages.stage3_dynamic_resolution --preset tiny --max-steps 3        # reads runs/stage2/final
    python -m stages.stage3_dynamic_resolution --init runs/stage2/final --output runs/stage3

Same data as stage 2 (the paper's Table 1 mix); here `<data>/caption/` and `<data>/vqa/`.
"""

from __future__ import annotations

from pathlib import Path

from infimm_hd.training.trainable import TrainableSpec
from stages.common import StageSpec, run_stage

SPEC = StageSpec(
    number=3,
    name="dynamic resolution adaptation",
    window_size=448,
    max_windows=9,
    trainable=TrainableSpec(cross_attention=True, vision_tower=True),
    data=("caption", "vqa"),
    gradient_checkpointing=True,
)


def main(argv: list[str] | None = None) -> Path:
    return run_stage(SPEC, argv, __doc__)


if __name__ == "__main__":
    main()
