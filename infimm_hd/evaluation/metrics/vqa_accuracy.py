"""VQA accuracy: ``min(#humans among the other answers who gave the prediction / 3, 1)``, averaged over the
leave-one-out subsets of the ground-truth answers.

Why: this is the VQAv2 / OK-VQA / TextVQA / VizWiz metric, and the three implementations in use normalise
differently, so the mode is explicit:

* ``"evalai"`` (default): EvalAI / mmf ``EvalAIAnswerProcessor.__call__`` on the prediction and on every answer, as
  lmms-eval's ``textvqa_process_results`` and ``ok_vqa_process_results`` do;
* ``"vqa-script"``: GT-Vision-Lab ``vqaEval.py`` ``VQAEval.evaluate`` exactly: ``\\n``/``\\t``/strip cleanup always,
  then punctuation + digit/article processing of the answers AND the prediction only when the cleaned answers are
  not all identical (``len(set(gtAnswers)) > 1``); so ten ``"yes"`` and the prediction ``"Yes"`` score 0;
* ``"lmms-vqav2"``: lmms-eval's ``vqav2_process_results`` (tasks/vqav2/utils.py): the cleanup, then ALWAYS
  ``process_punctuation`` (with the EvalAI comma regex) + ``process_digit_article``, and no ``word_tokenize``. It
  differs from both: unlike "vqa-script" it normalises even when all answers agree, unlike "evalai" it keeps ``?``
  and ``,`` for the punctuation rules and does not split ``'s``.

Leave-one-out: the official scripts drop ``item != gtAnsDatum`` from a list of answer dicts, which removes exactly one
entry because each dict has its own ``answer_id``; with plain strings we drop by index. Any number of answers works
(with one answer every subset is empty, so the accuracy is 0). The mean is ``sum / len`` as in vqaEval.py
(lmms-eval uses ``statistics.mean``, which can differ in the last bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .answer_normalization import (
    COMMA_STRIP_EVALAI,
    clean_whitespace,
    evalai_normalize,
    process_digit_article,
    process_punctuation,
    vqa_script_normalize,
)

VqaNormalization = Literal["evalai", "vqa-script", "lmms-vqav2"]


def _normalized(prediction: str, answers: list[str], normalization: VqaNormalization) -> tuple[str, list[str]]:
    if normalization == "evalai":
        return evalai_normalize(prediction), [evalai_normalize(a) for a in answers]
    if normalization == "vqa-script":
        gts = [clean_whitespace(a) for a in answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            return vqa_script_normalize(pred), [vqa_script_normalize(a) for a in gts]
        return pred, gts
    if normalization == "lmms-vqav2":

        def norm(text: str) -> str:
            return process_digit_article(process_punctuation(clean_whitespace(text), COMMA_STRIP_EVALAI))

        return norm(prediction), [norm(a) for a in answers]
    raise ValueError(f"unknown VQA normalization {normalization!r}; expected 'evalai', 'vqa-script' or 'lmms-vqav2'")


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The averaging step on already-normalised strings: ``mean_i min(1, #{j != i: answers[j] == prediction} / 3)``."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer; got an empty answers list")
    accs = []
    for i in range(len(answers)):
        matching = sum(1 for j, answer in enumerate(answers) if j != i and answer == prediction)
        accs.append(min(1, float(matching) / 3))
    return float(sum(accs)) / len(accs)


def vqa_accuracy(prediction: str, answers: Sequence[str], normalization: VqaNormalization = "evalai") -> float:
    """VQA accuracy of one prediction against the human answers (usually 10), in [0, 1]."""
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of answer strings, not a single string")
    answers = list(answers)
    if not answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer; got an empty answers list")
    pred, gts = _normalized(prediction, answers, normalization)
    return leave_one_out_accuracy(pred, gts)
