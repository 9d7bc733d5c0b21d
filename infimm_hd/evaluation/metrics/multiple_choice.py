"""Answer extraction and scoring for multiple-choice benchmarks: MMMU, ScienceQA(-IMG) and MMBench (CircularEval).

Why: these benchmarks score free-form generations, so the answer *parsing* is part of the metric. Each function
reproduces one official/reference implementation:

* MMMU: ``parse_multi_choice_response``, ``parse_open_response`` (with ``extract_numbers`` / ``normalize_str``),
  ``eval_multi_choice``, ``eval_open`` from the official MMMU ``eval/eval_utils.py`` (commit 51ce7f3e, the one
  lmms-eval cites). lmms-eval 0.7.3 (``tasks/_task_utils/mmmu_mcq_utils.py``) changed the letter parsing:
  ``f"{choice} "`` instead of ``f" {choice} "``, plus an extra ``f"{choice}."`` pass; ``variant="lmms-eval"``
  reproduces that. When nothing parses both pick ``random.choice(all_choices)``: the official seeds its module RNG
  once (``random.seed(42)`` at import) and draws in evaluation order, lmms-eval draws from the global ``random``
  (seeded by its ``--seed``, 0 by default). Here the RNG is an explicit ``random.Random``: pass one
  ``random.Random(42)`` shared over a whole run, in the official order, to reproduce the official draws.
* ScienceQA(-IMG): lmms-eval ``tasks/scienceqa/utils.py`` ``sqa_process_results`` (LLaVA's rule): exact
  case-insensitive letter, or ``"X. ..."`` with an upper-case first character.
* MMBench: the rule-based extraction of the MMBench evaluator (``can_infer_option`` / ``can_infer_text``, lmms-eval
  ``tasks/mmbench/mmbench_evals.py``) and CircularEval: a question (grouped by ``index % 1_000_000``; indices below
  1e6 are the originals) is correct only if every circular variant is. The official evaluator asks GPT to match
  answers the rules cannot parse; no GPT here: an unparsed answer is wrong unless a ``fallback`` extractor is given
  (e.g. lmms-eval's ``extract_mcq_answer``, which its ``mmbench_en_dev_static`` task uses).
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

MmmuVariant = Literal["official", "lmms-eval"]

# ----------------------------------------------------------------------------------------------------------- MMMU


def get_multi_choice_info(options: Sequence[str], start_chr: str = "A") -> tuple[dict[str, str], list[str]]:
    """Official ``get_multi_choice_info``: ``({"A": option0, ...}, ["A", "B", ...])``."""
    index2ans: dict[str, str] = {}
    all_choices: list[str] = []
    for i, option in enumerate(options):
        choice = chr(ord(start_chr) + i)
        index2ans[choice] = option
        all_choices.append(choice)
    return index2ans, all_choices


def _first_argmax(values: Sequence[int]) -> int:
    """``np.argmax``: the first index of the maximum."""
    return max(range(len(values)), key=values.__getitem__)


def parse_multi_choice_response(
    response: str,
    all_choices: Sequence[str],
    index2ans: Mapping[str, str],
    *,
    rng: random.Random | None = None,
    variant: MmmuVariant = "official",
) -> str:
    """The predicted option letter; the LAST occurrence wins when several letters (or option texts) appear.

    `rng` is used only when nothing parses; ``None`` means a fresh ``random.Random(42)`` (deterministic per call)."""
    if variant not in ("official", "lmms-eval"):
        raise ValueError(f"unknown MMMU variant {variant!r}; expected 'official' or 'lmms-eval'")
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "  # add space to avoid partial match

    index_ans = True
    ans_with_brack = False
    candidates: list[str] = []
    for choice in all_choices:  # (A) (B) (C) (D)
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True
    if not candidates:  # A B C D
        spaced = " {} " if variant == "official" else "{} "
        for choice in all_choices:
            if spaced.format(choice) in response:
                candidates.append(choice)
    if not candidates and variant == "lmms-eval":  # A. B. (lmms-eval only)
        for choice in all_choices:
            if f"{choice}." in response:
                candidates.append(choice)
    # Nothing yet and more than 5 tokens: look for the option texts.
    if not candidates and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False

    if not candidates:
        return (rng if rng is not None else random.Random(42)).choice(list(all_choices))
    if len(candidates) == 1:
        return candidates[0]
    if index_ans:
        pattern = "({})" if ans_with_brack else " {} "
        start_indexes = [response.rfind(pattern.format(can)) for can in candidates]
    else:
        start_indexes = [response.lower().rfind(index2ans[can].lower()) for can in candidates]
    return candidates[_first_argmax(start_indexes)]


def check_is_number(text: str) -> bool:
    """Official ``check_is_number``: ``float()`` of the text without commas succeeds (so ``"nan"``, ``"inf"``)."""
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[str | float]:
    """Official ``normalize_str``: numbers -> ``[round(float, 2)]``; other text -> lowercase, and a single character
    becomes ``[" x", "x "]`` to avoid trivial substring matches."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


