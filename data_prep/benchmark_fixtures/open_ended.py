"""Tiny copies of the open-ended benchmarks, written in each publisher's exact layout (and lmms-eval's hub layout).

    python -m data_prep.benchmark_fixtures.open_ended OUT_DIR [--n 12] [--seed 0]

Why: the loaders in `infimm_hd.evaluation.benchmarks` must read the files as they are distributed, and tests cannot
download them. Each `make_<name>(folder, n, seed)` writes `n` questions with the published file names, JSON structure,
field names and image naming (COCO_val2014_<id:012d>.jpg, documents/<doc>.png, ...) and returns the path to give the
benchmark's `load`; `make_<name>_parquet` writes the lmms-eval hub copy (`datasets` Image cells: {"bytes", "path"}).
Images are real photos from `skimage.data`, cropped and resized at random; the questions and answers are plausible
but need not be true of the photo. The layouts, field by field, are those the benchmark modules' docstrings cite.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field", "immunohistochemistry")
DOCUMENTS = ("page", "text", "camera", "clock")  # grey pages of text (and two plain photos) for the document sets
CHARTS = ("colorwheel", "immunohistochemistry", "coffee", "logo")


def photo(rng: np.random.Generator, names: tuple[str, ...] = PHOTOS, index: int | None = None) -> Image.Image:
    """An RGB skimage.data photo, a random 60-100% crop of it, resized by a random factor (at least 48 px)."""
    from skimage import data

    name = names[int(rng.integers(len(names)))] if index is None else names[index % len(names)]
    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array).convert("RGB")
    w, h = image.size
    cw, ch = max(16, int(w * rng.uniform(0.6, 1.0))), max(16, int(h * rng.uniform(0.6, 1.0)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    scale = rng.uniform(0.5, 1.1)
    return image.crop((x, y, x + cw, y + ch)).resize((max(48, int(cw * scale)), max(48, int(ch * scale))))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(image, "PNG" if path.suffix.lower() == ".png" else "JPEG"))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def image_cell(image: Image.Image, name: str, fmt: str = "JPEG") -> dict[str, Any]:
    """A `datasets` Image feature cell."""
    return {"bytes": encoded(image, fmt), "path": name}


def ten_answers(rng: np.random.Generator, pool: list[str]) -> list[str]:
    """Ten human answers: the first of `pool` 6-10 times (so it is the majority), the rest drawn from the others."""
    majority = int(rng.integers(6, 11))
    others = [pool[int(rng.integers(1, len(pool)))] for _ in range(10 - majority)] if len(pool) > 1 else []
    return [pool[0]] * majority + others + [pool[0]] * (10 - majority - len(others))


# ---- VQAv2 / OK-VQA --------------------------------------------------------------------------------------------------

VQA_QUESTIONS = [  # (question_type, question, answer_type, answers: the majority first)
    ("what color is the", "What color is the cup?", "other", ["white", "blue", "white and blue"]),
    ("is the", "Is the person smiling?", "yes/no", ["yes", "no"]),
    ("how many", "How many objects are on the table?", "number", ["2", "3", "two"]),
    ("what is the", "What is the man holding?", "other", ["flag", "helmet", "nothing"]),
    ("are there", "Are there any animals in the picture?", "yes/no", ["no", "yes"]),
    ("what", "What is in the background?", "other", ["sky", "wall", "trees"]),
]
OKVQA_QUESTIONS = [  # OK-VQA's question_type is its knowledge category code ("one" = vehicles and transportation, ...)
    ("one", "What is the top speed of this kind of vehicle?", "other", ["100 mph", "60 mph", "fast"]),
    ("five", "Which country is this dish from?", "other", ["italy", "france", "usa"]),
    ("eight", "What family does this animal belong to?", "other", ["feline", "cat", "felidae"]),
    ("two", "What brand makes this kind of camera?", "other", ["nikon", "canon", "kodak"]),
]
VQA_FILES = {
    "vqav2": ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json", "validation"),
    "okvqa": ("OpenEnded_mscoco_val2014_questions.json", "mscoco_val2014_annotations.json", "val2014"),
}


def _vqa(n: int, seed: int, name: str) -> tuple[list[dict[str, Any]], dict[int, Image.Image]]:
    """n annotated questions over about n/2 COCO-like photos (two questions per photo, as VQA asks several)."""
    rng = np.random.default_rng(seed)
    templates = VQA_QUESTIONS if name == "vqav2" else OKVQA_QUESTIONS
    images: dict[int, Image.Image] = {}
    rows = []
    for i in range(n):
        image_id = 262148 + 7919 * (i // 2)
        images.setdefault(image_id, photo(rng))
        qtype, question, atype, pool = templates[i % len(templates)]
        answers = ten_answers(rng, pool)
        rows.append(
            {
                "question_id": image_id * 1000 + i % 2,
                "image_id": image_id,
                "question": question,
                "question_type": qtype,
                "answer_type": atype,
                "multiple_choice_answer": max(set(answers), key=answers.count),
                "answers": [
                    {"answer": a, "answer_confidence": "yes" if j % 3 else "maybe", "answer_id": j + 1}
                    | ({"raw_answer": a} if name == "okvqa" else {})
                    for j, a in enumerate(answers)
                ],
            }
        )
    return rows, images


def _make_vqa(folder: Path, n: int, seed: int, name: str) -> Path:
    rows, images = _vqa(n, seed, name)
    questions_file, annotations_file, _ = VQA_FILES[name]
    header = {"info": {"description": f"{name} fixture", "version": "2.0" if name == "vqav2" else "1.0"}}
    header |= {"license": {"name": "CC BY 4.0"}, "data_type": "mscoco", "data_subtype": "val2014"}
    questions = [{"image_id": r["image_id"], "question": r["question"], "question_id": r["question_id"]} for r in rows]
    write_json(folder / questions_file, header | {"task_type": "Open-Ended", "questions": questions})
    annotations = [{k: v for k, v in r.items() if k != "question"} for r in rows]
    if name == "okvqa":
        annotations = [a | {"confidence": 3} for a in annotations]
    write_json(folder / annotations_file, header | {"annotations": annotations})
    for image_id, image in images.items():
        save(image, folder / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    return folder


def make_vqav2(folder: Path, n: int = 12, seed: int = 0) -> Path:
    return _make_vqa(Path(folder), n, seed, "vqav2")


def make_okvqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    return _make_vqa(Path(folder), n, seed, "okvqa")


def _make_vqa_parquet(folder: Path, n: int, seed: int, name: str) -> Path:
    """lmms-lab/VQAv2 (answers as dicts, ids as int64) and lmms-lab/OK-VQA (answers as strings, ids as strings)."""
    rows, images = _vqa(n, seed, name)
    table = []
    for r in rows:
        cell = image_cell(images[r["image_id"]], f"COCO_val2014_{r['image_id']:012d}.jpg")
        if name == "vqav2":
            table.append(r | {"image": cell})
        else:
            answers = [a["answer"] for a in r["answers"]]
            table.append(
                {"question_id": str(r["question_id"]), "image": cell, "question": r["question"]}
                | {"answers": answers, "question_type": r["question_type"], "answer_type": r["answer_type"]}
            )
    write_parquet(Path(folder) / "data" / f"{VQA_FILES[name][2]}-00000-of-00001.parquet", table)
    return Path(folder)


def make_vqav2_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    return _make_vqa_parquet(folder, n, seed, "vqav2")


def make_okvqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    return _make_vqa_parquet(folder, n, seed, "okvqa")


# ---- TextVQA ---------------------------------------------------------------------------------------------------------

TEXTVQA_QUESTIONS = [
    ("what is the brand of this camera?", ["nikon", "nikon", "dakota"], ["Camera"]),
    ("what does the sign say?", ["stop", "stop sign"], ["Street sign"]),
    ("what number is on the rocket?", ["5", "five"], ["Rocket"]),
    ("what is written on the mug?", ["coffee", "cafe"], ["Coffee cup", "Mug"]),
]


def _textvqa(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    rows, images = [], {}
    for i in range(n):
        image_id = f"{(0x003A8AE2EF43B901 + 104729 * (i // 2)):016x}"
        image = images.setdefault(image_id, photo(rng))
        question, pool, classes = TEXTVQA_QUESTIONS[i % len(TEXTVQA_QUESTIONS)]
        rows.append(
            {
                "question": question,
                "image_id": image_id,
                "image_classes": classes,
                "flickr_original_url": f"https://farm2.staticflickr.com/{image_id}_o.jpg",
                "flickr_300k_url": f"https://c4.staticflickr.com/{image_id}_z.jpg",
                "image_width": image.width,
                "image_height": image.height,
                "answers": ten_answers(rng, pool),
                "question_tokens": question.rstrip("?").split() + ["?"],
                "question_id": 34602 + i,
                "set_name": "val",
            }
        )
    return rows, images


def make_textvqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    folder = Path(folder)
    rows, images = _textvqa(n, seed)
    header = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1"}
    write_json(folder / "TextVQA_0.5.1_val.json", header | {"data": rows})
    for image_id, image in images.items():
        save(image, folder / "train_images" / f"{image_id}.jpg")
    return folder


def make_textvqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    rows, images = _textvqa(n, seed)
    table = [
        r | {"image": image_cell(images[r["image_id"]], f"{r['image_id']}.jpg"), "ocr_tokens": ["sign"]} for r in rows
    ]
    write_parquet(Path(folder) / "data" / "validation-00000-of-00001.parquet", table)
    return Path(folder)


# ---- DocVQA / InfographicVQA -----------------------------------------------------------------------------------------

DOCVQA_QUESTIONS = [
    ("What is the date mentioned in this letter?", ["May 14, 1975", "14 May 1975"], ["handwritten", "form"]),
    ("What is the title of the document?", ["Annual Report"], ["layout"]),
    ("What is the total amount?", ["$1,250.00", "1,250"], ["table/list"]),
    ("Who is the sender of the letter?", ["Dr. R. Smith"], ["free_text", "layout"]),
]
INFOVQA_QUESTIONS = [  # (question, answers, answer_type, evidence, operation/reasoning)
    ("What percentage of people use public transport?", ["35%"], ["single span"], ["Text"], []),
    ("How many countries are shown in the map?", ["4", "four"], ["non-extractive"], ["Map"], ["Counting"]),
    ("Which is the most common age group?", ["18-24"], ["single span"], ["Figure", "Text"], []),
    ("What is the difference between the two values?", ["12"], ["non-extractive"], ["Table/List"], ["Arithmetic"]),
]


def _docvqa(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    rows, images = [], {}
    for i in range(n):
        doc = f"pybv{228 + i // 2:04d}_{81 + i // 2}"
        images.setdefault(doc, photo(rng, DOCUMENTS))
        question, answers, types = DOCVQA_QUESTIONS[i % len(DOCVQA_QUESTIONS)]
        rows.append(
            {
                "questionId": 49153 + 7 * i,
                "question": question,
                "question_types": types,
                "image": f"documents/{doc}.png",
                "docId": 14465 + i // 2,
                "ucsf_document_id": doc.split("_")[0],
                "ucsf_document_page_no": doc.split("_")[1],
                "answers": answers,
                "data_split": "val",
            }
        )
    return rows, images


def make_docvqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    folder = Path(folder)
    rows, images = _docvqa(n, seed)
    write_json(
        folder / "val_v1.0.json",
        {"dataset_name": "docvqa", "dataset_version": "1.0", "dataset_split": "val", "data": rows},
    )
    for doc, image in images.items():
        save(image, folder / "documents" / f"{doc}.png")
    return folder


def make_docvqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/DocVQA config DocVQA (its ids are strings there)."""
    rows, images = _docvqa(n, seed)
    table = []
    for r in rows:
        doc = Path(r["image"]).stem
        table.append(r | {"questionId": str(r["questionId"]), "image": image_cell(images[doc], f"{doc}.png", "PNG")})
    write_parquet(Path(folder) / "DocVQA" / "validation-00000-of-00001.parquet", table)
    return Path(folder)


