"""`mme`: MME yes/no questions (two per image) over 10 perception and 4 cognition subtasks; MME scores.

Official layout (the `MME_Benchmark_release_version` folder of the MME authors; possibly with its subtasks one
level down in `MME_Benchmark/`), one folder per subtask:

    existence/ count/ position/ color/ OCR/ commonsense_reasoning/ numerical_calculation/ text_translation/
    code_reasoning/:    <name>.jpg|.png beside <name>.txt
    posters/ celebrity/ scene/ landmark/ artwork/:    images/<name>.jpg + questions_answers_YN/<name>.txt

each .txt holding one "question<TAB>Yes|No" line per question (two). Other folders (`eval_tool/`) are ignored.
lmms-eval's hub copy `lmms-lab/MME` (`data/test-*.parquet`: question_id "<subtask>/<image name>", image,
question, answer, category) is read too. The qid is "<subtask>/<image name>#<k>" (k = 1, 2: the line of the .txt,
or the occurrence in the parquet), since MME numbers images, not questions.

Prompt: lmms-eval 0.7.3 `mme_doc_to_text` with the default kwargs: the question stripped, its " Please answer yes
or no." removed, and the short-answer post_prompt appended. Score: `parse_pred_ans` (Otter's yes/no reading) equal
to the answer. Summary (the official eval_tool/calculation.py): per subtask acc (per question) + acc+ (per image,
both answers right), each in percent, so a subtask scores up to 200; "perception" and "cognition" are the sums
over the subtasks present, as the paper's MME-P (1472.3) and MME-C (329.4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, image_then_text, register
from ..metrics.mme import parse_pred_ans
from ..samples import BenchmarkDataError, EvalSample, existing_image
from .release_files import hub_files, hub_rows, inline_image

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
YES_NO_SUFFIX = " Please answer yes or no."


def make_sample(subtask: str, image_name: str, k: int, image: str | bytes, question: str, answer: str) -> EvalSample:
    meta = {"subtask": subtask, "image": f"{subtask}/{image_name}", "kind": kind_of(subtask)}
    return EvalSample(f"{subtask}/{image_name}#{k}", question, (image,), (answer,), meta=meta)


def kind_of(subtask: str) -> str:
    return "perception" if subtask in PERCEPTION else "cognition"


def check_answer(answer: str, source: Path, where: str) -> str:
    if answer.strip().lower() not in ("yes", "no"):
        raise BenchmarkDataError(source, f"{where} field 'answer' is {answer!r}, not Yes or No")
    return answer.strip()


def read_pairs(txt: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise BenchmarkDataError(txt, f"line {number} has no tab-separated field 'answer' (question<TAB>Yes|No)")
        question, answer = line.rsplit("\t", 1)
        pairs.append((question, check_answer(answer, txt, f"line {number}")))
    return pairs


def find_image(folder: Path, stem: str, txt: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return str(folder / f"{stem}{suffix}")
    return existing_image(folder / f"{stem}.jpg", txt, "image")  # raises, naming the image the .txt needs


def load_official(root: Path) -> list[EvalSample]:
    if (root / "MME_Benchmark").is_dir():
        root = root / "MME_Benchmark"
    subtasks = [t for t in PERCEPTION + COGNITION if (root / t).is_dir()]
    if not subtasks:
        raise BenchmarkDataError(root, f"holds none of the MME subtask folders ({', '.join(PERCEPTION + COGNITION)})")
    samples = []
    for subtask in subtasks:
        folder = root / subtask
        split = (folder / "questions_answers_YN").is_dir()
        texts, images = (folder / "questions_answers_YN", folder / "images") if split else (folder, folder)
        for txt in sorted(texts.glob("*.txt")):
            image = find_image(images, txt.stem, txt)
            for k, (question, answer) in enumerate(read_pairs(txt), 1):
                samples.append(make_sample(subtask, Path(image).name, k, image, question, answer))
    return samples


def load_hub(files: Sequence[Path]) -> list[EvalSample]:
    samples, seen = [], defaultdict(int)
    for file, n, row in hub_rows(files, ("question_id", "image", "question", "answer", "category")):
        subtask, image_name = str(row["category"]), str(row["question_id"]).split("/")[-1]
        seen[row["question_id"]] += 1
        image = inline_image(row["image"], file, f"row {n}")
        answer = check_answer(str(row["answer"]), file, f"row {n}")
        samples.append(make_sample(subtask, image_name, seen[row["question_id"]], image, row["question"], answer))
    return samples


def load(path: Path) -> list[EvalSample]:
    """The release folder; else the hub parquet copy (a file or a folder of test-*.parquet)."""
    if path.is_dir() and any((path / t).is_dir() for t in ("MME_Benchmark", *PERCEPTION, *COGNITION)):
        return load_official(path)
    files = hub_files(path, "test")
    return load_hub(files) if files else load_official(path)  # the latter reports the missing subtask folders


def prompt_text(sample: EvalSample) -> str:
    return sample.question.strip().replace(YES_NO_SUFFIX, "") + SHORT_ANSWER


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"correct": float(parse_pred_ans(prediction, variant="lmms-eval") == sample.references[0].lower())}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per subtask "<subtask>" = acc + acc+, with "<subtask>/acc" and "<subtask>/acc_plus"; "perception",
    "cognition" and "total" sum the subtask scores."""
    by_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_image[r["meta"]["subtask"]][r["meta"]["image"]].append(r["scores"]["correct"])
    out: dict[str, float] = {"perception": 0.0, "cognition": 0.0}
    for subtask in [t for t in PERCEPTION + COGNITION if t in by_image]:
        images = by_image[subtask]
        answers = [c for scores in images.values() for c in scores]
        acc = 100.0 * sum(answers) / len(answers)
        acc_plus = 100.0 * sum(all(c == 1.0 for c in scores) for scores in images.values()) / len(images)
        out |= {subtask: acc + acc_plus, f"{subtask}/acc": acc, f"{subtask}/acc_plus": acc_plus}
        out[kind_of(subtask)] += acc + acc_plus
    out["total"] = out["perception"] + out["cognition"]
    return out


register(
    Benchmark(
        name="mme",
        metric="perception",
        load=load,
        prompt=lambda s: image_then_text(s, prompt_text(s)),
        score=score,
        summarize=summarize,
        layouts="MME_Benchmark_release_version/ (subtask folders: <name>.jpg|png + <name>.txt, or images/ + "
        "questions_answers_YN/); or the lmms-eval hub copy: a .parquet file or a folder of test-*.parquet",
        max_new_tokens=16,
        instruction=SHORT_ANSWER,
        paper="Table 4: MME-P 1472.3, MME-C 329.4 (13B)",
    )
)
