"""`ocrvqa` / `ocrvqa-test`: questions about book covers (OCR-VQA, Mishra et al. ICDAR 2019), exact match.

Official layout (ocr-vqa.github.io: `dataset.json` + the `loadDataset.py` that downloads the covers):

    <folder>/dataset.json   {"<imageId>": {"imageURL": "http://ecx.images-amazon.com/images/I/<x>.jpg",
                              "questions": [...], "answers": [...], "title", "authorName", "genre",
                              "split": 1 | 2 | 3}}      (1 = train, 2 = val, 3 = test)
    <folder>/images/<imageId><extension of imageURL>   (the name `loadDataset.py` saves each cover under)

`ocrvqa` is the val split (split 2, the one the InfiMM-HD paper reports), `ocrvqa-test` the test split (split 3).
Each cover has several questions; the sample id is `<imageId>-<index of the question>` (the release has no ids).
lmms-eval 0.7.3 has no OCR-VQA task, so the prompt is LLaVA-1.5's for OCR-VQA (its instruction data asks these
questions with the short-answer suffix): the question + "\\nAnswer the question using a single word or phrase.".
Score: exact match after stripping, lower-casing and deleting punctuation (`evaluation.metrics.exact_match`);
the release defines no breakdown.
"""

from __future__ import annotations

from pathlib import Path

from ..benchmark import SHORT_ANSWER, Benchmark, image_then_text, mean_by, register
from ..metrics.exact_match import exact_match
from ..samples import BenchmarkDataError, EvalSample, existing_image, require
from .release_files import read_json

ANNOTATIONS = "dataset.json"
SPLIT_CODES = {"ocrvqa": 2, "ocrvqa-test": 3}


def load_split(path: Path, split: int) -> list[EvalSample]:
    file = path if path.suffix == ".json" else path / ANNOTATIONS
    data = read_json(file)
    if not isinstance(data, dict):
        raise BenchmarkDataError(file, f"holds a {type(data).__name__}, expected an object keyed by imageId")
    images = file.parent / "images"
    samples = []
    for image_id, cover in data.items():
        where = f"image {image_id!r}"
        require(cover, ("imageURL", "questions", "answers", "split"), file, where)
        if cover["split"] != split:
            continue
        if len(cover["questions"]) != len(cover["answers"]):
            raise BenchmarkDataError(
                file, f"{where} has {len(cover['questions'])} 'questions' but {len(cover['answers'])} 'answers'"
            )
        extension = Path(cover["imageURL"]).suffix
        image = existing_image(images / f"{image_id}{extension}", file, "imageURL")
        meta = {"genre": cover.get("genre")}
        for i, (question, answer) in enumerate(zip(cover["questions"], cover["answers"], strict=True)):
            samples.append(EvalSample(f"{image_id}-{i}", question, (image,), (str(answer),), meta=meta))
    return samples


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {
        "exact_match": exact_match(prediction.strip(), sample.references[0], ignore_case=True, ignore_punctuation=True)
    }


for _name, _code in SPLIT_CODES.items():
    register(
        Benchmark(
            name=_name,
            metric="exact_match",
            load=lambda path, _c=_code: load_split(path, _c),
            prompt=lambda s: image_then_text(s, f"{s.question}{SHORT_ANSWER}"),
            score=score,
            summarize=lambda records: mean_by(records, "exact_match"),
            layouts=f"{ANNOTATIONS} (or its folder; the questions with 'split' {_code}) beside "
            "images/<imageId><extension of imageURL>",
            max_new_tokens=32,
            instruction=SHORT_ANSWER,
            paper="66.0 (13B, MODEL_CARD.md)" if _name == "ocrvqa" else "",
        )
    )
