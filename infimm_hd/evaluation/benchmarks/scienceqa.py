"""`scienceqa-img`: ScienceQA test questions that come with an image (the "IMG" column of the paper's Table 2),
letter accuracy.

Official layout (github.com/lupantech/ScienceQA, `data/scienceqa/`):

    <folder>/problems.json      {pid: {"question", "choices": [str], "answer": int, "hint", "image": "image.png" | null,
                                       "task", "grade": "grade1".."grade12", "subject", "topic", "category", "skill",
                                       "lecture", "solution", "split"}}
    <folder>/pid_splits.json    {"train": [pid], "val": [pid], "test": [pid], "minival": [...], ...}
    <folder>/images/test/<pid>/image.png

The IMG subset is every pid of `pid_splits["test"]` whose problem has an `image` (2,017 of 4,241). lmms-eval's hub
copies (`derek-thomas/ScienceQA`, and `lmms-lab/ScienceQA` ScienceQA-IMG, its image rows) are read too: a
`.parquet` file or a folder of `test-*.parquet` with the same fields, `image` as {"bytes", "path"} (null for
text-only rows, which are skipped) and no pid: there the qid is the row's number in the file(s).

Prompt: lmms-eval 0.7.3 `sqa_doc_to_text` (format "default"): "Context: <hint>\\n" when there is a hint, the question,
"\\n", the options as "A. text" lines, then the letter post_prompt. Score: `sqa_process_results` (the prediction is
the letter, or starts with "<letter>."). The summary adds the official ScienceQA breakdowns that make sense on the
IMG subset: per subject (NAT / SOC / LAN), grade band (G1-6 / G7-12) and whether a text context is given (TXT).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import LETTER_ANSWER, Benchmark, grouped_means, image_then_text, register
from ..metrics.multiple_choice import scienceqa_match
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import hub_files, hub_rows, inline_image, read_json

PROBLEMS = "problems.json"
SPLITS = "pid_splits.json"
FIELDS = ("question", "choices", "answer", "hint", "image", "subject", "grade")
LETTERS = "ABCDEFGHIJ"


def grade_band(grade: str) -> str:
    """ScienceQA's two grade groups: "grade1".."grade6" -> "G1-6", "grade7".."grade12" -> "G7-12"."""
    number = int("".join(c for c in grade if c.isdigit()) or 0)
    return "G1-6" if number <= 6 else "G7-12"


def make_sample(qid: str, problem: dict[str, Any], image: str | bytes, source: Path, where: str) -> EvalSample:
    choices = tuple(str(c) for c in problem["choices"])
    answer = problem["answer"]
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise BenchmarkDataError(source, f"{where} field 'answer' is {answer!r}, not an index into its choices")
    hint = problem["hint"] or ""
    meta = {
        "hint": hint,
        "subject": problem["subject"],
        "grade": grade_band(str(problem["grade"])),
        "context": "TXT" if hint else "none",
    }
    return EvalSample(qid, problem["question"], (image,), (LETTERS[answer],), choices, meta)


def load_official(folder: Path) -> list[EvalSample]:
    problems_file, splits_file = folder / PROBLEMS, folder / SPLITS
    problems, splits = read_json(problems_file), read_json(splits_file)
    require(splits, ("test",), splits_file, "the top level")
    samples = []
    for pid in splits["test"]:
        pid = str(pid)
        if pid not in problems:
            raise BenchmarkDataError(problems_file, f"has no problem {pid!r} (listed in {SPLITS} field 'test')")
        problem = problems[pid]
        require(problem, FIELDS, problems_file, f"problem {pid!r}")
        if not problem["image"]:
            continue  # a text-only question: not in the IMG subset
        image = existing_image(folder / "images" / "test" / pid / problem["image"], problems_file, "image")
        samples.append(make_sample(pid, problem, image, problems_file, f"problem {pid!r}"))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    for number, (file, n, row) in enumerate(hub_rows(files, FIELDS)):
        if row["image"] is None:
            continue
        image = inline_image(row["image"], file, f"row {n}")
        samples.append(make_sample(str(number), row, image, file, f"row {n}"))
    return samples


def load(path: Path) -> list[EvalSample]:
    """The official folder (or its problems.json); else the hub parquet copy (a file or a folder of test-*)."""
    folder = path.parent if path.name == PROBLEMS else path
    if (folder / PROBLEMS).is_file():
        return load_official(folder)
    files = hub_files(path, "test")
    return load_hub(files) if files else load_official(folder)  # the latter reports the missing problems.json


def prompt_text(sample: EvalSample) -> str:
    context = f"Context: {sample.meta['hint']}\n" if sample.meta["hint"] else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(sample.choices))
    return f"{context}{sample.question}\n{options}{LETTER_ANSWER}"


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"accuracy": float(scienceqa_match(prediction, LETTERS.index(sample.references[0]), len(sample.choices)))}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Overall, and per subject, grade band and text context (keys "accuracy/<field>/<value>")."""
    return grouped_means(records, "accuracy", ("subject", "grade", "context"))


register(
    Benchmark(
        name="scienceqa-img",
        metric="accuracy",
        load=load,
        prompt=lambda s: image_then_text(s, prompt_text(s)),
        score=score,
        summarize=summarize,
        layouts=f"a folder with {PROBLEMS}, {SPLITS} and images/test/<pid>/image.png (the IMG subset of the test "
        "split is read); or the hub copy (derek-thomas/ScienceQA, lmms-lab/ScienceQA-IMG): a .parquet file or a "
        "folder of test-*.parquet",
        max_new_tokens=16,
        instruction=LETTER_ANSWER,
        paper="Table 2: SQA-img 83.6 (13B)",
    )
)
