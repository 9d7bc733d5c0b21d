"""Tiny copies of the closed-form benchmarks (ScienceQA-IMG, MMBench, MMMU, MME, POPE, IconQA, MM-Vet) in their
published layouts, for the loader tests and for trying `infimm-hd eval` without downloading anything.

Why a script and not checked-in files: each copy is a few photos from `skimage.data` (cropped and resized
differently per question, saved as JPEG or PNG as the benchmark does) with made-up questions and answers, written
with exactly the file names, folder nesting, JSON/TSV/parquet field names and image naming of the official release
(and of the lmms-eval hub copy where that has another schema). Answers need not be true of the photo: the tests
check loading, prompting and scoring, not the model.

    python -m data_prep.benchmark_fixtures.closed_form OUT_DIR      # writes every copy under OUT_DIR/<benchmark>/

Each `make_<name>(folder, n, seed)` returns the path to hand to that benchmark's `load`.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage import data as photos

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "cat", "coins", "clock")


def photo(index: int, rng: np.random.Generator, size: tuple[int, int] | None = None) -> Image.Image:
    """A real photo, cropped at a random place and resized (small: the tests run a tiny model on CPU)."""
    array = getattr(photos, PHOTOS[index % len(PHOTOS)])()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    h, w = array.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(np.ascontiguousarray(array[top : top + ch, left : left + cw, :3]))
    if size is None:
        size = (int(rng.integers(96, 240)), int(rng.integers(96, 240)))
    return crop.resize(size, Image.Resampling.BILINEAR)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)
    return path


def hub_image(image: Image.Image | None, name: str, fmt: str = "PNG") -> dict[str, Any] | None:
    """One cell of a `datasets` Image column: {"bytes", "path"} (None where the row has no image)."""
    return None if image is None else {"bytes": encoded(image, fmt), "path": name}


def write_parquet(path: Path, rows: Sequence[dict[str, Any]], image_columns: Sequence[str] = ()) -> Path:
    """Rows as the hub's parquet files hold them: image columns typed as the `datasets` Image struct even when a
    column is all null (MMMU's image_2..image_7 mostly are)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = list(rows[0])
    fields = []
    for name in columns:
        if name in image_columns:
            fields.append(pa.field(name, image_type))
        else:
            fields.append(pa.field(name, pa.array([r[name] for r in rows]).type))
    table = pa.Table.from_pylist(list(rows), schema=pa.schema(fields))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


# ---- ScienceQA (lupantech/ScienceQA: data/scienceqa/problems.json, pid_splits.json, images/<split>/<pid>/) ----------

SQA_SUBJECTS = (
    ("natural science", "grade4", "Which of these states is farthest north?", ["Maine", "Louisiana", "Arizona"]),
    ("social science", "grade8", "Which country is highlighted?", ["Fiji", "Tonga", "Samoa", "Vanuatu"]),
    ("language science", "grade2", "Which word would you find on a dictionary page?", ["cat", "dog"]),
)


def _sqa_problem(i: int, with_image: bool, split: str) -> dict[str, Any]:
    subject, grade, question, choices = SQA_SUBJECTS[i % len(SQA_SUBJECTS)]
    return {
        "question": question,
        "choices": list(choices),
        "answer": i % len(choices),
        "hint": "" if i % 2 else f"Figure {i}: a map of the area.",
        "image": "image.png" if with_image else None,
        "task": "closed choice",
        "grade": grade,
        "subject": subject,
        "topic": "geography" if subject == "social science" else "physics",
        "category": "Geography",
        "skill": "Read a map: cardinal directions",
        "lecture": "Maps have four cardinal directions.",
        "solution": f"The answer is {choices[i % len(choices)]}.",
        "split": split,
    }


def make_scienceqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """n test problems with an image (the IMG subset), 2 test problems without one, 1 train problem."""
    rng = np.random.default_rng(seed)
    root = folder / "scienceqa"
    problems, splits = {}, {"train": [], "val": [], "test": [], "minival": []}
    pids = [str(5 + 7 * i) for i in range(n + 3)]
    for i, pid in enumerate(pids):
        split = "train" if i == n + 2 else "test"
        with_image = i < n or split == "train"
        problems[pid] = _sqa_problem(i, with_image, split)
        splits[split].append(pid)
        if with_image:
            save(photo(i, rng), root / "images" / split / pid / "image.png")
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", splits)
    return root


def make_scienceqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """derek-thomas/ScienceQA (lmms-eval's ScienceQA-IMG is its image rows): `data/test-*.parquet`, the n image
    problems of `make_scienceqa` in order, with a text-only row inserted at row n // 2 and another at the end."""
    rng = np.random.default_rng(seed)
    fields = ("question", "choices", "answer", "hint", "task", "grade", "subject", "topic", "category", "skill")
    rows = []
    for i in range(n + 2):
        p = _sqa_problem(i, i < n, "test")
        image = hub_image(photo(i, rng), "image.png") if i < n else None
        rows.append({"image": image, **{k: p[k] for k in (*fields, "lecture", "solution")}})
    rows.insert(n // 2, rows.pop(n))
    return write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, ("image",)).parent.parent


# ---- MMBench (open-compass: MMBench_DEV_EN.tsv, base64 images, circular copies at index + k * 1e6) --------------

MMB_QUESTIONS = (
    ("What is the main object in the image?", "", ["a cat", "a rocket", "a cup of coffee", "a woman"], "B"),
    ("Which mood does the image convey?", "The photo was taken at noon.", ["calm", "tense"], "A"),
    ("Where is the object located?", "", ["on the left", "in the middle", "on the right"], "C"),
)
MMB_CATEGORIES = (("image_scene", "coarse_perception"), ("image_emotion", "coarse_perception"),
                  ("object_localization", "finegrained_perception (instance-level)"))  # fmt: skip
MMB_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
               "l2-category", "comment", "split")  # fmt: skip


