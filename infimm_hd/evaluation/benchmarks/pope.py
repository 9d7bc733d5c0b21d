"""`pope`: POPE object-hallucination probes ("Is there a <object> in the image?") on COCO val2014, F1 of "yes".

Official layout (github.com/AoiDragon/POPE `output/coco/`): JSON-lines files, one object per line,

    coco_pope_adversarial.json  coco_pope_popular.json  coco_pope_random.json
        {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
         "label": "yes"}

with the photos in a COCO `val2014/` folder. `path` is one of those files or a folder holding them (directly or in
`coco/`, LLaVA's eval layout); the photos are looked up in `val2014/` beside the files or one level up, or beside
the files themselves. lmms-eval's hub copy (`lmms-lab/POPE`, `data/test-*.parquet`: question_id, question,
answer, image, category = the split) is read too. Question ids restart at 1 in each split, so the qid is
"<split>/<question_id>".

Prompt: lmms-eval 0.7.3 `pope_doc_to_text`: the question stripped + the short-answer post_prompt. Score: the answer
read as POPE's evaluate.py does (first sentence; "no"/"not" -> no, else yes), then POPE's metrics per split:
accuracy, precision, recall, F1 and yes-ratio (the share of "yes" answers), in percent. Headline "f1": the
adversarial split's F1 (what the paper reports, 87.9) when it is loaded, else the F1 over all loaded questions (the
one split given).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, image_then_text, register
from ..metrics.pope import pope_parse_answer
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import hub_files, hub_rows, inline_image

SPLITS = ("adversarial", "popular", "random")
FILE = "coco_pope_{}.json"
FIELDS = ("question_id", "image", "text", "label")


def check_label(label: Any, source: Path, where: str, field_name: str) -> str:
    label = str(label).strip().lower()
    if label not in ("yes", "no"):
        raise BenchmarkDataError(source, f"{where} field {field_name!r} is {label!r}, not yes or no")
    return label


def image_folder(annotations: Path) -> Path:
    for folder in (annotations / "val2014", annotations.parent / "val2014"):
        if folder.is_dir():
            return folder
    return annotations


def load_file(path: Path, split: str) -> list[EvalSample]:
    images = image_folder(path.parent)
    samples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BenchmarkDataError(path, "does not exist") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkDataError(path, f"line {number} is not JSON ({err})") from None
        require(record, FIELDS, path, f"line {number}")
        image = existing_image(images / record["image"], path, "image")
        label = check_label(record["label"], path, f"line {number}", "label")
        meta = {"split": split}
        samples.append(EvalSample(f"{split}/{record['question_id']}", record["text"], (image,), (label,), meta=meta))
    return samples


def split_of(path: Path) -> str:
    for split in SPLITS:
        if path.name == FILE.format(split):
            return split
    return path.stem.removeprefix("coco_pope_")


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    for file, n, row in hub_rows(files, ("question_id", "question", "answer", "image")):
        split = str(row.get("category") or file.name.split("-")[0])
        label = check_label(row["answer"], file, f"row {n}", "answer")
        image = inline_image(row["image"], file, f"row {n}")
        meta = {"split": split}
        samples.append(EvalSample(f"{split}/{row['question_id']}", row["question"], (image,), (label,), meta=meta))
    return samples


def load(path: Path) -> list[EvalSample]:
    """One coco_pope_<split>.json, or a folder with any of them (directly or in coco/); else the hub parquet."""
    if path.suffix == ".json":
        return load_file(path, split_of(path))
    for folder in (path, path / "coco"):
        found = [folder / FILE.format(s) for s in SPLITS if (folder / FILE.format(s)).is_file()]
        if found:
            return [s for file in found for s in load_file(file, split_of(file))]
    files = hub_files(path, "test") or [f for s in SPLITS for f in hub_files(path, s)]
    if not files:
        raise BenchmarkDataError(path, f"holds no {FILE.format('<split>')} (nor coco/ with them, nor hub parquet)")
    return load_hub(files)


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    said_yes = pope_parse_answer(prediction) == "yes"
    is_yes = sample.references[0] == "yes"
    return {"correct": float(said_yes == is_yes), "said_yes": float(said_yes), "is_yes": float(is_yes)}


def pope_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio of "yes" answers, in percent (POPE's evaluate.py)."""
    said = [r["scores"]["said_yes"] == 1.0 for r in records]
    truth = [r["scores"]["is_yes"] == 1.0 for r in records]
    tp = sum(s and t for s, t in zip(said, truth, strict=True))
    fp = sum(s and not t for s, t in zip(said, truth, strict=True))
    fn = sum(t and not s for s, t in zip(said, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(s == t for s, t in zip(said, truth, strict=True)) / len(records)
    yes_ratio = sum(said) / len(records)
    values = {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1, "yes_ratio": yes_ratio}
    return {k: 100.0 * v for k, v in values.items()}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """ "<split>/<metric>" for each split loaded, "all/<metric>" over them all, and the headline "f1"."""
    splits = sorted({r["meta"]["split"] for r in records})
    out: dict[str, float] = {}
    for split in splits:
        out |= {f"{split}/{k}": v for k, v in pope_metrics([r for r in records if r["meta"]["split"] == split]).items()}
    out |= {f"all/{k}": v for k, v in pope_metrics(records).items()}
    out["f1"] = out["adversarial/f1"] if "adversarial" in splits else out["all/f1"]
    return out


register(
    Benchmark(
        name="pope",
        metric="f1",
        load=load,
        prompt=lambda s: image_then_text(s, s.question.strip() + SHORT_ANSWER),
        score=score,
        summarize=summarize,
        layouts=f"{FILE.format('<adversarial|popular|random>')} (or a folder of them, or with them in coco/) and the "
        "COCO val2014/ photos beside them or one level up; or the lmms-eval hub copy: a .parquet file or a folder of "
        "test-*.parquet",
        max_new_tokens=16,
        instruction=SHORT_ANSWER,
        paper="Table 4: POPE 87.9 (adversarial F1, 13B)",
    )
)
