"""`mmbench`: MMBench (English dev) single-choice questions, scored with CircularEval.

Official layout (github.com/open-compass/MMBench, the VLMEvalKit download `MMBench_DEV_EN.tsv`): one tab-separated
file, a header row, then one row per question with the columns

    index  question  hint  A  B  C  D  answer  category  image  source  l2-category  comment  split

`image` is the base64-encoded image, or (VLMEvalKit's TSVs store a repeated image once) the `index` of the row that
holds it; `hint` and unused options are empty (or "nan"). CircularEval: a question whose options are rotated is
repeated with `index + k * 1_000_000`, and a question counts as solved only if every rotation is answered
correctly (grouping by `index % 1_000_000`, as `MMBench_Evaluator.eval_result` of lmms-eval and the official
evaluator do). lmms-eval's hub copy (`lmms-lab/MMBench`, config "en", `en/dev-*.parquet`) is read too: the same
columns, `L2-category` capitalised, `image` as {"bytes", "path"}.

Prompt: lmms-eval 0.7.3 `mmbench_doc_to_text` with the mmbench_en kwargs: "<hint> <question> There are several
options:\\nA. ..\\nB. .." (no hint: "<question> There are several options:..."), then "\\n" + the letter post_prompt
(so a blank line before "Answer with the option's letter..."). Score: the option the answer names, found as
lmms-eval's static evaluator does (a lone letter, or exactly one option text quoted), compared with `answer`.
Summary: circular accuracy overall, per category and per l2-category; "vanilla_accuracy" is the plain accuracy on
the questions as first asked (index < 1_000_000).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..benchmark import LETTER_ANSWER, Benchmark, image_then_text, register
from ..metrics.multiple_choice import mmbench_extract_answer
from ..samples import BenchmarkDataError, EvalSample, require
from .release_files import hub_files, hub_rows, inline_image

TSV = "MMBench_DEV_EN.tsv"
FIELDS = ("index", "question", "hint", "A", "B", "answer", "category", "image")
OPTION_LETTERS = "ABCDE"
CIRCULAR = 1_000_000
OPTIONS_HEADER = "There are several options:"  # mmbench.yaml metadata.sys_prompt


def present(value: Any) -> bool:
    """A filled cell: not None, not empty, not the "nan" the TSVs (and pandas) write for an empty one."""
    return value is not None and value == value and str(value).strip() not in ("", "nan")


def make_sample(row: dict[str, Any], image: bytes, source: Path, where: str) -> EvalSample:
    try:
        index = int(row["index"])
    except (TypeError, ValueError):
        raise BenchmarkDataError(source, f"{where} field 'index' is {row['index']!r}, not an integer") from None
    choices = []
    for letter in OPTION_LETTERS:  # options in letter order up to the first empty one (the evaluator's rule)
        if letter not in row or not present(row[letter]):
            break
        choices.append(str(row[letter]))
    answer = str(row["answer"]).strip()
    if answer not in OPTION_LETTERS[: len(choices)]:
        raise BenchmarkDataError(source, f"{where} field 'answer' is {answer!r}, not one of its option letters")
    meta = {
        "hint": str(row["hint"]) if present(row["hint"]) else "",
        "category": row["category"],
        "l2_category": row.get("l2-category", row.get("L2-category")),
        "group": index % CIRCULAR,
        "circular": index >= CIRCULAR,
    }
    return EvalSample(str(index), str(row["question"]), (image,), (answer,), tuple(choices), meta)


def tsv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    csv.field_size_limit(sys.maxsize)  # a base64 image is one (large) cell
    try:
        with path.open(newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f, delimiter="\t"), 2)
    except FileNotFoundError:
        raise BenchmarkDataError(path, "does not exist") from None


def load_tsv(path: Path) -> list[EvalSample]:
    rows = []
    for number, row in tsv_rows(path):
        require(row, FIELDS, path, f"line {number}")
        rows.append((number, row))
    by_index = {row["index"]: row["image"] for _, row in rows}
    decoded: dict[bytes, bytes] = {}  # one copy of an image however many rotations repeat it
    samples = []
    for number, row in rows:
        text = row["image"]
        if len(text) < 64 and text in by_index and by_index[text] != text:
            text = by_index[text]  # a reference to the row that holds the image
        try:
            image = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            image = b""
        if not image:
            raise BenchmarkDataError(path, f"line {number} field 'image' holds no base64 image")
        image = decoded.setdefault(hashlib.sha1(image).digest(), image)
        samples.append(make_sample(row, image, path, f"line {number}"))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    for file, n, row in hub_rows(files, FIELDS):
        samples.append(make_sample(row, inline_image(row["image"], file, f"row {n}"), file, f"row {n}"))
    return samples


def load(path: Path) -> list[EvalSample]:
    """The official TSV (or a folder holding MMBench_DEV_EN.tsv); else the hub parquet copy."""
    if path.suffix == ".tsv":
        return load_tsv(path)
    if (path / TSV).is_file():
        return load_tsv(path / TSV)
    files = hub_files(path, "dev")
    return load_hub(files) if files else load_tsv(path / TSV)


def prompt_text(sample: EvalSample) -> str:
    options = "\n".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(sample.choices))
    query = f"{sample.question} {OPTIONS_HEADER}\n{options}"
    if sample.meta["hint"]:
        query = f"{sample.meta['hint']} {query}"
    return f"{query}\n{LETTER_ANSWER}"


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    letter = mmbench_extract_answer(prediction, dict(zip(OPTION_LETTERS, sample.choices, strict=False)))
    return {"correct": float(letter == sample.references[0])}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Circular accuracy (every rotation of a question right) overall and per category / l2-category, plus the
    accuracy of the first-asked rows alone; in percent."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["meta"]["group"]].append(r)
    solved = {g: all(r["scores"]["correct"] == 1.0 for r in rows) for g, rows in groups.items()}
    out = {"circular_accuracy": 100.0 * sum(solved.values()) / len(solved) if solved else float("nan")}
    for field in ("category", "l2_category"):
        by_value: dict[str, list[bool]] = defaultdict(list)
        for g, rows in groups.items():
            by_value[str(rows[0]["meta"][field])].append(solved[g])
        out |= {f"circular_accuracy/{field}/{v}": 100.0 * sum(s) / len(s) for v, s in sorted(by_value.items())}
    first = [r["scores"]["correct"] for r in records if not r["meta"]["circular"]]
    out["vanilla_accuracy"] = 100.0 * sum(first) / len(first) if first else float("nan")
    out["num_questions"] = float(len(groups))
    return out


register(
    Benchmark(
        name="mmbench",
        metric="circular_accuracy",
        load=load,
        prompt=lambda s: image_then_text(s, prompt_text(s)),
        score=score,
        summarize=summarize,
        layouts=f"{TSV} (or its folder): index, question, hint, A..D, answer, category, image (base64), l2-category;"
        " or the lmms-eval hub copy: a .parquet file or a folder of dev-*.parquet",
        max_new_tokens=16,
        instruction="\n" + LETTER_ANSWER,
        paper="Table 4: MMB 71.6 (13B)",
    )
)