def _mmbench_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """n questions and their circular copies (each option rotation, index + k * 1_000_000), sorted by index."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        question, hint, options, answer = MMB_QUESTIONS[q % len(MMB_QUESTIONS)]
        category, l2 = MMB_CATEGORIES[q % len(MMB_CATEGORIES)]
        image = encoded(photo(q, rng), "JPEG")
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            letter = "ABCD"[rotated.index(options["ABCD".index(answer)])]
            letters = dict(zip("ABCD", rotated + [""] * (4 - len(rotated)), strict=True))
            index = q + k * 1_000_000
            rows.append({"index": index, "question": question, "hint": hint, **letters, "answer": letter,
                         "category": category, "image": image, "source": "fixture", "l2-category": l2,
                         "comment": "", "split": "dev"})  # fmt: skip
    return sorted(rows, key=lambda r: r["index"])


def make_mmbench(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """MMBench_DEV_EN.tsv: n questions (options 4, 2, 3, ...) and their circular copies; copies at k >= 2 carry the
    main row's index instead of the image (the TSVs of VLMEvalKit store a repeated image once)."""
    path = folder / "MMBench_DEV_EN.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(MMB_COLUMNS)
        for row in _mmbench_rows(n, seed):
            image = base64.b64encode(row["image"]).decode()
            if row["index"] >= 2_000_000:
                image = str(row["index"] % 1_000_000)
            writer.writerow([image if c == "image" else row[c] for c in MMB_COLUMNS])
    return path


