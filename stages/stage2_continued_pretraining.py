"""Stage 2 (CPT, continued pretraining): 448 px thumbnails (ViT position embeddings resampled from 224), the ViT and
the gated cross-attention train, the LLM stays frozen.

    python -m stages.stage2_continued_pretraining --preset tiny --max-steps 3     # reads runs/stage1/final
    python -m stages.stage2_continued_pretraining --init runs/stage1/final --output runs/stage2

The paper's data is its multitask captioning / VQA mix (Table 1); here `<data>/caption/` and `<data>/vqa/`.
"""

from __future__ import annotations

from pathlib import Path

from stages.common import STAGES, run_stage

SPEC = STAGES[2]  # infimm_hd.training.recipe: resolution, window budget, what trains, data


def main(argv: list[str] | None = None) -> Path:
    return run_stage(SPEC, argv, __doc__)


if __name__ == "__main__":
    main()
