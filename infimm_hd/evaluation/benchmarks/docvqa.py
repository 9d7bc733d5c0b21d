"""`docvqa` and `infovqa`: questions about document scans and infographics (the RRC val splits), scored by ANLS.

Official layouts (rrc.cvc.uab.es, challenges 13 and 17):

    DocVQA   <folder>/val_v1.0.json (or val_v1.0_withQT.json)
             {"dataset_name": "docvqa", "dataset_split": "val", "data": [{"questionId", "question", "image":
              "documents/<name>.png", "answers", "question_types"?, "docId", "ucsf_document_id", ...}]}
             the images at <folder>/<image> (the `documents/` folder of val.tar.gz)
    InfoVQA  <folder>/infographicsVQA_val_v1.0_withQT.json
             {"dataset_name": "infographicVQA", "data": [{"questionId", "question", "image_local_name": "<n>.jpeg",
              "answers", "answer_type", "evidence", "operation/reasoning", "image_url", "ocr_output_file"}]}
             the images at <folder>/infographicsvqa_images/<image_local_name>

or lmms-eval's hub copy `lmms-lab/DocVQA`, configs `DocVQA` / `InfographicVQA` (`<config>/validation-*.parquet`,
the same fields with `image` bytes; the snapshot's root or the config folder).

Prompt: lmms-eval 0.7.3 `docvqa_doc_to_text` / `infovqa_doc_to_text`: the question + the short-answer post_prompt.
Score: ANLS (Biten et al. 2019, threshold 0.5; lmms-eval's `anls` metric). The summary adds the breakdowns the RRC
leaderboards publish: per question type (DocVQA), per answer type / evidence / operation (InfographicVQA); one
question can carry several types and counts in each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..benchmark import SHORT_ANSWER, Benchmark, image_then_text, mean_by, register
from ..metrics.anls import anls
from ..samples import EvalSample, existing_image, require
from .release_files import first_existing, hub_files, hub_rows, inline_image, read_json

DOCVQA_FILES = ("val_v1.0.json", "val_v1.0_withQT.json")
INFOVQA_FILES = ("infographicsVQA_val_v1.0_withQT.json",)
INFOVQA_IMAGES = ("infographicsvqa_images", "images")
# The per-type fields each benchmark's summary breaks ANLS down by (lists of labels per question).
TYPE_FIELDS = {"docvqa": ("question_types",), "infovqa": ("answer_type", "evidence", "operation/reasoning")}
HUB_CONFIG = {"docvqa": "DocVQA", "infovqa": "InfographicVQA"}


def _types(record: dict[str, Any], name: str) -> dict[str, list[str]]:
    """The optional type labels of a question, as lists (the files hold lists; a bare string is one label)."""
    out = {}
    for key in TYPE_FIELDS[name]:
        value = record.get(key) or []
        out[key] = [value] if isinstance(value, str) else [str(v) for v in value]
    return out


def load_official(file: Path, name: str) -> list[EvalSample]:
    data = read_json(file)
    require(data, ("data",), file, "the top level")
    image_field = "image" if name == "docvqa" else "image_local_name"
    if name == "docvqa":
        images = file.parent  # the field holds the path below it, "documents/<name>.png"
    else:
        images = first_existing(file.parent, INFOVQA_IMAGES) or file.parent / INFOVQA_IMAGES[0]
    samples = []
    for i, q in enumerate(data["data"]):
        require(q, ("questionId", "question", image_field, "answers"), file, f"data[{i}]")
        image = existing_image(images / q[image_field], file, image_field)
        samples.append(
            EvalSample(str(q["questionId"]), q["question"], (image,), tuple(q["answers"]), meta=_types(q, name))
        )
    return samples


def load_hub(files: Sequence[Path], name: str) -> list[EvalSample]:
    samples = []
    for file, n, row in hub_rows(files, ("questionId", "question", "answers", "image")):
        image = inline_image(row["image"], file, f"row {n}")
        answers = tuple(row["answers"] or ())
        samples.append(EvalSample(str(row["questionId"]), row["question"], (image,), answers, meta=_types(row, name)))
    return samples


def loader(name: str):
    names = DOCVQA_FILES if name == "docvqa" else INFOVQA_FILES

    def load(path: Path) -> list[EvalSample]:
        """The official JSON (or its folder); else the hub copy (its root or its config folder, or a parquet)."""
        if path.suffix == ".json":
            return load_official(path, name)
        official = first_existing(path, names)
        if official is not None:
            return load_official(official, name)
        config = path / HUB_CONFIG[name]
        files = hub_files(config if config.is_dir() else path, "validation")
        return load_hub(files, name) if files else load_official(path / names[0], name)

    return load


def score(sample: EvalSample, prediction: str) -> dict[str, float]:
    return {"anls": float(anls(prediction, sample.references, threshold=0.5))}


def per_label(records: Sequence[dict[str, Any]], score_key: str, field_name: str) -> dict[str, float]:
    """Mean score (percent) per label of a multi-label `meta` field, keyed `"{score}/{field}/{label}"`."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for label in r["meta"].get(field_name) or []:
            groups[label].append(r["scores"][score_key])
    return {f"{score_key}/{field_name}/{k}": 100.0 * sum(v) / len(v) for k, v in sorted(groups.items())}


def summarizer(name: str):
    def summarize(records: Sequence[dict[str, Any]]) -> dict[str, float]:
        out = mean_by(records, "anls")
        for field_name in TYPE_FIELDS[name]:
            out |= per_label(records, "anls", field_name)
        return out

    return summarize


for _name, _paper in (("docvqa", "55.1 (ablation, MODEL_CARD.md)"), ("infovqa", "")):
    _files = DOCVQA_FILES if _name == "docvqa" else INFOVQA_FILES
    _images = "<image> ('documents/<name>.png')" if _name == "docvqa" else "infographicsvqa_images/<image_local_name>"
    register(
        Benchmark(
            name=_name,
            metric="anls",
            load=loader(_name),
            prompt=lambda s: image_then_text(s, f"{s.question}{SHORT_ANSWER}"),
            score=score,
            summarize=summarizer(_name),
            layouts=f"{' or '.join(_files)} (or its folder) with the images at {_images}; or the lmms-eval hub copy "
            f"lmms-lab/DocVQA: its root, its {HUB_CONFIG[_name]}/ folder or a validation-*.parquet",
            max_new_tokens=32,
            instruction=SHORT_ANSWER,
            paper=_paper,
        )
    )
