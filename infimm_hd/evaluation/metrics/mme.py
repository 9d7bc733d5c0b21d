"""MME scores: per-subtask ``100 * acc + 100 * acc+``, perception = sum of the 10 perception subtasks, cognition =
sum of the 4 cognition subtasks (max 2000 and 800).

Why: MME's headline numbers are these sums, and acc+ (both questions about an image right) is what makes them
differ from plain accuracy. Reproduces the official MME ``eval_tool/calculation.py`` (``calculate_metrics``):
``acc`` is per question, ``acc_plus`` per image (each image has exactly two yes/no questions), subtask names and
grouping as its ``eval_type_dict``. Yes/no parsing comes in two variants:

* ``"official"``: calculation.py ``parse_pred_ans`` after its ``lower()``: exactly "yes"/"no", else "yes" or "no"
  inside the first 4 characters ("yes" tested first), else "other" (no strip: ``"  yes"`` is "other");
* ``"lmms-eval"``: lmms-eval ``tasks/mme/utils.py`` ``parse_pred_ans`` (from Otter): ``lower().strip()``, all ``.``
  removed, a lone ``"y"``/``"n"`` accepted, then the same 4-character prefix rule.

calculation.py reads each prediction as the last tab-separated field of a line, so it keeps a trailing newline; that
never changes the parse (a newline cannot complete "yes" or "no"), so predictions are taken as given here.
Subtasks missing from the records are left out of the sums (lmms-eval does the same; the official script needs all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

PERCEPTION_SUBTASKS: tuple[str, ...] = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION_SUBTASKS: tuple[str, ...] = (
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
)
MmeVariant = Literal["official", "lmms-eval"]
YesNoOther = Literal["yes", "no", "other"]


def _prefix_rule(pred: str) -> YesNoOther:
    prefix = pred[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def _exact_or_prefix(pred: str) -> YesNoOther:
    if pred == "yes":
        return "yes"
    if pred == "no":
        return "no"
    return _prefix_rule(pred)


def parse_pred_ans(prediction: str, variant: MmeVariant = "official") -> YesNoOther:
    """The yes/no/other label of a free-form MME prediction."""
    if variant == "official":
        return _exact_or_prefix(prediction.lower())
    if variant == "lmms-eval":
        pred = prediction.lower().strip().replace(".", "")
        if len(pred) == 1:
            return "yes" if pred == "y" else "no" if pred == "n" else "other"
        return _exact_or_prefix(pred)
    raise ValueError(f"unknown MME variant {variant!r}; expected 'official' or 'lmms-eval'")


def _ground_truth(answer: str, variant: MmeVariant) -> str:
    gt = answer.lower() if variant == "official" else answer.lower().strip().replace(".", "")
    if gt not in ("yes", "no"):
        raise ValueError(f"MME ground-truth answers must be yes or no, got {answer!r}")
    return gt


@dataclass(frozen=True)
class MmeSubtaskScore:
    acc: float  # fraction of questions right
    acc_plus: float  # fraction of images with both questions right
    num_images: int

    @property
    def score(self) -> float:
        """``100 * acc + 100 * acc+`` (max 200), summed in calculation.py's order."""
        return self.acc * 100 + self.acc_plus * 100


@dataclass(frozen=True)
class MmeScores:
    subtasks: dict[str, MmeSubtaskScore]

    def _sum(self, names: tuple[str, ...]) -> float:
        total = 0.0
        for name in names:
            if name in self.subtasks:
                total += self.subtasks[name].score
        return total

    @property
    def perception(self) -> float:
        return self._sum(PERCEPTION_SUBTASKS)

    @property
    def cognition(self) -> float:
        return self._sum(COGNITION_SUBTASKS)

    @property
    def total(self) -> float:
        return self.perception + self.cognition


def mme_scores(
    records: Iterable[Mapping[str, Any]], *, variant: MmeVariant = "official", image_key: str = "question_id"
) -> MmeScores:
    """Score MME predictions.

    Each record needs ``category`` (a subtask name as the official lists it), ``answer`` ("Yes"/"No"),
    ``prediction`` and the image identifier under `image_key` (lmms-eval's MME rows call the image path
    ``question_id``). Every image must have exactly two questions."""
    known = set(PERCEPTION_SUBTASKS) | set(COGNITION_SUBTASKS)
    per_image: dict[str, dict[Any, list[bool]]] = {}
    for record in records:
        category = record["category"]
        if category not in known:
            raise ValueError(f"unknown MME subtask {category!r}; expected one of {sorted(known)}")
        correct = parse_pred_ans(record["prediction"], variant) == _ground_truth(record["answer"], variant)
        per_image.setdefault(category, {}).setdefault(record[image_key], []).append(correct)
    subtasks = {}
    for category, images in per_image.items():
        for image, marks in images.items():
            if len(marks) != 2:
                raise ValueError(f"MME pairs two questions per image; {category}/{image} has {len(marks)}")
        num_questions = 2 * len(images)
        acc = sum(sum(marks) for marks in images.values()) / num_questions
        acc_plus = sum(1 for marks in images.values() if all(marks)) / len(images)
        subtasks[category] = MmeSubtaskScore(acc=acc, acc_plus=acc_plus, num_images=len(images))
    return MmeScores(subtasks=subtasks)
