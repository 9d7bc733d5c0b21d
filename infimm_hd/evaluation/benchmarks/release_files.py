"""Readers every benchmark module shares: a release's JSON, a hub snapshot's parquet files and rows, inline images.

Why here and not per benchmark: the publishers' layouts differ, but the hub copies lmms-eval uses are all
`datasets` parquet snapshots with `{"bytes", "path"}` image cells, and a missing file, a non-JSON file or a missing
column must be the same clear `BenchmarkDataError` whichever benchmark meets it. Registers no benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..samples import BenchmarkDataError, EvalSample


def read_json(path: Path) -> Any:
    """The parsed file, or a `BenchmarkDataError` naming it when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkDataError(path, "does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchmarkDataError(path, f"is not JSON ({err})") from None


def first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first `folder / name` that exists (file or folder), else None."""
    return next((folder / n for n in names if (folder / n).exists()), None)


def hub_files(path: Path, split: str) -> list[Path]:
    """The parquet files of one split of a hub snapshot: `path` itself if it is a `.parquet` file, else every
    `<split>-*.parquet` (the uploaded layout) or `<split>/*.parquet` (the parquet-converter layout) under it."""
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    if not path.is_dir():
        return []
    return sorted(set(path.rglob(f"{split}-*.parquet")) | set(path.rglob(f"{split}/*.parquet")))


def hub_rows(files: Sequence[Path], columns: Sequence[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, row number, row) over the files, in order, read a few hundred rows at a time (hub copies repeat the
    image bytes per question, so a whole table at once can be many times the images' size); a file without one of
    `columns` is a `BenchmarkDataError` naming the column."""
    import pyarrow.parquet as pq

    for file in files:
        try:
            table = pq.ParquetFile(file)
        except Exception as err:  # noqa: BLE001 - any reader failure means the file is not the parquet expected
            raise BenchmarkDataError(file, f"is not a parquet file ({err})") from None
        names = table.schema_arrow.names
        for column in columns:
            if column not in names:
                raise BenchmarkDataError(file, f"has no field {column!r} (columns: {names})")
        number = 0
        for batch in table.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield file, number, row
                number += 1


def inline_image(value: Any, source: Path, where: str, field_name: str = "image") -> bytes:
    """The encoded bytes of a hub image cell (the `datasets` Image feature stores {"bytes", "path"})."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, bytes | bytearray) and value:
        return bytes(value)
    raise BenchmarkDataError(source, f"{where} field {field_name!r} holds no image bytes")


def annotations_or_hub(
    path: Path,
    annotations: str,
    split: str,
    load_official: Callable[[Path], list[EvalSample]],
    load_hub: Callable[[Sequence[Path]], list[EvalSample]],
) -> list[EvalSample]:
    """Load a benchmark released as one annotations JSON: `path` is that file, its folder, or a hub snapshot of
    `split`; with none of these, the official reader reports the missing annotations file."""
    if path.suffix == ".json":
        return load_official(path)
    if (path / annotations).is_file():
        return load_official(path / annotations)
    files = hub_files(path, split)
    return load_hub(files) if files else load_official(path / annotations)