def make_mmbench_parquet(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """lmms-lab/MMBench `en/dev-*.parquet`: the same rows, image bytes inline, `L2-category`, None for no option."""
    rows = []
    optional = ("hint", "A", "B", "C", "D")
    for row in _mmbench_rows(n, seed):
        out = {c: (row[c] or None) if c in optional else row[c] for c in MMB_COLUMNS if c != "l2-category"}
        out["image"] = {"bytes": row["image"], "path": f"{row['index']}.jpg"}
        out["L2-category"] = row["l2-category"]
        rows.append(out)
    return write_parquet(folder / "en" / "dev-00000-of-00001.parquet", rows, ("image",)).parent.parent


# ---- MMMU (MMMU/MMMU on the hub: <Subject>/{dev,validation,test}-*.parquet) -----------------------------------------

MMMU_SUBJECTS = ("Art", "Math", "Physics", "Accounting")
MMMU_COLUMNS = ("id", "question", "options", "explanation", *[f"image_{k}" for k in range(1, 8)], "img_type",
                "answer", "topic_difficulty", "question_type", "subfield")  # fmt: skip


def _mmmu_row(subject: str, split: str, number: int, rng: np.random.Generator) -> dict[str, Any]:
    kind = number % 3
    images: dict[str, Any] = {f"image_{k}": None for k in range(1, 8)}
    images["image_1"] = hub_image(photo(number, rng), "image_1.png")
    if kind == 0:  # multiple choice, one image in the question
        question, options, answer = "<image 1> Which period does this work belong to?", "['Baroque', 'Gothic']", "A"
    elif kind == 1:  # multiple choice, a second image named in the options (read second)
        images["image_2"] = hub_image(photo(number + 1, rng), "image_2.png")
        question = "Compare <image 1> with the options: which shows the same object?"
        options, answer = "['<image 2>', 'neither', 'both of them']", "C"
    else:  # open question with a number for answer
        question, options, answer = "In <image 1>, what is the value of x (in cm)?", "[]", "12.5"
    return {"id": f"{split}_{subject}_{number}", "question": question, "options": options, "explanation": "",
            **images, "img_type": "['Photographs']", "answer": answer, "topic_difficulty": "Medium",
            "question_type": "open" if kind == 2 else "multiple-choice", "subfield": f"{subject} basics"}  # fmt: skip


def make_mmmu(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """MMMU/<Subject>/validation-00000-of-00001.parquet (n questions over 4 subjects) plus one dev file (not read)."""
    rng = np.random.default_rng(seed)
    root = folder / "MMMU"
    per_subject: dict[str, list[dict[str, Any]]] = {s: [] for s in MMMU_SUBJECTS}
    for i in range(n):
        subject = MMMU_SUBJECTS[i % len(MMMU_SUBJECTS)]
        per_subject[subject].append(_mmmu_row(subject, "validation", len(per_subject[subject]) + 1, rng))
    image_columns = [f"image_{k}" for k in range(1, 8)]
    for subject, rows in per_subject.items():
        if rows:
            write_parquet(root / subject / "validation-00000-of-00001.parquet", rows, image_columns)
    write_parquet(root / "Art" / "dev-00000-of-00001.parquet", [_mmmu_row("Art", "dev", 1, rng)], image_columns)
    return root


# ---- MME (MME_Benchmark_release_version/<subtask>/ with "question\tYes|No" lines, two per image) ------------------

# subtask -> (layout, image names): "split" = images/ + questions_answers_YN/, "flat" = image and .txt side by side.
MME_SUBTASKS = {
    "existence": ("flat", ("000000006040.jpg", "000000018150.jpg")),
    "artwork": ("split", ("10002.jpg", "10049.jpg")),
    "code_reasoning": ("flat", ("0020.png",)),
    "OCR": ("flat", ("0001.jpg",)),
    "celebrity": ("split", ("tt0032138_shot_0395_img_0.jpg",)),
}
MME_QUESTIONS = {
    "existence": "Is there a {} in this image?",
    "artwork": "Is this artwork created by {}?",
    "code_reasoning": "The output of the code is {}. Is this statement correct?",
    "OCR": 'Is the word in the logo "{}"?',
    "celebrity": "Is the actor inside the red bounding box named {}?",
}
MME_WORDS = ("cat", "Rembrandt", "42", "angie's", "Ray Liotta", "rocket", "Vermeer")


def _mme_items(n: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(subtask, image name, [(question, answer) x 2]) for n // 2 images, cycling through the subtasks."""
    slots = [(task, name) for task, (_, names) in MME_SUBTASKS.items() for name in names]
    items = []
    for i in range(n // 2):
        task, name = slots[i % len(slots)]
        yes, no = MME_WORDS[i % len(MME_WORDS)], MME_WORDS[(i + 3) % len(MME_WORDS)]
        qa = [(MME_QUESTIONS[task].format(w) + " Please answer yes or no.", a) for w, a in ((yes, "Yes"), (no, "No"))]
        items.append((task, name if i < len(slots) else f"{i}_{name}", qa))
    return items


def make_mme(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """MME_Benchmark_release_version with n questions (n // 2 images) over five subtasks of both folder layouts."""
    rng = np.random.default_rng(seed)
    root = folder / "MME_Benchmark_release_version"
    for i, (task, name, qa) in enumerate(_mme_items(n)):
        layout = MME_SUBTASKS[task][0]
        images = root / task / "images" if layout == "split" else root / task
        texts = root / task / "questions_answers_YN" if layout == "split" else root / task
        save(photo(i, rng), images / name)
        texts.mkdir(parents=True, exist_ok=True)
        (texts / f"{Path(name).stem}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in qa))
    (root / "eval_tool").mkdir(parents=True, exist_ok=True)  # shipped beside the subtasks; not a subtask
    (root / "eval_tool" / "calculation.py").write_text("# the official scorer lives here\n")
    return root


def make_mme_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/MME `data/test-*.parquet`: question_id = "<category>/<image name>", one row per question."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (task, name, qa) in enumerate(_mme_items(n)):
        image = hub_image(photo(i, rng), name, "PNG" if name.endswith(".png") else "JPEG")
        for q, a in qa:
            rows.append({"question_id": f"{task}/{name}", "image": image, "question": q, "answer": a, "category": task})
    return write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, ("image",)).parent.parent


# ---- POPE (AoiDragon/POPE output/coco/coco_pope_<split>.json, JSON lines; COCO val2014 photos) -------------------

POPE_SPLITS = ("adversarial", "popular", "random")
POPE_OBJECTS = ("dining table", "person", "snowboard", "chair", "car", "cup")


def _pope_lines(split: int, n: int) -> list[dict[str, Any]]:
    """n questions of one split over n // 2 photos, a "yes" then a "no" per photo, question ids from 1."""
    lines = []
    for i in range(n):
        image_id = 310196 + 1000 * ((i // 2) + 7 * split)
        obj = POPE_OBJECTS[(i + split) % len(POPE_OBJECTS)]
        lines.append({"question_id": i + 1, "image": f"COCO_val2014_{image_id:012d}.jpg",
                      "text": f"Is there a {obj} in the image?", "label": "yes" if i % 2 == 0 else "no"})  # fmt: skip
    return lines


def make_pope(folder: Path, n: int = 12, seed: int = 0, splits: Sequence[str] = POPE_SPLITS) -> Path:
    """coco/coco_pope_<split>.json (n // len(splits) questions each) beside val2014/ (LLaVA's eval layout)."""
    rng = np.random.default_rng(seed)
    root = folder / "pope"
    for s, split in enumerate(splits):
        lines = _pope_lines(POPE_SPLITS.index(split), n // len(splits))
        for line in lines:
            if not (root / "val2014" / line["image"]).is_file():
                save(photo(len(line["image"]) + s + line["question_id"], rng), root / "val2014" / line["image"])
        path = root / "coco" / f"coco_pope_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def make_pope_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/POPE `data/test-*.parquet`: id, question_id, question, answer, image_source, image, category."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, split in enumerate(POPE_SPLITS):
        for line in _pope_lines(s, n // len(POPE_SPLITS)):
            image = hub_image(photo(line["question_id"] + s, rng), line["image"], "JPEG")
            rows.append({"id": str(len(rows)), "question_id": str(line["question_id"]), "question": line["text"],
                         "answer": line["label"], "image_source": line["image"][:-4], "image": image,
                         "category": split})  # fmt: skip
    return write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, ("image",)).parent.parent


# ---- IconQA (lupantech/IconQA: iconqa_data/iconqa/<split>/<sub-task>/<pid>/data.json + image.png [+ choice_k.png]) --

ICONQA_TASKS = ("choose_txt", "fill_in_blank", "choose_img")


def _iconqa_problem(task: str, i: int) -> dict[str, Any]:
    if task == "choose_txt":
        choices = ["3", "5", "7"] if i % 2 else ["yes", "no"]
        return {"question": "How many dots are on the frame?" if i % 2 else "Are there enough cups for every plate?",
                "choices": choices, "answer": i % len(choices), "ques_type": task, "grade": "grade1",
                "label": "counting"}  # fmt: skip
    if task == "fill_in_blank":
        return {"question": "How many marbles are there? There are _ marbles.", "answer": str(4 + i), "ques_type": task,
                "grade": "prek", "label": "counting"}  # fmt: skip
    return {"question": "Which picture shows the same shape?", "choices": ["choice_0.png", "choice_1.png"],
            "answer": i % 2, "ques_type": task, "grade": "kindergarten", "label": "geometry"}  # fmt: skip


def _iconqa_items(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(task, pid, data.json) for n problems: 5 of choose_txt per 12, 4 of fill_in_blank, 3 of choose_img."""
    plan = ["choose_txt"] * 5 + ["fill_in_blank"] * 4 + ["choose_img"] * 3
    return [(plan[i % 12], str(100 + 11 * i), _iconqa_problem(plan[i % 12], i)) for i in range(n)]


def make_iconqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """iconqa_data/iconqa/test/<task>/<pid>/ for n problems, and one val problem (not read by default)."""
    rng = np.random.default_rng(seed)
    root = folder / "iconqa_data"
    items = [(t, pid, p, "test") for t, pid, p in _iconqa_items(n)]
    items.append(("choose_txt", "9", _iconqa_problem("choose_txt", 0), "val"))
    for i, (task, pid, problem, split) in enumerate(items):
        where = root / "iconqa" / split / task / pid
        write_json(where / "data.json", problem)
        save(photo(i, rng), where / "image.png")
        for k, name in enumerate(problem.get("choices", []) if task == "choose_img" else []):
            save(photo(i + k + 1, rng, (64, 64)), where / name)
    return root


def make_iconqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/ICON-QA `data/test-*.parquet`: choices comma-joined, answer a string (the index for choose_*)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (task, pid, p) in enumerate(_iconqa_items(n)):
        choice_images = [hub_image(photo(i + k + 1, rng, (64, 64)), f"choice_{k}.png") for k in range(2)]
        rows.append({"question_id": pid, "question": p["question"], "choices": ",".join(p.get("choices", [])),
                     "answer": str(p["answer"]), "query_image": hub_image(photo(i, rng), "image.png"),
                     "choice_image_0": choice_images[0] if task == "choose_img" else None,
                     "choice_image_1": choice_images[1] if task == "choose_img" else None,
                     "ques_type": task, "label": p["label"], "grade": p["grade"], "skills": p["label"]})  # fmt: skip
    columns = ("query_image", "choice_image_0", "choice_image_1")
    return write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, columns).parent.parent


# ---- MM-Vet (yuweihao/MM-Vet: mm-vet/mm-vet.json {"v1_<k>": {...}} + images/v1_<k>.png|jpg) ------------------------

MMVET_QUESTIONS = (
    ("What is x in the equation?", "-1 <AND> -5", ["ocr", "math"]),
    ("What is the animal in the image?", "cat", ["rec"]),
    ("Can you explain this meme?", "The meme pokes fun at misleading names.", ["rec", "ocr", "know", "gen"]),
)


def make_mmvet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = folder / "mm-vet"
    data = {}
    for i in range(n):
        question, answer, capability = MMVET_QUESTIONS[i % len(MMVET_QUESTIONS)]
        name = f"v1_{i}.{'jpg' if i % 2 else 'png'}"
        save(photo(i, rng), root / "images" / name)
        data[f"v1_{i}"] = {"imagename": name, "capability": capability, "question": question, "answer": answer}
    write_json(root / "mm-vet.json", data)
    return root


def make_mmvet_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/MMVet `data/test-*.parquet`: question_id, image, question, answer, image_source, capability
    (comma-joined)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        question, answer, capability = MMVET_QUESTIONS[i % len(MMVET_QUESTIONS)]
        rows.append({"question_id": f"v1_{i}", "image": hub_image(photo(i, rng), f"v1_{i}.png"), "question": question,
                     "answer": answer, "image_source": f"v1_{i}.png", "capability": ",".join(capability)})  # fmt: skip
    return write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, ("image",)).parent.parent


MAKERS = {
    "scienceqa": make_scienceqa,
    "scienceqa-parquet": make_scienceqa_parquet,
    "mmbench": make_mmbench,
    "mmbench-parquet": make_mmbench_parquet,
    "mmmu": make_mmmu,
    "mme": make_mme,
    "mme-parquet": make_mme_parquet,
    "pope": make_pope,
    "pope-parquet": make_pope_parquet,
    "iconqa": make_iconqa,
    "iconqa-parquet": make_iconqa_parquet,
    "mmvet": make_mmvet,
    "mmvet-parquet": make_mmvet_parquet,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=12, help="questions per benchmark (MMBench: main questions / 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, make in MAKERS.items():
        n = max(1, args.n // 2) if name.startswith("mmbench") else args.n
        print(f"{name}: {make(args.out_dir / name, n=n, seed=args.seed)}")


if __name__ == "__main__":
    main()
