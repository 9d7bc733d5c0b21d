"""Normalised exact match, as lmms-eval scores GQA (and the other ``metric: exact_match`` tasks).

Why: GQA accuracy is an exact match, and what "exact" means differs between the official script and lmms-eval:

* the official GQA ``eval.py`` compares raw strings: ``correct = (predicted == gold)`` (it expects a cleaned
  predictions file);
* lmms-eval ``tasks/gqa/gqa.yaml`` uses ``metric: exact_match`` with ``ignore_case: true, ignore_punctuation: true``,
  i.e. ``lmms_eval.api.metrics.exact_match_hf_evaluate`` (a port of HF evaluate's exact_match), applied by
  ``api/task.py`` to the STRIPPED prediction and the unstripped gold. The steps, in order: each regex in
  `regexes_to_ignore` deleted, lowercase, every ``string.punctuation`` character deleted, digits deleted; no
  whitespace normalisation (so ``"traffic  light"`` != ``"traffic light"``).

Checked in lmms-eval 0.7.3: IconQA has no exact-match scorer of its own (``tasks/iconqa/*.yaml`` use ``metric:
anls``: use `anls`), and there is no OCR-VQA task.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Literal

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NO_DIGITS = str.maketrans("", "", string.digits)


def exact_match(
    prediction: str,
    reference: str,
    *,
    regexes_to_ignore: Sequence[str] | None = None,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    ignore_numbers: bool = False,
) -> float:
    """``exact_match_hf_evaluate`` on one pair: 1.0 if the two strings are equal after the chosen deletions."""
    for pattern in regexes_to_ignore or ():
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        prediction, reference = prediction.translate(_NO_PUNCTUATION), reference.translate(_NO_PUNCTUATION)
    if ignore_numbers:
        prediction, reference = prediction.translate(_NO_DIGITS), reference.translate(_NO_DIGITS)
    return 1.0 if prediction == reference else 0.0


def gqa_accuracy(prediction: str, answer: str, normalization: Literal["lmms-eval", "official"] = "lmms-eval") -> float:
    """GQA score of one prediction: lmms-eval's stripped, case- and punctuation-insensitive match, or the official
    raw equality."""
    if normalization == "official":
        return 1.0 if prediction == answer else 0.0
    if normalization == "lmms-eval":
        return exact_match(prediction.strip(), answer, ignore_case=True, ignore_punctuation=True)
    raise ValueError(f"unknown GQA normalization {normalization!r}; expected 'lmms-eval' or 'official'")