_NUMBER_WITH_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUMBER_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUMBER_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def extract_numbers(text: str) -> list[str]:
    """Official ``extract_numbers``: comma-grouped, then scientific, then simple numbers (in that order)."""
    return _NUMBER_WITH_COMMAS.findall(text) + _NUMBER_SCIENTIFIC.findall(text) + _NUMBER_SIMPLE.findall(text)


_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = (":", ",", ".", "!", "?", ";", ":", "'")


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    # The look-ahead for a capital never matches after lower(): only newlines split (quirk kept).
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = list(_KEY_INDICATORS)
    key_responses = []
    for index, resp in enumerate(sub_responses):
        if index == len(sub_responses) - 1:  # the last one may be an equation; "=" then stays for good
            indicators.append("=")
        shortest = None  # the shortest tail after an indicator
        for indicator in indicators:
            if indicator in resp:
                tail = resp.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            key_responses.append(shortest)
    return key_responses or [response]


def parse_open_response(response: str) -> list[str | float]:
    """Official ``parse_open_response``: candidate answers (normalised strings and numbers).

    The official returns ``list(set(...))``; this keeps first-occurrence order instead (same elements, a
    deterministic order; ``eval_open`` does not depend on it)."""
    key_responses = _key_subresponses(response)
    pred_list: list[str] = list(key_responses)
    for resp in key_responses:
        pred_list.extend(extract_numbers(resp))
    normalized: list[str | float] = []
    for pred in pred_list:
        normalized.extend(normalize_str(pred))
    return list(dict.fromkeys(normalized))


def eval_multi_choice(gold: str | Sequence[str], pred: str) -> bool:
    """Official ``eval_multi_choice``: exact equality with the gold letter (or any of a list of gold letters)."""
    if isinstance(gold, str):
        return gold == pred
    return any(answer == pred for answer in gold)


def eval_open(gold: str | Sequence[str], preds: Iterable[str | float]) -> bool:
    """Official ``eval_open``: a string candidate is right if a normalised gold STRING is a substring of it; a number
    candidate is right if it is in the normalised gold list."""
    if isinstance(gold, str):
        norm_answers = normalize_str(gold)
    else:
        norm_answers = [norm for answer in gold for norm in normalize_str(answer)]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(ans, str) and ans in pred for ans in norm_answers):
                return True
        elif pred in norm_answers:
            return True
    return False


def mmmu_is_correct(
    prediction: str,
    answer: str | Sequence[str],
    question_type: str,
    options: Sequence[str] = (),
    *,
    rng: random.Random | None = None,
    variant: MmmuVariant = "official",
) -> bool:
    """Parse and judge one MMMU prediction (``question_type`` "multiple-choice", anything else is open)."""
    if question_type == "multiple-choice":
        index2ans, all_choices = get_multi_choice_info(options)
        return eval_multi_choice(
            answer, parse_multi_choice_response(prediction, all_choices, index2ans, rng=rng, variant=variant)
        )
    return eval_open(answer, parse_open_response(prediction))


# ------------------------------------------------------------------------------------------------------- ScienceQA


def scienceqa_match(prediction: str, answer_index: int, num_choices: int) -> float:
    """lmms-eval ``sqa_process_results``: 1.0 if the stripped prediction is the answer letter (any case), or starts
    with an upper-case character and a period (``"B. ..."``) and that character is the letter; else 0.0."""
    if not 0 <= answer_index < num_choices:
        raise ValueError(f"answer_index {answer_index} is outside the {num_choices} choices")
    target = chr(ord("A") + answer_index).lower()
    pred = prediction.strip()
    if pred.lower() == target:
        return 1.0
    if len(pred) >= 2 and pred[0].isupper() and pred[1] == ".":
        return 1.0 if pred[0].lower() == target else 0.0
    return 0.0


