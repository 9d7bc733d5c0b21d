"""Local lmms-eval tasks over real photos: how to run lmms-eval on your own files, and what the adapter test runs.

lmms-eval reads a task from a YAML file (`--include_path FOLDER`); with `dataset_path: json` and `data_files` it
reads a local JSONL through `datasets`, so nothing is downloaded. This writes one folder holding `data.jsonl`, the
photos (`images/`, from `skimage.data`), `utils.py` (the doc functions, copied from `lmms_eval_task/`) and three
tasks covering the model's three request types:

    infimm_local_vqa      generate_until, scored by lmms-eval's `exact_match`
    infimm_local_mc       multiple_choice (log-likelihood of each choice), scored by `acc`
    infimm_local_rounds   generate_until_multi_round (a follow-up quoting the first answer)

    python -m data_prep.benchmark_fixtures.lmms_eval_tasks OUT_DIR
    python -m lmms_eval --model infimm_hd --model_args pretrained=FOLDER --include_path OUT_DIR \
        --tasks infimm_local_vqa,infimm_local_mc,infimm_local_rounds --output_path runs/lmms
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .closed_form import photo, save

TASK_FILES = Path(__file__).resolve().parent / "lmms_eval_task"
TASKS = ("infimm_local_vqa", "infimm_local_mc", "infimm_local_rounds")
MAX_NEW_TOKENS = 6


@dataclass
class LocalDoc:
    """One line of data.jsonl (see `lmms_eval_task/utils.py`)."""

    id: str
    question: str
    answer: str
    choices: list[str] = field(default_factory=lambda: ["yes", "no", "maybe"])
    label: int = 0
    follow_up: str = "Say it again."
    second_answer: str = "a photo"
    image: str = ""


def default_docs(n: int = 4) -> list[LocalDoc]:
    return [LocalDoc(id=f"q{i}", question=f"What is shown in photo {i}?", answer="a photo") for i in range(n)]


def _task_yaml(task: str, data_file: Path) -> str:
    common = (
        f"task: {task}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {json.dumps(str(data_file))}\n"
        "test_split: test\n"
        "doc_to_visual: !function utils.doc_to_visual\n"
        "lmms_eval_specific_kwargs:\n"
        "  default:\n"
        '    pre_prompt: ""\n'
        '    post_prompt: "\\nAnswer the question using a single word or phrase."\n'
    )
    generation = f"generation_kwargs:\n  max_new_tokens: {MAX_NEW_TOKENS}\n  temperature: 0\n"
    if task == "infimm_local_vqa":
        return (
            common
            + "output_type: generate_until\n"
            + "doc_to_text: !function utils.doc_to_text\n"
            + "doc_to_target: answer\n"
            + generation
            + '  until: ["\\n"]\n'
            + "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        )
    if task == "infimm_local_mc":
        return (
            common
            + "output_type: multiple_choice\n"
            + "doc_to_text: !function utils.doc_to_text\n"
            + "doc_to_choice: !function utils.doc_to_choice\n"
            + "doc_to_target: !function utils.doc_to_label\n"
            + "metric_list:\n  - metric: acc\n"
        )
    return (
        common
        + "output_type: generate_until_multi_round\n"
        + "doc_to_text: !function utils.rounds_doc_to_text\n"
        + "doc_to_target: answer\n"
        + generation
        + "process_results: !function utils.rounds_process_results\n"
        + "metric_list:\n"
        + "  - metric: rounds\n    aggregation: mean\n    higher_is_better: true\n"
        + "  - metric: second_answer_match\n    aggregation: mean\n    higher_is_better: true\n"
    )


def write_local_tasks(folder: str | Path, docs: Sequence[LocalDoc] | None = None, seed: int = 0) -> Path:
    """Write the task folder (see the module docstring) and return it; `docs` default to `default_docs()`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    docs = [LocalDoc(**asdict(d)) for d in (docs or default_docs())]
    for i, doc in enumerate(docs):
        doc.image = doc.image or f"images/{doc.id}.png"
        if not (folder / doc.image).exists():
            save(photo(i, rng), folder / doc.image)
    data_file = folder / "data.jsonl"
    data_file.write_text("".join(json.dumps(asdict(d)) + "\n" for d in docs))
    shutil.copyfile(TASK_FILES / "utils.py", folder / "utils.py")
    for task in TASKS:
        (folder / f"{task}.yaml").write_text(_task_yaml(task, data_file.resolve()))
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    write_local_tasks(parser.parse_args(argv).out_dir)


if __name__ == "__main__":
    main()
