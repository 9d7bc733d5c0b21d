"""`mmvet`: MM-Vet open-ended questions; answers are written for the official GPT-4 grader, not scored here.

Official layout (github.com/yuweihao/MM-Vet, `mm-vet.zip`):

    mm-vet/mm-vet.json   {"v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"], "question", "answer"}, ...}
    mm-vet/images/v1_0.png ...

lmms-eval's hub copy (`lmms-lab/MMVet`, `data/test-*.parquet`: question_id, image, question, answer, image_source,
capability comma-joined) is read too. The qid is the official key ("v1_0").

Prompt: lmms-eval 0.7.3 mmvet `doc_to_text` with its default kwargs: the pre_prompt "First please perform reasoning,
and think step by step to provide best answer to the following question: \\n\\n" + the question.

Scoring: MM-Vet's score is a GPT-4 judge's 0..1 grade of each answer against the reference (`mm-vet_evaluator.py`
of the official repository, or lmms-eval's `mmvet_process_results`); no judge is reachable here and no score is
faked: `score` returns {} and the summary only counts the answers ("num_answers", not a score; "judged" = 0).
To grade: `python -m infimm_hd.evaluation.benchmarks.mmvet <output>/predictions.jsonl mmvet_results.json` writes
the official submission file {"v1_0": "<answer>", ...}, which the MM-Vet evaluator (or its online grader at
huggingface.co/spaces/whyu/MM-Vet_Evaluator) takes as the results file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import Benchmark, image_then_text, register
from ..samples import EvalSample, existing_image, require
from .release_files import annotations_or_hub, hub_rows, inline_image, read_json

ANNOTATIONS = "mm-vet.json"
PRE_PROMPT = (  # mmvet.yaml lmms_eval_specific_kwargs.default.pre_prompt
    "First please perform reasoning, and think step by step to provide best answer to the following question: \n\n"
)


def capabilities(value: Any) -> str:
    """Comma-joined capability names ("ocr,math"), the hub copy's form of the official list."""
    return ",".join(value) if isinstance(value, list | tuple) else str(value)


def load_official(file: Path) -> list[EvalSample]:
    data = read_json(file)
    images = file.parent / "images"
    samples = []
    for qid, item in data.items():
        require(item, ("imagename", "question", "answer", "capability"), file, f"question {qid!r}")
        image = existing_image(images / item["imagename"], file, "imagename")
        meta = {"capability": capabilities(item["capability"])}
        samples.append(EvalSample(str(qid), item["question"], (image,), (item["answer"],), meta=meta))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    for file, n, row in hub_rows(files, ("question_id", "image", "question", "answer")):
        image = inline_image(row["image"], file, f"row {n}")
        meta = {"capability": capabilities(row.get("capability") or "")}
        samples.append(EvalSample(str(row["question_id"]), row["question"], (image,), (row["answer"],), meta=meta))
    return samples


def load(path: Path) -> list[EvalSample]:
    """mm-vet.json (or its folder) beside images/; else the hub parquet copy."""
    return annotations_or_hub(path, ANNOTATIONS, "test", load_official, load_hub)


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """No score (see the module docstring): how many answers await the official grader."""
    return {"judged": 0.0, "num_answers": float(len(records))}


def submission(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The official MM-Vet results file: {qid: answer}."""
    return {r["qid"]: r["prediction"] for r in records}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write MM-Vet's submission JSON from an eval's predictions.jsonl.")
    parser.add_argument("predictions", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.predictions.read_text().splitlines() if line.strip()]
    args.output.write_text(json.dumps(submission(records), indent=2) + "\n")
    print(f"{len(records)} answers -> {args.output}")


BENCHMARK = Benchmark(
    name="mmvet",
    metric="num_answers",
    load=load,
    prompt=lambda s: image_then_text(s, PRE_PROMPT + s.question),
    score=lambda sample, prediction: {},
    summarize=summarize,
    layouts=f"{ANNOTATIONS} (or its folder) beside images/; or the lmms-eval hub copy: a .parquet file or a "
    "folder of test-*.parquet. Not scored here: needs the official GPT-4 grader",
    max_new_tokens=1024,  # lmms-eval's budget: the pre_prompt asks for step-by-step reasoning
    instruction=PRE_PROMPT,
    paper="Table 4: MM-Vet 38.9 (13B, GPT-4 graded)",
)

if __name__ == "__main__":
    main()  # the package import above already registered this module's benchmark once
else:
    register(BENCHMARK)
