"""`EvalSample`: one benchmark question as every loader produces it, whatever the benchmark's published layout.

Loaders (`benchmarks/`) turn a benchmark's own files (VQA-style JSON, TSV with base64 images, parquet with image
bytes, folders of text files) into a list of these; the runner, the metrics and the lmms-eval adapter see only
this type. Images stay as paths (checked to exist when loaded) or encoded bytes, and are decoded per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A path to an image file, or the encoded bytes of one (parquet / base64 TSV rows carry their images inline).
ImageRef = str | bytes


class BenchmarkDataError(ValueError):
    """A benchmark file that does not have the layout its loader reads: names the file and the field."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


@dataclass(frozen=True)
class EvalSample:
    """One question.

    qid: the benchmark's own question id, as a string (unique within the loaded split).
    question: the question text as published (no options, no prompt suffix: the benchmark adds those).
    images: the images the question is about (one for most benchmarks, up to 7 for MMMU); may be empty.
    references: the accepted answers (VQA: the 10 human answers; multiple choice: the correct letter).
    choices: option texts in letter order (A, B, ...) for multiple-choice questions, else empty.
    meta: JSON-serialisable facts the summary groups by (subtask, category, question type, circular group...).
    """

    qid: str
    question: str
    images: tuple[ImageRef, ...]
    references: tuple[str, ...]
    choices: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


def existing_image(path: Path, source: str | Path, field_name: str) -> str:
    """`path` as a string if the file exists, else a `BenchmarkDataError` naming the record's file and field."""
    if not path.is_file():
        raise BenchmarkDataError(source, f"field {field_name!r} names the image {path}, which does not exist")
    return str(path)


def require(record: Mapping[str, Any], keys: tuple[str, ...], source: str | Path, where: str) -> None:
    """Raise a `BenchmarkDataError` naming the first of `keys` missing from `record` (at `where` in `source`)."""
    if not isinstance(record, Mapping):
        raise BenchmarkDataError(source, f"{where} is a {type(record).__name__}, expected an object")
    for key in keys:
        if key not in record:
            raise BenchmarkDataError(source, f"{where} has no field {key!r} (fields: {sorted(record)[:12]})")
