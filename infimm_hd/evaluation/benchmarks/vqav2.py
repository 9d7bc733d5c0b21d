"""`vqav2` and `okvqa`: open-ended questions about COCO val2014 photos, scored by VQA accuracy.

Both are published in the official VQA layout (visualqa.org; OK-VQA at okvqa.allenai.org reuses it):

    <folder>/v2_OpenEnded_mscoco_val2014_questions.json   {"questions": [{"question_id", "image_id", "question"}]}
    <folder>/v2_mscoco_val2014_annotations.json           {"annotations": [{"question_id", "question_type",
                                                            "answer_type", "multiple_choice_answer",
                                                            "answers": [{"answer", "answer_confidence",
                                                            "answer_id"}] x 10}]}
    <folder>/val2014/COCO_val2014_<image_id:012d>.jpg

OK-VQA names its files `OpenEnded_mscoco_val2014_questions.json` / `mscoco_val2014_annotations.json`. The JSON files
may also sit in `Questions/` and `Annotations/` (the VQA API's folder names) and the photos in `Images/val2014/`.
lmms-eval's hub copies are read too, a `.parquet` file or a folder of them (`lmms-lab/VQAv2` `data/validation-*`,
`lmms-lab/OK-VQA` `data/val2014-*`): one row per question with the image bytes inline.

Prompt: lmms-eval 0.7.3 `vqav2_doc_to_text` / `ok_vqa_doc_to_text`: the question, then the post_prompt of its YAML
(OK-VQA's asks for 'Unanswerable' first). Score: VQA accuracy (min(#humans who gave the answer / 3, 1), averaged
over the 10 leave-one-out subsets); VQAv2 normalises as lmms-eval's `vqav2_process_results` does (punctuation,
digits, articles), OK-VQA with the full EvalAI answer processor (`ok_vqa_process_results`). The summary adds the
official `vqaEval.py` breakdowns: per answer type and per question type.

"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, grouped_means, image_then_text, register
from ..metrics.vqa_accuracy import vqa_accuracy
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import first_existing, hub_files, hub_rows, inline_image, read_json

OKVQA_INSTRUCTION = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT_ANSWER

# name -> (questions file, annotations file, split name of the hub copy)
FILES = {
    "vqav2": ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json", "validation"),
    "okvqa": ("OpenEnded_mscoco_val2014_questions.json", "mscoco_val2014_annotations.json", "val2014"),
}
# How `vqa_accuracy` normalises answers, as lmms-eval's process_results of each task does.
NORMALIZATION = {"vqav2": "lmms-vqav2", "okvqa": "evalai"}
PAPER = {"vqav2": "82.0 (13B, MODEL_CARD.md)", "okvqa": "65.5 (13B, MODEL_CARD.md)"}
IMAGE_DIRS = ("val2014", "Images/val2014", "Images/mscoco/val2014")


# ---- VQAv2 / OK-VQA ------------------------------------------------------------------------------------------------


def _answer_text(answer: Any, source: Path, where: str) -> str:
    """VQA annotations hold {"answer", ...} dicts; the OK-VQA hub copy holds the strings themselves."""
    if isinstance(answer, str):
        return answer
    require(answer, ("answer",), source, where)
    return answer["answer"]


def load_official(folder: Path, name: str) -> list[EvalSample]:
    questions_name, annotations_name, _ = FILES[name]
    questions_file = first_existing(folder, (questions_name, f"Questions/{questions_name}"))
    annotations_file = first_existing(folder, (annotations_name, f"Annotations/{annotations_name}"))
    questions_file = questions_file or folder / questions_name
    annotations_file = annotations_file or folder / annotations_name
    images = first_existing(folder, IMAGE_DIRS) or folder / IMAGE_DIRS[0]

    questions = read_json(questions_file)
    require(questions, ("questions",), questions_file, "the top level")
    annotations = read_json(annotations_file)
    require(annotations, ("annotations",), annotations_file, "the top level")
    by_id: dict[Any, dict[str, Any]] = {}
    for i, ann in enumerate(annotations["annotations"]):
        require(ann, ("question_id", "question_type", "answer_type", "answers"), annotations_file, f"annotation {i}")
        by_id[ann["question_id"]] = ann

    samples = []
    for i, q in enumerate(questions["questions"]):
        require(q, ("question_id", "image_id", "question"), questions_file, f"question {i}")
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise BenchmarkDataError(
                annotations_file, f"no annotation has field 'question_id' = {q['question_id']} (question {i})"
            )
        where = f"the annotation of question {q['question_id']}"
        answers = tuple(_answer_text(a, annotations_file, f"{where}, answer {j}") for j, a in enumerate(ann["answers"]))
        image = existing_image(images / f"COCO_val2014_{int(q['image_id']):012d}.jpg", questions_file, "image_id")
        meta = {"answer_type": ann["answer_type"], "question_type": ann["question_type"]}
        samples.append(EvalSample(str(q["question_id"]), q["question"], (image,), answers, meta=meta))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples = []
    shared: dict[Any, bytes] = {}  # one copy of each photo however many questions repeat it
    columns = ("question_id", "question", "answers", "answer_type", "question_type", "image")
    for file, n, row in hub_rows(files, columns):
        where = f"row {n}"
        image = inline_image(row["image"], file, where)
        if row.get("image_id") is not None:
            image = shared.setdefault(row["image_id"], image)
        answers = tuple(_answer_text(a, file, f"{where}, answer {j}") for j, a in enumerate(row["answers"] or ()))
        meta = {"answer_type": row["answer_type"], "question_type": row["question_type"]}
        samples.append(EvalSample(str(row["question_id"]), row["question"], (image,), answers, meta=meta))
    return samples


def loader(name: str):
    def load(path: Path) -> list[EvalSample]:
        """The official VQA layout (a folder, or one of its JSON files); else the hub parquet copy."""
        folder = path.parent if path.suffix == ".json" else path
        questions_name = FILES[name][0]
        if path.suffix != ".parquet" and first_existing(folder, (questions_name, f"Questions/{questions_name}")):
            return load_official(folder, name)
        files = hub_files(path, FILES[name][2])
        if files:
            return load_hub(files)
        return load_official(folder, name)  # reports the missing questions file

    return load


def scorer(name: str):
    def score(sample: EvalSample, prediction: str) -> dict[str, float]:
        return {"vqa_accuracy": float(vqa_accuracy(prediction, sample.references, normalization=NORMALIZATION[name]))}

    return score


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Overall, per answer type ("yes/no", "number", "other") and per question type ("what color is the", ...)."""
    return grouped_means(records, "vqa_accuracy", ("answer_type", "question_type"))


LAYOUTS = (
    "a folder with {questions} and {annotations} (or Questions/ and Annotations/) and val2014/"
    "COCO_val2014_<image_id:012d>.jpg; or the lmms-eval hub copy: a .parquet file or a folder of {split}-*.parquet"
)

for _name, _instruction in (("vqav2", SHORT_ANSWER), ("okvqa", OKVQA_INSTRUCTION)):
    register(
        Benchmark(
            name=_name,
            metric="vqa_accuracy",
            load=loader(_name),
            prompt=lambda s, _i=_instruction: image_then_text(s, f"{s.question}{_i}"),
            score=scorer(_name),
            summarize=summarize,
            layouts=LAYOUTS.format(questions=FILES[_name][0], annotations=FILES[_name][1], split=FILES[_name][2]),
            max_new_tokens=16,
            instruction=_instruction,
            paper=PAPER[_name],
        )
    )
