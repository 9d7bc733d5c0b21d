"""`mmmu`: MMMU validation (college-level questions over 30 subjects, up to 7 images each), official MMMU scoring.

Official layout: the MMMU release *is* the hub dataset `MMMU/MMMU` (also what lmms-eval reads), one folder per
subject with one parquet per split:

    <folder>/<Subject>/validation-00000-of-00001.parquet   (also dev-*, test-*; only validation-* is read)

columns id ("validation_<Subject>_<n>"), question, options (a Python-literal list, "[]" for open questions),
explanation, image_1 .. image_7 ({"bytes", "path"} or null), img_type, answer (a letter, or the open answer),
topic_difficulty, question_type ("multiple-choice" | "open"), subfield. `path` may also be one .parquet file.

Prompt: lmms-eval 0.7.3 `construct_prompt` with the mmmu_val kwargs: multiple choice "<question>\\n" + "A. opt" lines
+ "\\n\\nAnswer with the option's letter from the given choices directly."; open "<question>\\n\\nAnswer the question
using a single word or phrase.". (The MMMU repository's own prompt writes options as "(A) opt"; lmms-eval 0.7.3,
the reference here, writes "A. opt".) The `<image k>` tags stay in the text as lmms-eval's `doc_to_text` leaves
them. Images: lmms-eval passes the images the prompt names (question and options) before the text, sorted by number;
here each named image is an image part placed just before the first occurrence of its tag, in the order the tags
first appear (so the model sees each image where the text first refers to it, and the tag after it still names
it; the same images, and the same order whenever the text names them in number order, as nearly all questions
do); an image the text does not name is not shown, as in lmms-eval. Score: the official MMMU rules
(`parse_multi_choice_response` with index2ans + `eval_multi_choice`; `parse_open_response` + `eval_open`).
Summary: overall, per subject and per discipline ("Art and Design", "Business", ...: the official
DOMAIN_CAT2SUB_CAT grouping), instance-weighted as
`calculate_ins_level_acc`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import LETTER_ANSWER, SHORT_ANSWER, Benchmark, grouped_means, register
from ..metrics.multiple_choice import (
    eval_multi_choice,
    eval_open,
    parse_multi_choice_response,
    parse_open_response,
)
from ..samples import BenchmarkDataError, EvalSample
from .release_files import hub_files, hub_rows, inline_image

FIELDS = ("id", "question", "options", "answer", "question_type")
IMAGE_TAG = re.compile(r"<image (\d+)>")
MC_PROMPT = LETTER_ANSWER.strip()
OPEN_PROMPT = SHORT_ANSWER.strip()
DISCIPLINES = {  # the official MMMU grouping of subjects (eval_utils.py DOMAIN_CAT2SUB_CAT)
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": (
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ),  # fmt: skip
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ),  # fmt: skip
}
DISCIPLINE_OF = {subject: d for d, subjects in DISCIPLINES.items() for subject in subjects}


def subject_of(qid: str) -> str:
    """ "validation_Art_Theory_12" -> "Art_Theory" (the id's middle, as the official evaluator splits it)."""
    match = re.fullmatch(r"[^_]+_(.+)_\d+", qid)
    return match.group(1) if match else qid


def literal_list(text: Any, source: Path, where: str, field_name: str) -> list[str]:
    """The hub's `options` cell: a Python-literal list in a string (as lmms-eval reads it with ast.literal_eval)."""
    if isinstance(text, list):
        return [str(x) for x in text]
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, list):
        raise BenchmarkDataError(source, f"{where} field {field_name!r} is {text!r}, not a Python-literal list")
    return [str(x) for x in value]


def gold_answers(answer: Any) -> tuple[str, ...]:
    """The accepted answers: a few open answers are published as a list literal ("['24/7', '3.43']"), which the
    official evaluator treats as alternatives; anything else is the one answer."""
    if isinstance(answer, str) and answer.startswith("["):
        try:
            value = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list) and value:
            return tuple(str(x) for x in value)
    return (str(answer),)


def prompt_text(question: str, question_type: str, options: Sequence[str]) -> str:
    if question_type == "multiple-choice":
        lines = "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(options))
        return f"{question}\n{lines}\n\n{MC_PROMPT}"
    return f"{question}\n\n{OPEN_PROMPT}"


def first_tags(text: str) -> list[tuple[int, int]]:
    """(image number, position of its first tag) for each image the text names, in order of first appearance."""
    seen: dict[int, int] = {}
    for match in IMAGE_TAG.finditer(text):
        seen.setdefault(int(match.group(1)), match.start())
    return list(seen.items())


def make_sample(row: dict[str, Any], source: Path, where: str) -> EvalSample:
    qid, qtype = str(row["id"]), str(row["question_type"])
    options = literal_list(row["options"], source, where, "options") if qtype == "multiple-choice" else []
    text = prompt_text(str(row["question"]), qtype, options)
    images = []
    for number, _ in first_tags(text):
        column = f"image_{number}"
        if row.get(column) is None:
            raise BenchmarkDataError(source, f"{where} names <image {number}> but field {column!r} holds no image")
        images.append(inline_image(row[column], source, where, column))
    subject = subject_of(qid)
    meta = {
        "question_type": qtype,
        "subject": subject,
        "discipline": DISCIPLINE_OF.get(subject, "other"),
        "subfield": row.get("subfield"),
    }
    return EvalSample(qid, str(row["question"]), tuple(images), gold_answers(row["answer"]), tuple(options), meta)


def load(path: Path) -> list[EvalSample]:
    """A validation parquet, or a folder holding <Subject>/validation-*.parquet (the hub snapshot)."""
    files = hub_files(path, "validation")
    if not files:
        raise BenchmarkDataError(path, "holds no validation-*.parquet (expected MMMU/<Subject>/validation-*.parquet)")
    return [make_sample(row, file, f"row {n}") for file, n, row in hub_rows(files, FIELDS)]


def prompt(sample: EvalSample) -> list[dict[str, Any]]:
    """The prompt text with an image part before the first tag of each image it names (see the module docstring)."""
    text = prompt_text(sample.question, sample.meta["question_type"], sample.choices)
    parts, start = [], 0
    for _, position in first_tags(text):
        if text[start:position]:
            parts.append({"type": "text", "text": text[start:position]})
        parts.append({"type": "image"})
        start = position
    return parts + [{"type": "text", "text": text[start:]}]


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    gold = sample.references[0] if len(sample.references) == 1 else list(sample.references)
    if sample.meta["question_type"] == "multiple-choice":
        letters = [chr(ord("A") + i) for i in range(len(sample.choices))]
        parsed = parse_multi_choice_response(prediction, letters, dict(zip(letters, sample.choices, strict=True)))
        return {"accuracy": float(eval_multi_choice(gold, parsed))}
    return {"accuracy": float(eval_open(gold, parse_open_response(prediction)))}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Overall and per subject / discipline / question type (instance-level means, keys "accuracy/<field>/<v>")."""
    return grouped_means(records, "accuracy", ("discipline", "subject", "question_type"))


register(
    Benchmark(
        name="mmmu",
        metric="accuracy",
        load=load,
        prompt=prompt,
        score=score,
        summarize=summarize,
        layouts="the hub snapshot MMMU/MMMU: a folder of <Subject>/validation-*.parquet, or one such file",
        max_new_tokens=32,
        instruction=f"\n\n{MC_PROMPT} | \n\n{OPEN_PROMPT}",
        paper="Table 4: MMMU val 37.6 (13B)",
    )
)
