"""`chartqa`: questions about charts (ChartQA test: 1,250 human-written + 1,250 generated), relaxed accuracy.

Official layout (github.com/vis-nlp/ChartQA, "ChartQA Dataset/"):

    <folder>/test/test_human.json       [{"imgname": "<name>.png", "query", "label"}]
    <folder>/test/test_augmented.json   the same, for the questions generated from chart summaries
    <folder>/test/png/<imgname>

`<folder>` may be "ChartQA Dataset" or its `test/` folder; a file holding {"data": [...]} instead of the bare list
(the form lmms-eval's `upload_chartqa.py` reads) is accepted too. ChartQA has no question ids: a sample's id is
`human_test-<i>` / `augmented_test-<i>`, its position in its file, the two files in that order, as the hub copy
`lmms-lab/ChartQA` (`data/test-*.parquet`: `type` "human_test"/"augmented_test", `question`, `answer`, `image`)
was built, so both layouts give the same ids.

Prompt: lmms-eval 0.7.3 `chartqa_doc_to_text`: the question + "\\nAnswer the question with a single word.".
Score: relaxed accuracy (Masry et al. 2022, sec. 5.1: numbers within 5% of the label, else exact match ignoring case;
lmms-eval's `relaxed_correctness`). Summary: lmms-eval's three numbers, overall and per split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import Benchmark, image_then_text, mean_by, register
from ..metrics.relaxed_accuracy import relaxed_accuracy
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import hub_files, hub_rows, inline_image, read_json

INSTRUCTION = "\nAnswer the question with a single word."
SPLITS = (("human_test", "test_human.json"), ("augmented_test", "test_augmented.json"))


def _records(file: Path) -> list[Any]:
    data = read_json(file)
    if isinstance(data, dict):
        require(data, ("data",), file, "the top level")
        data = data["data"]
    if not isinstance(data, list):
        raise BenchmarkDataError(file, f"holds a {type(data).__name__}, expected a list of questions")
    return data


def load_official(test: Path) -> list[EvalSample]:
    samples = []
    for split, file_name in SPLITS:
        file = test / file_name
        for i, q in enumerate(_records(file)):
            require(q, ("imgname", "query", "label"), file, f"question {i}")
            image = existing_image(test / "png" / q["imgname"], file, "imgname")
            meta = {"split": split}
            samples.append(EvalSample(f"{split}-{i}", q["query"], (image,), (str(q["label"]),), meta=meta))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    counts = {split: 0 for split, _ in SPLITS}
    for file, n, row in hub_rows(files, ("type", "question", "answer", "image")):
        if row["type"] not in counts:
            raise BenchmarkDataError(file, f"row {n} field 'type' is {row['type']!r}, not one of {list(counts)}")
        image = inline_image(row["image"], file, f"row {n}")
        qid = f"{row['type']}-{counts[row['type']]}"
        counts[row["type"]] += 1
        samples.append(EvalSample(qid, row["question"], (image,), (str(row["answer"]),), meta={"split": row["type"]}))
    return samples


def load(path: Path) -> list[EvalSample]:
    """ "ChartQA Dataset/" or its test/ folder; else the hub parquet copy."""
    for test in (path / "test", path):
        if (test / SPLITS[0][1]).is_file():
            return load_official(test)
    files = hub_files(path, "test")
    return load_hub(files) if files else load_official(path / "test")


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"relaxed_accuracy": float(relaxed_accuracy(prediction, sample.references[0]))}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """lmms-eval's keys: relaxed_overall, relaxed_human_split, relaxed_augmented_split (percent)."""
    by_split = mean_by(records, "relaxed_accuracy", "split")
    out = {"relaxed_overall": by_split["relaxed_accuracy"]}
    for split, _ in SPLITS:
        key = f"relaxed_accuracy/{split}"
        if key in by_split:
            out[f"relaxed_{split.removesuffix('_test')}_split"] = by_split[key]
    return out


register(
    Benchmark(
        name="chartqa",
        metric="relaxed_overall",
        load=load,
        prompt=lambda s: image_then_text(s, f"{s.question}{INSTRUCTION}"),
        score=score,
        summarize=summarize,
        layouts="'ChartQA Dataset/' (or its test/ folder) with test/test_human.json, test/test_augmented.json "
        "([{imgname, query, label}]) and test/png/; or the lmms-eval hub copy: a .parquet file or a folder of "
        "test-*.parquet",
        max_new_tokens=16,
        instruction=INSTRUCTION,
    )
)
