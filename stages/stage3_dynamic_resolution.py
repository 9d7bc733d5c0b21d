"""Stage 3 (DRA, dynamic resolution adaptation): a 448 px thumbnail plus up to 3x3 windows of 448 px, each window
with its fixed 2D sin-cos position embedding; the ViT and the gated cross-attention train, with gradient
checkpointing (up to 10 crops per image).

    python -m stages.stage3_dynamic_resolution --preset tiny --max-steps 3        # reads runs/stage2/final
    python -m stages.stage3_dynamic_resolution --init runs/stage2/final --output runs/stage3

Same data as stage 2 (the paper's Table 1 mix); here `<data>/caption/` and `<data>/vqa/`.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import STAGES, run_stage

SPEC = STAGES[3]  # infimm_hd.training.recipe: resolution, window budget, what trains, data


def main(argv: list[str] | None = None) -> Path:
    return run_stage(SPEC, argv, __doc__)


if __name__ == "__main__":
    main()
