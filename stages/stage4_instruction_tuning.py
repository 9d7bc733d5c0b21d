"""Stage 4 (IFT, visual instruction fine-tuning): thumbnail + windows, the gated cross-attention and the whole LLM
(token embeddings included) train, the ViT is frozen.

    python -m stages.stage4_instruction_tuning --preset tiny --max-steps 3        # reads runs/stage3/final
    python -m stages.stage4_instruction_tuning --init runs/stage3/final --output runs/stage4 --objective sft

The paper's data is LLaVA-665k + LLaVAR + TextVQA + ScienceQA plus its corner-character GQA augmentation; here
`<data>/vqa/` and `<data>/cot/`. The final folder holds every LLM weight (the LLM trains).
"""

from __future__ import annotations

from pathlib import Path

from stages.common import STAGES, run_stage

SPEC = STAGES[4]  # infimm_hd.training.recipe: resolution, window budget, what trains, data


def main(argv: list[str] | None = None) -> Path:
    return run_stage(SPEC, argv, __doc__)


if __name__ == "__main__":
    main()
