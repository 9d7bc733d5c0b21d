"""`gqa`: compositional questions about Visual Genome photos (GQA test-dev balanced, 12,578 questions), exact match.

Official layout (cs.stanford.edu/people/dorarad/gqa, questions1.2.zip + images.zip):

    <folder>/testdev_balanced_questions.json   {"<question id>": {"imageId", "question", "answer", "fullAnswer",
                                                 "isBalanced", "types": {"structural", "semantic", "detailed"},
                                                 "semantic", "semanticStr", "groups", "entailed", "equivalent",
                                                 "annotations"}}
    <folder>/images/<imageId>.jpg

or lmms-eval's hub copy `lmms-lab/GQA`: a folder holding `testdev_balanced_instructions/testdev-*.parquet` (the
same fields, one row per question, its id in `id`) and `testdev_balanced_images/testdev-*.parquet` (`id`, `image`),
the two configs lmms-eval's `gqa_process_docs` joins on `imageId`.

Prompt: lmms-eval 0.7.3 `gqa_doc_to_text`: the question + the short-answer post_prompt. Score: lmms-eval's
`exact_match` with `ignore_case` and `ignore_punctuation` (lower-case both, delete ASCII punctuation, compare).
The summary adds GQA `eval.py`'s accuracy per structural type (verify, query, choose, logical, compare) and per
semantic type (attr, cat, global, obj, rel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, grouped_means, image_then_text, register
from ..metrics.exact_match import gqa_accuracy
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import hub_files, hub_rows, inline_image, read_json

QUESTIONS = "testdev_balanced_questions.json"
HUB_QUESTIONS = "testdev_balanced_instructions"
HUB_IMAGES = "testdev_balanced_images"


def _meta(record: dict[str, Any]) -> dict[str, str]:
    types = record.get("types") or {}
    return {"structural": str(types.get("structural")), "semantic": str(types.get("semantic"))}


def load_official(file: Path) -> list[EvalSample]:
    data = read_json(file)
    if not isinstance(data, dict):
        raise BenchmarkDataError(file, f"holds a {type(data).__name__}, expected an object keyed by question id")
    images = file.parent / "images"
    samples = []
    for qid, q in data.items():
        require(q, ("imageId", "question", "answer"), file, f"question {qid!r}")
        image = existing_image(images / f"{q['imageId']}.jpg", file, "imageId")
        samples.append(EvalSample(str(qid), q["question"], (image,), (q["answer"],), meta=_meta(q)))
    return samples


def load_hub(folder: Path) -> list[EvalSample]:
    question_files = hub_files(folder / HUB_QUESTIONS, "testdev")
    image_files = hub_files(folder / HUB_IMAGES, "testdev")
    if not image_files:
        raise BenchmarkDataError(folder / HUB_IMAGES, "has no testdev-*.parquet (the images of the questions)")
    rows = list(hub_rows(question_files, ("id", "imageId", "question", "answer")))
    wanted = {row["imageId"] for _, _, row in rows}
    images: dict[str, bytes] = {}
    for file, n, row in hub_rows(image_files, ("id", "image")):
        if row["id"] in wanted:
            images[row["id"]] = inline_image(row["image"], file, f"row {n}")
    samples = []
    for file, n, row in rows:
        if row["imageId"] not in images:
            raise BenchmarkDataError(file, f"row {n} field 'imageId' = {row['imageId']!r} has no row in {HUB_IMAGES}")
        samples.append(
            EvalSample(str(row["id"]), row["question"], (images[row["imageId"]],), (row["answer"],), meta=_meta(row))
        )
    return samples


def load(path: Path) -> list[EvalSample]:
    """`testdev_balanced_questions.json` (or its folder) beside `images/`; else the hub folder of both configs."""
    if path.suffix == ".json":
        return load_official(path)
    if (path / QUESTIONS).is_file() or not (path / HUB_QUESTIONS).is_dir():
        return load_official(path / QUESTIONS)
    return load_hub(path)


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"exact_match": gqa_accuracy(prediction, sample.references[0])}


register(
    Benchmark(
        name="gqa",
        metric="exact_match",
        load=load,
        prompt=lambda s: image_then_text(s, f"{s.question}{SHORT_ANSWER}"),
        score=score,
        summarize=lambda records: grouped_means(records, "exact_match", ("structural", "semantic")),
        layouts=f"{QUESTIONS} (or its folder) beside images/<imageId>.jpg; or the lmms-eval hub copy: a folder with "
        f"{HUB_QUESTIONS}/testdev-*.parquet and {HUB_IMAGES}/testdev-*.parquet",
        max_new_tokens=16,
        instruction=SHORT_ANSWER,
        paper="63.5 (13B, MODEL_CARD.md)",
    )
)
