"""`iconqa`: IconQA test questions about abstract icon diagrams (children's math word problems), accuracy.

Official layout (github.com/lupantech/IconQA, `iconqa_data.zip`), one folder per problem:

    iconqa_data/iconqa/<split>/<sub-task>/<pid>/data.json   {"question", "choices": [str], "answer": int | str,
                                                             "ques_type", "grade", "label", ...}
                                                   /image.png            the diagram
                                                   /choice_<k>.png       choose_img only: the image options

sub-tasks: choose_txt (multi-text-choice; `answer` indexes `choices`), choose_img (multi-image-choice; `choices` are
the choice image names) and fill_in_blank (`answer` is the text, no choices). `path` may be `iconqa_data/`,
`iconqa_data/iconqa/`, a split folder (`test/` is read when given a parent), or one sub-task folder (to evaluate a
single sub-task). lmms-eval's hub copy (`lmms-lab/ICON-QA`, `data/test-*.parquet`: question_id, question, choices
comma-joined, answer (a string), query_image, choice_image_0, choice_image_1, ques_type, label, grade, skills) is
read too; there `answer` is taken as the choice index for the choose_* sub-tasks, as in data.json (unverified
against the real parquet).

Prompt: lmms-eval 0.7.3 iconqa `doc_to_text`: "Given a set of images and a question, please provide the answer to
the question.\\nQuestion: <question>.\\n" then "Options:\\nA. ..\\nPlease answer with the option letter from the given
choices directly." (choose_txt; choose_img lists "The first image.", "The second image.", ...) or "Please answer the
question using a single word or phrase." (fill_in_blank). Images: the diagram, then the choice images. Score: IconQA's
own accuracy (`sub_acc.py`: the predicted choice equals the answer index, or the filled-in text equals the answer;
here after the usual letter reading and answer normalisation); lmms-eval scores it by ANLS, which is not IconQA's
metric. Summary: overall and per sub-task / grade. The paper does not say which sub-task(s) its IconQA 51.3
(Table 2) covers: the headline is the accuracy over what was loaded (all three test sub-tasks from a parent folder;
name a sub-task folder for that one alone), with each sub-task's accuracy beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import Benchmark, grouped_means, image_then_text, register
from ..metrics.exact_match import exact_match
from ..metrics.multiple_choice import mmbench_can_infer_option
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import hub_files, hub_rows, inline_image, read_json

TASKS = ("choose_txt", "choose_img", "fill_in_blank")
LETTERS = "ABCDEFGH"
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
STATEMENT = "Given a set of images and a question, please provide the answer to the question.\n"
OPTIONS = (
    "Question: {question}.\nOptions:\n{options}\nPlease answer with the option letter from the given choices directly."
)
FREEFORM = "Question: {question}.\nPlease answer the question using a single word or phrase."


def reference(task: str, answer: Any, choices: Sequence[str], source: Path, where: str) -> str:
    """The letter of the answer index (choose_*) or the answer text (fill_in_blank)."""
    if task == "fill_in_blank":
        return str(answer)
    try:
        index = int(answer)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(choices):
        raise BenchmarkDataError(source, f"{where} field 'answer' is {answer!r}, not an index into its choices")
    return LETTERS[index]


def check_task(task: Any, source: Path, where: str) -> str:
    if task not in TASKS:
        raise BenchmarkDataError(source, f"{where} field 'ques_type' is {task!r}, not one of {TASKS}")
    return task


def load_problem(folder: Path) -> EvalSample:
    file = folder / "data.json"
    data = read_json(file)
    require(data, ("question", "answer", "ques_type"), file, "the top level")
    task = check_task(data["ques_type"], file, "the top level")
    if task != "fill_in_blank":
        require(data, ("choices",), file, "the top level")
    images = [existing_image(folder / "image.png", file, "image.png")]
    choices = [str(c) for c in data.get("choices") or []] if task != "fill_in_blank" else []
    if task == "choose_img":
        images += [existing_image(folder / name, file, "choices") for name in choices]
    meta = {"ques_type": task, "grade": data.get("grade")}
    ref = reference(task, data["answer"], choices, file, "the top level")
    return EvalSample(folder.name, data["question"], tuple(images), (ref,), tuple(choices), meta)


def task_folders(path: Path) -> list[Path]:
    """The sub-task folders `path` means (see the module docstring), in the order TASKS lists them."""
    if path.name in TASKS:
        return [path]
    for child in ("iconqa", "test"):
        if (path / child).is_dir() and not any((path / t).is_dir() for t in TASKS):
            path = path / child
    return [path / t for t in TASKS if (path / t).is_dir()]


def load_official(path: Path) -> list[EvalSample]:
    folders = task_folders(path)
    if not folders:
        raise BenchmarkDataError(path, f"holds no IconQA sub-task folder ({', '.join(TASKS)}), nor iconqa/test/ ones")
    # Sub-tasks in TASKS order, problems by numeric pid within each (the folder listing order is the file system's).
    by_pid = [sorted((p for p in f.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)) for f in folders]
    return [load_problem(p) for problems in by_pid for p in problems]


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    columns = ("question_id", "question", "choices", "answer", "query_image", "ques_type")
    for file, n, row in hub_rows(files, columns):
        where = f"row {n}"
        task = check_task(row["ques_type"], file, where)
        images = [inline_image(row["query_image"], file, where, "query_image")]
        choices = [c for c in str(row["choices"] or "").split(",") if c] if task != "fill_in_blank" else []
        if task == "choose_img":
            names = [f"choice_image_{k}" for k in range(5) if row.get(f"choice_image_{k}") is not None]
            images += [inline_image(row[name], file, where, name) for name in names]
            choices = [f"choice_{k}.png" for k in range(len(names))]
        ref = reference(task, row["answer"], choices, file, where)
        meta = {"ques_type": task, "grade": row.get("grade")}
        qid = str(row["question_id"])
        samples.append(EvalSample(qid, row["question"], tuple(images), (ref,), tuple(choices), meta))
    return samples


def load(path: Path) -> list[EvalSample]:
    files = [] if path.is_dir() and task_folders(path) else hub_files(path, "test")
    return load_hub(files) if files else load_official(path)


def prompt_text(sample: EvalSample) -> str:
    task = sample.meta["ques_type"]
    if task == "fill_in_blank":
        return STATEMENT + FREEFORM.format(question=sample.question)
    texts = sample.choices
    if task == "choose_img":  # the options are the choice images, named by their order
        texts = tuple(f"The {ORDINALS[i]} image." for i in range(len(sample.choices)))
    options = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(texts))
    return STATEMENT + OPTIONS.format(question=sample.question, options=options)


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    if sample.meta["ques_type"] == "fill_in_blank":
        return {"accuracy": exact_match(prediction.strip(), sample.references[0])}
    letter = mmbench_can_infer_option(prediction, num_choice=len(sample.choices))
    return {"accuracy": float(letter == sample.references[0])}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    return grouped_means(records, "accuracy", ("ques_type", "grade"))


register(
    Benchmark(
        name="iconqa",
        metric="accuracy",
        load=load,
        prompt=lambda s: image_then_text(s, prompt_text(s)),
        score=score,
        summarize=summarize,
        layouts="iconqa_data/iconqa/test/<choose_txt|choose_img|fill_in_blank>/<pid>/{data.json,image.png,"
        "choice_<k>.png} (iconqa_data/, iconqa/, a split folder or one sub-task folder); or the lmms-eval hub copy: "
        "a .parquet file or a folder of test-*.parquet",
        max_new_tokens=16,
        instruction="\nPlease answer with the option letter ... | Please answer the question using a single word...",
        paper="Table 2: IconQA 51.3 (13B; sub-task not stated)",
    )
)