# --------------------------------------------------------------------------------------------------------- MMBench

MMBENCH_CIRCULAR_MODULUS = 1_000_000
_API_FAILURE = "Failed to obtain answer via API"
# (prefix, suffix) around a letter, tried in this order.
_OPTION_AFFIXES = (
    ("", "."),
    ("", ","),
    ("", ":"),
    ("", ")"),
    ("", ")."),
    ("(", ")"),
    ("(", ")."),
    (":", ""),
    (":", ","),
    (":", "."),
    (":", ")"),
    (":", ")."),
)


def mmbench_can_infer_option(answer: str, num_choice: int = 5) -> str | None:
    """MMBench ``can_infer_option``: a letter among the first `num_choice` that appears exactly once as a bare token,
    or else exactly once with one of the affixes (``A.``, ``(A)``, ``:A`` ...). A bare ``A`` in an answer of more
    than three tokens is suspected to be the article and skipped."""
    choices = string.ascii_uppercase[:num_choice]
    if _API_FAILURE in answer:
        return None
    splits = [x.strip() for x in answer.split()]

    def count(prefix: str = "", suffix: str = "") -> int:
        return sum(1 for c in choices if prefix + c + suffix in splits)

    if count() == 1 and not ("A" in splits and len(splits) > 3):
        for ch in choices:
            if ch in splits:
                return ch
    for prefix, suffix in _OPTION_AFFIXES:
        if count(prefix, suffix) == 1:
            for ch in choices:
                if prefix + ch + suffix in splits:
                    return ch
    return None


def _is_missing(value: Any) -> bool:
    """``pd.isna`` for the values an options column holds: None or a float NaN (the string "nan" is NOT missing)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def mmbench_choices(record: Mapping[str, Any]) -> dict[str, str]:
    """MMBench ``build_choices``: the options among A-D that are present (E is never offered to the text match)."""
    return {ch: record[ch] for ch in "ABCD" if ch in record and not _is_missing(record[ch])}


def mmbench_can_infer_text(answer: str, choices: Mapping[str, Any]) -> str | None:
    """MMBench ``can_infer_text``: the single option whose lowercased text is a substring of the lowercased answer."""
    answer = answer.lower()
    cands = [k for k, text in choices.items() if str(text).lower() in answer]
    return cands[0] if len(cands) == 1 else None


def mmbench_extract_answer(prediction: str, choices: Mapping[str, Any]) -> str | None:
    """MMBench ``can_infer``: the option letter the rules find, or None (where the official asks GPT)."""
    return mmbench_can_infer_option(prediction) or mmbench_can_infer_text(prediction, choices)


Fallback = Callable[[str, list[str]], "str | None"]


def circular_results(records: Iterable[Mapping[str, Any]], *, fallback: Fallback | None = None) -> dict[int, bool]:
    """CircularEval per original question: ``{index: every variant answered correctly}``.

    Each record needs ``index`` (int), ``answer`` (letter), ``prediction`` (text) and its options under ``"A"`` ..
    ``"D"``. Variants are the records with ``index % 1_000_000 == original index``; variants whose original is
    absent are ignored, as in the official evaluator. `fallback(prediction, sorted option letters)` is consulted
    only for predictions the rules cannot parse."""
    records = list(records)
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(int(record["index"]) % MMBENCH_CIRCULAR_MODULUS, []).append(record)
    results: dict[int, bool] = {}
    for record in sorted(records, key=lambda r: int(r["index"])):
        index = int(record["index"])
        if index >= MMBENCH_CIRCULAR_MODULUS or index in results:
            continue
        results[index] = all(_variant_correct(variant, fallback) for variant in groups[index])
    return results


def _variant_correct(record: Mapping[str, Any], fallback: Fallback | None) -> bool:
    prediction = str(record["prediction"])
    choices = mmbench_choices(record)
    pred = mmbench_extract_answer(prediction, choices)
    if pred is None and fallback is not None:
        pred = fallback(prediction, sorted(choices)) or None
    return pred is not None and pred == record["answer"]


def circular_accuracy(records: Iterable[Mapping[str, Any]], *, fallback: Fallback | None = None) -> float:
    """MMBench CircularEval accuracy in [0, 1]: the fraction of original questions with all variants correct."""
    results = circular_results(records, fallback=fallback)
    if not results:
        raise ValueError("circular_accuracy needs at least one original question (index < 1_000_000)")
    return sum(results.values()) / len(results)
