"""ChartQA relaxed accuracy: numbers within 5% relative error count as correct, other answers need an exact
(case-insensitive) match.

Reproduces pix2struct's ``relaxed_correctness`` (Methani et al. 2020 / ChartQA, arXiv:2203.10244 sec. 5.1), as copied
by Qwen-VL ``eval_mm/evaluate_vqa.py`` and lmms-eval ``tasks/chartqa/utils.py`` ``relaxed_correctness``. Quirks kept:

* a string ending in ``%`` is parsed as ``float(text.rstrip("%")) / 100`` (so ``"10%"`` is 0.1 and does NOT match
  ``"10"``; several trailing ``%`` are all stripped); nothing is stripped first, and ``float`` itself tolerates
  surrounding whitespace, ``_`` digit separators, ``"inf"`` and ``"nan"``; so ``" 12 "`` is a number but ``"12% "``
  is not;
* the tolerance branch needs a truthy target (``if prediction_float is not None and target_float``): a target of 0
  falls back to the string comparison, so ``"0.0"`` vs ``"0"`` is wrong;
* the test is ``abs(p - t) / abs(t) <= 0.05`` in floating point: 105 vs 100 passes (exactly 0.05) but 1.05 vs 1 fails
  (``0.05000000000000004``).
"""

from __future__ import annotations


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
    """Whether `prediction` is relaxed-correct for `target` (argument order as lmms-eval: prediction first)."""
    prediction_float = _to_float(prediction)
    target_float = _to_float(target)
    if prediction_float is not None and target_float:
        relative_change = abs(prediction_float - target_float) / abs(target_float)
        return relative_change <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, target: str, max_relative_change: float = 0.05) -> float:
    """`relaxed_correctness` as the 1.0 / 0.0 score ``chartqa_process_results`` reports."""
    return 1.0 if relaxed_correctness(prediction, target, max_relative_change) else 0.0
