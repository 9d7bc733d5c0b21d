"""`shards-vqa`: this package's own webdataset shards (`training.sample_format`) as a benchmark.

For held-out splits written by `data_prep` (the demo's `heldout-*.tar`): the question is the last user turn of each
"vqa" / "cot" record, the reference its `answer`, scored by the demo's exact match (`exact_match.score_answer`;
chain-of-thought records by their final answer) and summarised per `meta.qtype`. It lets `infimm-hd eval`, the
resolution ablation and evaluation during training run on data a user prepared with this package.
"""

from __future__ import annotations

import json
from pathlib import Path

import webdataset as wds

from ...training.data import expand_shards
from ...training.sample_format import image_keys, validate_record
from ..benchmark import Benchmark, image_then_text, mean_by, register
from ..exact_match import score_answer
from ..samples import BenchmarkDataError, EvalSample

TASKS = ("vqa", "cot")


def last_user_text(messages: list[dict], source: str) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise BenchmarkDataError(source, "a record has no user turn in field 'messages'")
    content = users[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def load(path: Path) -> list[EvalSample]:
    """Every "vqa"/"cot" record of the shards `path` names (a file, a glob or a brace pattern), in file order."""
    try:
        shards = expand_shards([str(path)])
    except (FileNotFoundError, ValueError) as err:
        raise BenchmarkDataError(path, str(err)) from None
    samples = []
    for sample in wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples()):
        where = f"{sample['__url__']}: sample {sample['__key__']!r}"
        try:
            record = json.loads(sample["json"])
            names = image_keys(sample)
            validate_record(record, num_images=len(names))
        except (KeyError, TypeError, ValueError) as err:
            raise BenchmarkDataError(where, str(err)) from None
        if record["task"] not in TASKS:
            continue
        if record.get("answer") is None:
            raise BenchmarkDataError(where, "a question record needs field 'answer'")
        # The last user turn is what is asked; images of earlier turns are not shown (single-turn benchmarks).
        question = last_user_text(record["messages"], where)
        images = tuple(bytes(sample[name]) for name in names)
        meta = {"qtype": record.get("meta", {}).get("qtype", "all"), "task": record["task"]}
        samples.append(EvalSample(record["id"], question, images, (record["answer"],), meta=meta))
    return samples


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"exact_match": float(score_answer(prediction, sample.references[0], sample.meta["task"]))}


register(
    Benchmark(
        name="shards-vqa",
        metric="exact_match",
        load=load,
        prompt=lambda s: image_then_text(s, s.question),  # the record's own words: its training format
        score=score,
        summarize=lambda records: mean_by(records, "exact_match", group="qtype"),
        layouts="webdataset shards of this package (data_prep output): a .tar, a glob or a brace pattern",
        max_new_tokens=16,
        instruction="",
    )
)
