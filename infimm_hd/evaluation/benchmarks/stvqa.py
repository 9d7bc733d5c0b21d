"""`stvqa`: scene-text questions (ST-VQA, Biten et al. ICCV 2019, task 3 "open dictionary"), scored by ANLS.

Official layout (rrc.cvc.uab.es/?ch=11 downloads):

    <folder>/train_task_3.json   {"dataset_name": "ST-VQA", "data": [{"question_id", "question", "answers",
                                  "file_path": "<source>/<name>.jpg", "file_name", "set_name", ...}]}
    <folder>/train_images/<file_path>          (test: test_task_3.json and test_task3_images/)

`path` is the JSON file or its folder (train_task_3.json, else test_task_3.json). Only questions with answers can
be scored here: the test JSON and lmms-eval's hub copy `lmms-lab/ST-VQA` (the test split) have none, because the
test answers are scored by the RRC server; a parquet with an `answers` column (`test-*.parquet` naming) is read
like the hub copy.

Prompt: lmms-eval 0.7.3 `stvqa_doc_to_text`: the question + the short-answer post_prompt. Score: ANLS (threshold
0.5), the challenge's metric. The summary adds ANLS per source dataset (the first folder of `file_path`: coco-text,
visual7w, imagenet, ...), the collections ST-VQA was drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, grouped_means, image_then_text, register
from ..metrics.anls import anls
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import first_existing, hub_files, hub_rows, inline_image, read_json

FILES = ("train_task_3.json", "test_task_3.json")


def _image_folder(file: Path) -> Path:
    """`train_images/` for train_task_3.json, `test_task3_images/` for test_task_3.json (the archives' names)."""
    split = file.name.split("_task")[0]
    found = first_existing(file.parent, (f"{split}_images", f"{split}_task3_images"))
    return found or file.parent / f"{split}_images"


def load_official(file: Path) -> list[EvalSample]:
    data = read_json(file)
    require(data, ("data",), file, "the top level")
    images = _image_folder(file)
    samples = []
    for i, q in enumerate(data["data"]):
        require(q, ("question_id", "question", "file_path"), file, f"data[{i}]")
        if "answers" not in q:
            raise BenchmarkDataError(
                file, f"data[{i}] has no field 'answers' (a test split: its answers are scored by the RRC server)"
            )
        image = existing_image(images / q["file_path"], file, "file_path")
        meta = {"source": q["file_path"].split("/")[0]}
        samples.append(EvalSample(str(q["question_id"]), q["question"], (image,), tuple(q["answers"]), meta=meta))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    for file, n, row in hub_rows(files, ("question_id", "question", "answers", "image")):
        image = inline_image(row["image"], file, f"row {n}")
        source = str(row.get("file_path") or row.get("file_name") or "unknown").split("/")[0]
        answers = tuple(row["answers"] or ())
        if not answers:
            raise BenchmarkDataError(file, f"row {n} field 'answers' is empty (a test split cannot be scored here)")
        samples.append(EvalSample(str(row["question_id"]), row["question"], (image,), answers, meta={"source": source}))
    return samples


def load(path: Path) -> list[EvalSample]:
    """The task-3 JSON (or its folder) beside its images folder; else a parquet with answers."""
    if path.suffix == ".json":
        return load_official(path)
    official = first_existing(path, FILES)
    if official is not None:
        return load_official(official)
    files = hub_files(path, "test")
    return load_hub(files) if files else load_official(path / FILES[0])


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"anls": float(anls(prediction, sample.references, threshold=0.5))}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    return grouped_means(records, "anls", ("source",))


register(
    Benchmark(
        name="stvqa",
        metric="anls",
        load=load,
        prompt=lambda s: image_then_text(s, f"{s.question}{SHORT_ANSWER}"),
        score=score,
        summarize=summarize,
        layouts="train_task_3.json (or test_task_3.json, or their folder) beside train_images/<file_path> "
        "(test_task3_images/); or a parquet of the lmms-eval hub layout that has an 'answers' column",
        max_new_tokens=32,
        instruction=SHORT_ANSWER,
        paper="67.0 (13B, MODEL_CARD.md)",
    )
)
