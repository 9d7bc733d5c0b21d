"""`textvqa`: questions that need reading the text in Open Images photos (TextVQA 0.5.1 val), VQA accuracy.

Official layout (textvqa.org/dataset):

    <folder>/TextVQA_0.5.1_val.json   {"dataset_name": "textvqa", "dataset_version": "0.5.1", "dataset_type": "val",
                                       "data": [{"question_id", "question", "image_id", "answers": [10 strings],
                                                 "image_classes", "ocr_tokens"?, "set_name", ...}]}
    <folder>/train_images/<image_id>.jpg   (the val questions are about photos of the train_val_images.zip)

or lmms-eval's hub copy `lmms-lab/textvqa` (`data/validation-*.parquet`, the same fields plus `image` bytes).

Prompt: lmms-eval 0.7.3 `textvqa_doc_to_text` with its default kwargs (`ocr: false`): `question.capitalize()` (which
also lower-cases the rest of the question, as lmms-eval does) + the short-answer post_prompt. Score: VQA accuracy
with the EvalAI answer processor (`textvqa_process_results`). TextVQA's official evaluation reports one number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, image_then_text, mean_by, register
from ..metrics.vqa_accuracy import vqa_accuracy
from ..samples import EvalSample, existing_image, require
from .release_files import annotations_or_hub, hub_rows, inline_image, read_json

ANNOTATIONS = "TextVQA_0.5.1_val.json"
IMAGES = "train_images"


def load_official(file: Path) -> list[EvalSample]:
    data = read_json(file)
    require(data, ("data",), file, "the top level")
    images = file.parent / IMAGES
    samples = []
    for i, q in enumerate(data["data"]):
        require(q, ("question_id", "question", "image_id", "answers"), file, f"data[{i}]")
        image = existing_image(images / f"{q['image_id']}.jpg", file, "image_id")
        samples.append(EvalSample(str(q["question_id"]), q["question"], (image,), tuple(q["answers"])))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    shared: dict[Any, bytes] = {}
    for file, n, row in hub_rows(files, ("question_id", "question", "answers", "image")):
        image = inline_image(row["image"], file, f"row {n}")
        if row.get("image_id") is not None:
            image = shared.setdefault(row["image_id"], image)
        samples.append(EvalSample(str(row["question_id"]), row["question"], (image,), tuple(row["answers"] or ())))
    return samples


def load(path: Path) -> list[EvalSample]:
    """`TextVQA_0.5.1_val.json` (or its folder) beside `train_images/`; else the hub parquet copy."""
    return annotations_or_hub(path, ANNOTATIONS, "validation", load_official, load_hub)


def prompt(sample: EvalSample) -> list[dict[str, Any]]:
    return image_then_text(sample, f"{sample.question.capitalize()}{SHORT_ANSWER}")


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"vqa_accuracy": float(vqa_accuracy(prediction, sample.references, normalization="evalai"))}


register(
    Benchmark(
        name="textvqa",
        metric="vqa_accuracy",
        load=load,
        prompt=prompt,
        score=score,
        summarize=lambda records: mean_by(records, "vqa_accuracy"),
        layouts=f"{ANNOTATIONS} (or its folder) beside {IMAGES}/<image_id>.jpg; or the lmms-eval hub copy: a "
        ".parquet file or a folder of validation-*.parquet",
        max_new_tokens=16,
        instruction=SHORT_ANSWER,
        paper="70.7 (13B, MODEL_CARD.md)",
    )
)
