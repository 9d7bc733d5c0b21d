"""Stage 1 (PT, pretraining): 224 px thumbnails, only the gated cross-attention trains (ViT and LLM frozen).

    python -m data_prep.synthetic --out runs/data                                  # data, once
    python -m stages.stage1_pretrain --preset tiny --max-steps 3                  # a tiny CPU run
    python -m stages.stage1_pretrain --preset smollm2-135m --output runs/stage1   # the real SmolLM2
    accelerate launch --num_processes 8 -m stages.stage1_pretrain --preset paper-13b --init ckpt/assembled

The paper trains on image-text pairs (LAION, COYO, ...) at 224 px with the cross-attention gates starting at zero;
here the data is `<data>/caption/`. Writes `OUTPUT/final/` (`from_pretrained` loads it) for stage 2.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import STAGES, run_stage

SPEC = STAGES[1]  # infimm_hd.training.recipe: resolution, window budget, what trains, data


def main(argv: list[str] | None = None) -> Path:
    return run_stage(SPEC, argv, __doc__)


if __name__ == "__main__":
    main()
