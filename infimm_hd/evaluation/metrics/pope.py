"""POPE (object-hallucination probing) metrics: accuracy, precision, recall, F1 and yes-ratio, "yes" positive.

Why: POPE reports all five numbers per split (adversarial / popular / random), and the yes/no parsing decides them.
Two variants:

* ``"official"``: POPE ``evaluate.py`` (RUCAIBox/POPE): keep the text before the first ``.``, delete ``,``, split on
  single spaces; the answer is "no" if a word is exactly ``No``, ``no`` or ``not`` (so ``"NO"`` and ``"Not"`` read as
  "yes"), otherwise "yes" (everything, even an empty answer, that does not say no is a yes). yes-ratio is the
  fraction of PREDICTED yes.
* ``"lmms-eval"``: lmms-eval ``tasks/pope/utils.py``: no parsing, ``pred.lower().strip()`` must equal "yes"/"no";
  any other text is wrong and is neither a positive nor a negative prediction. Its ``pope_yes_ratio`` counts the
  GROUND-TRUTH yes answers, not the predictions (a bug, reproduced in this variant only).

Deliberate difference: evaluate.py divides by zero when there is no predicted (or no true) positive; like
lmms-eval, precision / recall / F1 are 0.0 then. Labels must be yes/no (any case, surrounding spaces allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

POPE_SPLITS: tuple[str, ...] = ("adversarial", "popular", "random")
PopeVariant = Literal["official", "lmms-eval"]


def pope_parse_answer(text: str) -> Literal["yes", "no"]:
    """Official POPE evaluate.py yes/no parsing of a free-form answer."""
    if text.find(".") != -1:
        text = text.split(".")[0]  # only the first sentence
    words = text.replace(",", "").split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


@dataclass(frozen=True)
class PopeMetrics:
    tp: int
    fp: int
    tn: int
    fn: int
    other: int  # predictions that are neither yes nor no (always 0 in the official variant)
    yes_ratio: float

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn + self.other

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.total

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp > 0 else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn > 0 else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _label(label: str) -> str:
    gt = label.lower().strip()
    if gt not in ("yes", "no"):
        raise ValueError(f"POPE labels must be yes or no, got {label!r}")
    return gt


def pope_metrics(
    predictions: Sequence[str], labels: Sequence[str], *, variant: PopeVariant = "official"
) -> PopeMetrics:
    """POPE metrics of free-form `predictions` against yes/no `labels`."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("POPE metrics need at least one prediction")
    gts = [_label(label) for label in labels]
    if variant == "official":
        preds = [pope_parse_answer(p) for p in predictions]
    elif variant == "lmms-eval":
        preds = [p.lower().strip() for p in predictions]
    else:
        raise ValueError(f"unknown POPE variant {variant!r}; expected 'official' or 'lmms-eval'")
    pairs = list(zip(preds, gts, strict=True))
    tp = sum(1 for p, g in pairs if p == "yes" and g == "yes")
    fp = sum(1 for p, g in pairs if p == "yes" and g == "no")
    tn = sum(1 for p, g in pairs if p == "no" and g == "no")
    fn = sum(1 for p, g in pairs if p == "no" and g == "yes")
    other = len(pairs) - tp - fp - tn - fn
    yes_source = preds if variant == "official" else gts
    yes_ratio = yes_source.count("yes") / len(yes_source)
    return PopeMetrics(tp=tp, fp=fp, tn=tn, fn=fn, other=other, yes_ratio=yes_ratio)


def pope_metrics_by_split(
    records: Iterable[Mapping[str, Any]], *, variant: PopeVariant = "official", split_key: str = "category"
) -> dict[str, PopeMetrics]:
    """`pope_metrics` per split; records need ``prediction``, ``answer`` and the split name under `split_key`
    (lmms-eval's POPE rows call it ``category``: adversarial / popular / random)."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for record in records:
        preds, labels = grouped.setdefault(record[split_key], ([], []))
        preds.append(record["prediction"])
        labels.append(record["answer"])
    return {split: pope_metrics(p, g, variant=variant) for split, (p, g) in grouped.items()}
