"""MODEL_CARD.md: the model card of the paper configuration, `python -m infimm_hd.paper_card > MODEL_CARD.md`.

Kept apart from `model_card` because it builds a preset (`paper-13b` on the meta device), and presets sit above the
model while the card template sits below it.
"""

from __future__ import annotations

import sys

from .base_sources import BaseSource
from .model_card import render_model_card
from .presets import build_model


def paper_model_card() -> str:
    """The card of the paper configuration (EVA02-CLIP-E + Vicuna-13B shapes, built on meta)."""
    model, _ = build_model("paper-13b", device="meta")
    model.base_sources = {"language_model": BaseSource("transformers", "lmsys/vicuna-13b-v1.5")}
    return render_model_card(model, title="InfiMM-HD 13B (paper configuration)", model_id="path/to/infimm-hd-13b")


if __name__ == "__main__":
    sys.stdout.write(paper_model_card())
