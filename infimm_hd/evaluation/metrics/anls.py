"""ANLS (Average Normalized Levenshtein Similarity), the DocVQA / InfographicVQA metric.

Reproduces the official DocVQA (RRC) scorer as ported by Qwen-VL ``eval_mm/infographicsvqa_eval.py`` and shipped as
``lmms_eval.api.metrics.anls``:

* both strings are stripped, lowercased and whitespace-collapsed (``" ".join(s.strip().lower().split())``) before the
  edit distance;
* the distance is normalised by ``max(len(answer.upper()), len(prediction.upper()))`` of the RAW strings (not the
  collapsed ones, so extra spaces enlarge the denominator; and ``.upper()`` can change the length, e.g.
  ``"ß".upper() == "SS"``); when that length is 0 the normalised distance is 0;
* per question: ``1 - min over answers of NL``; a result below the threshold becomes 0. Note the comparison is on
  the similarity (``1 - NL < 0.5`` -> 0), so NL exactly 0.5 keeps 0.5.

The dataset score is the mean over questions. A bare string is accepted as a single answer (lmms-eval would iterate
its characters).
"""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein_distance(a: str, b: str) -> int:
    """Plain edit distance (unit insert/delete/substitute), two-row DP.

    Own implementation rather than a library: it is a dozen lines and no dependency is worth that; it computes
    the same value as lmms-eval's ``levenshtein_distance``."""
    if len(a) > len(b):
        a, b = b, a
    previous = list(range(len(a) + 1))
    for i, cb in enumerate(b, start=1):
        current = [i]
        for j, ca in enumerate(a, start=1):
            cost = 0 if ca == cb else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def normalized_levenshtein(prediction: str, answer: str) -> float:
    """The NL of the official scorer: distance of the collapsed strings over the longer RAW length."""
    length = max(len(answer.upper()), len(prediction.upper()))
    if length == 0:
        return 0.0
    return float(levenshtein_distance(_collapse(answer), _collapse(prediction))) / float(length)


def anls(prediction: str, answers: str | Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one prediction against its accepted answers, in [0, 1]."""
    if isinstance(answers, str):
        answers = [answers]
    if len(answers) == 0:
        raise ValueError("ANLS needs at least one ground-truth answer; got an empty answers list")
    score = 1 - min(normalized_levenshtein(prediction, answer) for answer in answers)
    return 0.0 if score < threshold else score
