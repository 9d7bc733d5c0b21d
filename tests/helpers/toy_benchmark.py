"""A toy benchmark for the runner tests: JSONL lines {"id", "image", "question", "answers"} next to their images.

Scored by exact match of the lower-cased answer, so every score is a pure function of the prediction; the runner's
resume and data-parallel guarantees are then checked on the predictions themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as photos

from infimm_hd.evaluation.benchmark import BENCHMARKS, Benchmark, image_then_text, mean_by, register
from infimm_hd.evaluation.samples import EvalSample, existing_image, require

NAME = "toy-vqa"


def load(path: Path) -> list[EvalSample]:
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        require(record, ("id", "image", "question", "answers"), path, f"line {number}")
        image = existing_image(path.parent / record["image"], path, "image")
        samples.append(EvalSample(str(record["id"]), record["question"], (image,), tuple(record["answers"])))
    return samples


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"match": float(prediction.strip().lower() in {a.lower() for a in sample.references})}


if NAME not in BENCHMARKS:
    register(
        Benchmark(
            name=NAME,
            metric="match",
            load=load,
            prompt=lambda s: image_then_text(s, s.question + "\nAnswer briefly."),
            score=score,
            summarize=lambda records: mean_by(records, "match"),
            layouts="toy.jsonl + images",
            max_new_tokens=4,
            instruction="\nAnswer briefly.",
        )
    )


def make_toy(folder: Path, n: int = 10) -> Path:
    """`n` questions over two real photos at different sizes (so batches mix window grids)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photos.astronaut()).resize((900, 600)).save(folder / "astronaut.jpg")
    Image.fromarray(np.asarray(photos.coffee())).save(folder / "coffee.png")
    lines = [
        {"id": i, "image": ["astronaut.jpg", "coffee.png"][i % 2], "question": f"What is item {i}?", "answers": ["a"]}
        for i in range(n)
    ]
    path = folder / "toy.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