def _infovqa(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    rows, images = [], {}
    for i in range(n):
        name = f"{37313 + i // 2}.jpeg"
        images.setdefault(name, photo(rng, CHARTS))
        question, answers, atype, evidence, operation = INFOVQA_QUESTIONS[i % len(INFOVQA_QUESTIONS)]
        rows.append(
            {
                "questionId": 65718 + 3 * i,
                "question": question,
                "image_local_name": name,
                "image_url": f"https://example.org/infographics/{name}",
                "ocr_output_file": name.replace(".jpeg", ".json"),
                "answers": answers,
                "data_split": "val",
                "answer_type": atype,
                "evidence": evidence,
                "operation/reasoning": operation,
            }
        )
    return rows, images


def make_infovqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    folder = Path(folder)
    rows, images = _infovqa(n, seed)
    header = {"dataset_name": "infographicVQA", "dataset_version": "1.0", "dataset_split": "val"}
    write_json(folder / "infographicsVQA_val_v1.0_withQT.json", header | {"data": rows})
    for name, image in images.items():
        save(image, folder / "infographicsvqa_images" / name)
    return folder


def make_infovqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/DocVQA config InfographicVQA (no `evidence` column there)."""
    rows, images = _infovqa(n, seed)
    table = []
    for r in rows:
        keep = {k: v for k, v in r.items() if k not in ("image_local_name", "ocr_output_file", "evidence")}
        cell = image_cell(images[r["image_local_name"]], r["image_local_name"])
        table.append(keep | {"questionId": str(r["questionId"]), "image": cell, "ocr": "[]"})
    write_parquet(Path(folder) / "InfographicVQA" / "validation-00000-of-00001.parquet", table)
    return Path(folder)


# ---- ChartQA ---------------------------------------------------------------------------------------------------------

CHARTQA_QUESTIONS = [
    ("What is the value of the tallest bar?", "52"),
    ("Which party had the highest share in 2016?", "Democrats"),
    ("What percentage of respondents said yes?", "45%"),
    ("What is the average of the last two values?", "17.5"),
    ("Is the value for 2019 greater than 2018?", "Yes"),
]


def _chartqa(n: int, seed: int) -> tuple[dict[str, list[dict[str, str]]], dict[str, Image.Image]]:
    """The first ceil(n/2) questions human-written, the rest augmented (ChartQA test has 1,250 of each)."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[dict[str, str]]] = {"human": [], "augmented": []}
    images = {}
    for i in range(n):
        split = "human" if i < (n + 1) // 2 else "augmented"
        name = f"{41699051005347 + 13 * (i // 2)}.png" if split == "human" else f"multi_col_{803 + i // 2}.png"
        images.setdefault(name, photo(rng, CHARTS))
        query, label = CHARTQA_QUESTIONS[i % len(CHARTQA_QUESTIONS)]
        splits[split].append({"imgname": name, "query": query, "label": label})
    return splits, images


def make_chartqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """`<folder>/ChartQA Dataset/test/{test_human.json, test_augmented.json, png/}`; returns "ChartQA Dataset"."""
    root = Path(folder) / "ChartQA Dataset"
    splits, images = _chartqa(n, seed)
    for split, rows in splits.items():
        write_json(root / "test" / f"test_{split}.json", rows)
    for name, image in images.items():
        save(image, root / "test" / "png" / name)
    return root


def make_chartqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    splits, images = _chartqa(n, seed)
    table = [
        {"type": f"{split}_test", "question": r["query"], "answer": r["label"]}
        | {"image": image_cell(images[r["imgname"]], r["imgname"], "PNG")}
        for split in ("human", "augmented")
        for r in splits[split]
    ]
    write_parquet(Path(folder) / "data" / "test-00000-of-00001.parquet", table)
    return Path(folder)


# ---- GQA -------------------------------------------------------------------------------------------------------------

GQA_QUESTIONS = [  # (question, answer, full answer, structural, semantic, detailed)
    (
        "Is the man to the left of the bag?",
        "yes",
        "Yes, the man is to the left of the bag.",
        "verify",
        "rel",
        "relVerify",
    ),
    ("What color is the cup?", "white", "The cup is white.", "query", "attr", "colorQuery"),
    ("Which kind of animal is this?", "cat", "This is a cat.", "query", "cat", "categoryQuery"),
    ("Is the sky blue or gray?", "gray", "The sky is gray.", "choose", "attr", "chooseAttr"),
    ("Are there both cups and plates?", "no", "No, there is a cup but no plates.", "logical", "obj", "twoDifferent"),
    (
        "Do the shirt and the pants have the same color?",
        "no",
        "No, the shirt is white and the pants are black.",
        "compare",
        "attr",
        "sameColor",
    ),
]


def _gqa(n: int, seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    questions, images = {}, {}
    for i in range(n):
        image_id = f"n{161313 + 17 * (i // 2)}"
        images.setdefault(image_id, photo(rng))
        question, answer, full, structural, semantic, detailed = GQA_QUESTIONS[i % len(GQA_QUESTIONS)]
        questions[str(20968379 + 11 * i)] = {
            "semantic": [{"operation": "select", "dependencies": [], "argument": "cup (1234567)"}],
            "entailed": [],
            "equivalent": [str(20968379 + 11 * i)],
            "question": question,
            "imageId": image_id,
            "isBalanced": True,
            "groups": {"global": None, "local": f"10c-{detailed}"},
            "answer": answer,
            "semanticStr": "select: cup (1234567)->query: color [0]",
            "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
            "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
            "fullAnswer": full,
        }
    return questions, images


def make_gqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    folder = Path(folder)
    questions, images = _gqa(n, seed)
    write_json(folder / "testdev_balanced_questions.json", questions)
    for image_id, image in images.items():
        save(image, folder / "images" / f"{image_id}.jpg")
    return folder


def make_gqa_parquet(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """lmms-lab/GQA configs testdev_balanced_instructions + testdev_balanced_images (nested fields that vary per
    question, `semantic` and `annotations`, are left out: parquet needs one struct type per column)."""
    questions, images = _gqa(n, seed)
    drop = ("semantic", "annotations")
    rows = [{"id": qid} | {k: v for k, v in q.items() if k not in drop} for qid, q in questions.items()]
    folder = Path(folder)
    write_parquet(folder / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows)
    cells = [{"id": image_id, "image": image_cell(image, f"{image_id}.jpg")} for image_id, image in images.items()]
    write_parquet(folder / "testdev_balanced_images" / "testdev-00000-of-00001.parquet", cells)
    return folder


# ---- OCR-VQA ---------------------------------------------------------------------------------------------------------

BOOKS = [  # (title, author, genre)
    ("Mom's Family Wall Calendar 2016", "Sandra Boynton", "Calendars"),
    ("The Joy of Cooking", "Irma S. Rombauer", "Cookbooks, Food & Wine"),
    ("A Brief History of Time", "Stephen Hawking", "Science & Math"),
    ("The Cat in the Hat", "Dr. Seuss", "Children's Books"),
]


def _cover(book: tuple[str, str, str], count: int) -> tuple[list[str], list[str]]:
    title, author, genre = book
    qa = [
        ("Who wrote this book?", author),
        ("What is the title of this book?", title),
        ("What type of book is this?", genre),
        (f"Is this a {genre.split(',')[0].lower()} book?", "Yes"),
        ("Is this a religious book?", "No"),
    ]
    return [q for q, _ in qa[:count]], [a for _, a in qa[:count]]


def make_ocrvqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """`dataset.json` + `images/<imageId>.jpg`: n questions on val covers (split 2), up to 5 per cover, plus one train
    cover (split 1) and one test cover (split 3) of 3 questions each."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    counts = [min(5, n - 5 * k) for k in range((n + 4) // 5)]
    covers = [(2, c) for c in counts] + [(1, 3), (3, 3)]
    data = {}
    for k, (split, count) in enumerate(covers):
        image_id = f"{761183272 + 1009 * k:010d}"
        book = BOOKS[k % len(BOOKS)]
        questions, answers = _cover(book, count)
        data[image_id] = {
            "imageURL": f"http://ecx.images-amazon.com/images/I/61Y5cOd{k:03d}L.jpg",
            "questions": questions,
            "answers": answers,
            "title": book[0],
            "authorName": book[1],
            "genre": book[2],
            "split": split,
        }
        save(photo(rng), folder / "images" / f"{image_id}.jpg")
    write_json(folder / "dataset.json", data)
    return folder


# ---- ST-VQA ----------------------------------------------------------------------------------------------------------

STVQA_QUESTIONS = [
    ("What is the name of the shop?", ["cafe roma", "roma"]),
    ("What number is on the bus?", ["42"]),
    ("What brand is shown on the sign?", ["coca cola", "coca-cola"]),
]
STVQA_SOURCES = (("coco-text", "COCO_train2014_{:012d}.jpg"), ("visual7w", "v7w_{}.jpg"), ("imageNet", "n0{}.JPEG"))


def make_stvqa(folder: Path, n: int = 12, seed: int = 0) -> Path:
    """`train_task_3.json` + `train_images/<file_path>`, file paths under coco-text/, visual7w/ and imageNet/."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows, written = [], set()
    for i in range(n):
        source, pattern = STVQA_SOURCES[(i // 2) % len(STVQA_SOURCES)]
        file_name = pattern.format(378466 + 31 * (i // 2))
        file_path = f"{source}/{file_name}"
        if file_path not in written:
            save(photo(rng), folder / "train_images" / file_path)
            written.add(file_path)
        question, answers = STVQA_QUESTIONS[i % len(STVQA_QUESTIONS)]
        rows.append(
            {
                "question_id": 12000 + i,
                "question": question,
                "question_tokens": question.rstrip("?").split() + ["?"],
                "answers": answers,
                "file_path": file_path,
                "file_name": file_name,
                "dataset": source,
                "set_name": "train",
            }
        )
    header = {"dataset_name": "ST-VQA", "dataset_version": "1.0", "task_name": "task_3", "dataset_split": "train"}
    write_json(folder / "train_task_3.json", header | {"data": rows})
    return folder


MAKERS: dict[str, Callable[..., Path]] = {
    "vqav2": make_vqav2,
    "vqav2-hub": make_vqav2_parquet,
    "okvqa": make_okvqa,
    "okvqa-hub": make_okvqa_parquet,
    "textvqa": make_textvqa,
    "textvqa-hub": make_textvqa_parquet,
    "docvqa": make_docvqa,
    "docvqa-hub": make_docvqa_parquet,
    "infovqa": make_infovqa,
    "infovqa-hub": make_infovqa_parquet,
    "chartqa": make_chartqa,
    "chartqa-hub": make_chartqa_parquet,
    "gqa": make_gqa,
    "gqa-hub": make_gqa_parquet,
    "ocrvqa": make_ocrvqa,
    "stvqa": make_stvqa,
}


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Write every fixture into OUT_DIR/<name>; prints and returns the path to give each benchmark's loader."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.benchmark_fixtures.open_ended",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=12, help="questions per benchmark")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = {name: make(args.out_dir / name, args.n, args.seed) for name, make in MAKERS.items()}
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return paths


if __name__ == "__main__":
    main()
