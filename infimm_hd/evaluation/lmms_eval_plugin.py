"""lmms-eval's plugin hook: the entry point `lmms_eval.models: infimm_hd` (pyproject) calls `manifest()`.

lmms-eval (0.7+) loads every `lmms_eval.models` entry point when it starts, so `python -m lmms_eval --model infimm_hd
...` finds our model without editing lmms-eval. This module stays tiny: it runs inside every lmms-eval start, and the
model class (`lmms_eval_model`) is imported only when a run asks for `infimm_hd`.
"""

from __future__ import annotations

MODEL_ID = "infimm_hd"
MODEL_CLASS = "infimm_hd.evaluation.lmms_eval_model.InfiMMHDLmms"


def manifest():
    """The registration payload: one `simple` model (images + text in, text or log-likelihoods out)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS, aliases=("infimm-hd",))
