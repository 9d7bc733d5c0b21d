"""Image-text pairs (a JSONL, CSV or parquet table) -> "caption" shards, the stage-1 alignment data.

    python -m data_prep.pairs --input captions.jsonl --out data/pairs
    python -m data_prep.pairs --input table.csv --out data/pairs-val --split val --image-column path \\
        --caption-column text --prompt "Describe the image briefly."

Each row needs an image (a path, absolute or relative to the table's folder; parquet may also hold the bytes) and a
caption; an optional id column names the sample (else `row<N>`). The record is user = [image, prompt], assistant =
caption, `answer` = caption. Rows with a missing/empty field, or whose image is missing or does not decode, are
skipped and counted by reason in `OUT/manifest.json`. Parquet needs pyarrow (or pandas). Re-running with the same
arguments does nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cli import add_input_arguments, add_output_arguments, build_from_args, script_parser
from .shards import (
    EncodedImage,
    ImageError,
    Sample,
    Skipped,
    image_part,
    make_record,
    message,
    resolve_path,
    text_part,
    verify_image_bytes,
)

DEFAULT_PROMPT = "Describe the image briefly."
TABLE_TYPES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")


def read_table(path: Path) -> Iterator[dict[str, Any] | Skipped]:
    """Rows of a .jsonl/.json-lines, .csv or .parquet table as dicts; an unparsable JSONL line is a `Skipped`."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    yield Skipped(f"line{n + 1}", "bad_row", str(e))
                    continue
                yield row if isinstance(row, dict) else Skipped(f"line{n + 1}", "bad_row", "not a JSON object")
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise ValueError(f"{path}: unknown table type {suffix!r}; expected one of {TABLE_TYPES}")


PARQUET_HELP = "reading parquet needs pyarrow or pandas (`pip install pyarrow`), or convert the table to JSONL/CSV"


def parquet_library() -> str | None:
    """The parquet reader available: "pyarrow" or "pandas", else None."""
    for name in ("pyarrow", "pandas"):
        try:
            __import__(name if name == "pandas" else "pyarrow.parquet")
            return name
        except ImportError:
            pass
    return None


def _read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    library = parquet_library()
    if library is None:
        raise RuntimeError(f"{path}: {PARQUET_HELP}")
    if library == "pandas":
        import pandas as pd

        yield from pd.read_parquet(path).to_dict(orient="records")
        return
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches():
        yield from batch.to_pylist()


def pair_samples(
    table: Path,
    *,
    split: str = "train",
    image_column: str = "image",
    caption_column: str = "caption",
    id_column: str = "id",
    prompt: str = DEFAULT_PROMPT,
) -> Iterator[Sample | Skipped]:
    """The caption samples of one table, in row order."""
    root = table.parent
    for n, row in enumerate(read_table(table)):
        if isinstance(row, Skipped):
            yield row
            continue
        sample_id = str(row.get(id_column) or f"row{n}")
        image, caption = row.get(image_column), row.get(caption_column)
        if isinstance(image, dict):  # Hugging Face parquet: {"bytes": ..., "path": ...}
            image = image.get("bytes") or image.get("path")
        if not isinstance(image, (str, bytes)) or not image.strip():
            yield Skipped(sample_id, "missing_field", f"no {image_column!r}")
            continue
        if not isinstance(caption, str) or not caption.strip():
            yield Skipped(sample_id, "missing_field", f"no {caption_column!r}")
            continue
        messages = [message("user", image_part(), text_part(prompt)), message("assistant", text_part(caption))]
        meta = {"source": "data_prep.pairs", "table": table.name, "row": n}
        if isinstance(image, bytes):  # embedded image bytes: verified here, the writer trusts `EncodedImage`s
            try:
                source: Path | EncodedImage = verify_image_bytes(image)
            except ImageError as e:
                yield Skipped(sample_id, e.reason, e.detail)
                continue
        else:
            source, meta["image"] = resolve_path(image, root), image
        record = make_record(sample_id, "caption", messages, answer=caption, meta=meta)
        yield Sample(record, [source], split)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser("data_prep.pairs", __doc__)
    add_input_arguments(parser, "the table: .jsonl, .csv, .tsv or .parquet")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument("--id-column", default="id", help="optional; rows without it are named row<N>")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user text after the image")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.input.suffix.lower() not in TABLE_TYPES:
        parser.error(f"--input {args.input}: unknown table type; expected one of {TABLE_TYPES}")
    if args.input.suffix.lower() == ".parquet" and parquet_library() is None:
        parser.error(f"--input {args.input}: {PARQUET_HELP}")
    options = {
        "image_column": args.image_column,
        "caption_column": args.caption_column,
        "id_column": args.id_column,
        "prompt": args.prompt,
    }
    samples = pair_samples(args.input, split=args.split, **options)
    return build_from_args(args, script="data_prep.pairs", samples=samples, **options)


if __name__ == "__main__":
    main()
