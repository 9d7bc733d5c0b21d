"""What every `data_prep` script shares: verified images, record parts, shard writing, the manifest, idempotency.

A script turns its source into a stream of `Sample`s (a record in the `infimm_hd.training.sample_format` contract
plus its images) and `Skipped` items, and hands it to `build`, which

1. returns at once when `OUT/manifest.json` already describes the same script, arguments and inputs and every shard
   it lists still has its recorded sha256 (so re-running a script is free and says so);
2. otherwise removes the shards of an earlier run and writes new ones with `webdataset.ShardWriter`, loading and
   fully decoding every image first: a missing, truncated or non-image file skips its sample with a reason, never
   crashes the run;
3. writes the manifest last (atomically), so an interrupted run leaves no manifest and the next run rebuilds.

Shards are byte-reproducible: tar members get a fixed mtime, owner and mode, JSON is written with sorted keys.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image, UnidentifiedImageError

from infimm_hd.training.sample_format import TASKS, validate_record

FORMAT_VERSION = 1  # bump when a change to the writer changes the bytes of existing outputs: forces rebuilds
MANIFEST = "manifest.json"
MAX_SKIP_ITEMS = 1000  # skipped items listed one by one in the manifest; the counts by reason are always complete
_KEPT_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}  # stored as-is, no re-encode
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]+-\d{5}\.tar$")

Log = Callable[[str], None]


# -- images ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedImage:
    """Image file bytes ready to store as `<key>.<i>.<ext>`."""

    data: bytes
    ext: str  # "png" | "jpg" | "webp"


class SkipSample(Exception):
    """A source item that cannot become a sample; `reason` is the manifest's skip reason (a short snake_case word)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ImageError(SkipSample):
    """An image that cannot be used: missing_image, unreadable_image, not_an_image, corrupt_image, image_too_large."""


def verify_image_bytes(data: bytes) -> EncodedImage:
    """Fully decode `data` with PIL; keep the bytes of JPEG/PNG/WebP sources, re-encode anything else as PNG.

    Decoding every pixel (not just `Image.verify`) is what catches truncated JPEGs (with PIL's default
    `ImageFile.LOAD_TRUNCATED_IMAGES = False`, which nothing in this repository changes). Re-encoding only the formats
    the sample contract does not allow keeps JPEG sources free of a second lossy pass.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt = image.format or ""
            if fmt in _KEPT_FORMATS:
                return EncodedImage(data, _KEPT_FORMATS[fmt])
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            out = io.BytesIO()
            image.save(out, format="PNG")
            return EncodedImage(out.getvalue(), "png")
    except UnidentifiedImageError as e:
        raise ImageError("not_an_image", str(e)) from e
    except Image.DecompressionBombError as e:
        raise ImageError("image_too_large", str(e)) from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for broken files
        raise ImageError("corrupt_image", f"{type(e).__name__}: {e}") from e


def load_image(path: Path) -> EncodedImage:
    """Read and verify an image file; `ImageError` says why it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError("missing_image", str(path)) from e
    except OSError as e:  # a directory, no permission, ...
        raise ImageError("unreadable_image", f"{path}: {e}") from e
    try:
        return verify_image_bytes(data)
    except ImageError as e:
        raise ImageError(e.reason, f"{path}: {e.detail}") from e


def resolve_path(value: str, root: Path) -> Path:
    """An image path from a table: absolute as given, relative to `root` otherwise."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


# -- records ---------------------------------------------------------------------------------------------------------


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part() -> dict[str, Any]:
    return {"type": "image"}


def message(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    """A chat message; `message("assistant", text_part("7"))`."""
    return {"role": role, "content": list(parts)}


def make_record(
    id: str,
    task: str,
    messages: list[dict[str, Any]],
    answer: str | None = None,
    rejected: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A record with every field of the sample contract present."""
    return {"id": id, "task": task, "messages": messages, "answer": answer, "rejected": rejected, "meta": meta or {}}


@dataclass
class Sample:
    """One record and its images in order: paths are loaded and verified by `build`, `EncodedImage`s are trusted."""

    record: dict[str, Any]
    images: list[Path | EncodedImage] = field(default_factory=list)
    split: str = "train"


@dataclass
class Skipped:
    """A source item that produced no sample."""

    id: str
    reason: str
    detail: str = ""


def jsonl_samples(path: Path, convert: Callable[[dict[str, Any], str, int], Sample]) -> Iterator[Sample | Skipped]:
    """`convert(row, sample_id, line_number)` for every non-blank line of a JSONL file, in line order.

    The id is the row's "id", else "line<N>". A line that is not a JSON object, or that `convert` rejects with a
    `ValueError` or `SkipSample`, becomes a `Skipped` with its reason: one bad row never stops a file.
    """
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            sample_id = f"line{n + 1}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise SkipSample("bad_row", "not a JSON object")
                sample_id = str(row.get("id", sample_id))
                sample = convert(row, sample_id, n + 1)
            except SkipSample as e:
                yield Skipped(sample_id, e.reason, e.detail)
                continue
            except ValueError as e:  # json.JSONDecodeError included
                yield Skipped(sample_id, "bad_row", str(e))
                continue
            yield sample


def sample_key(record_id: str) -> str:
    """A webdataset key for an id: unchanged when it is already a valid key, else sanitised + a short hash.

    >>> sample_key("COCO_000123")
    'COCO_000123'
    >>> sample_key("a/b.jpg")
    'a_b_jpg_4cfd2b8c'
    """
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", record_id)
    if clean == record_id and clean:
        return clean
    return f"{clean}_{hashlib.sha1(record_id.encode()).hexdigest()[:8]}"


# -- writing ---------------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardSink:
    """Writes samples to `OUT/<prefix>-%05d.tar`, one `webdataset.ShardWriter` per prefix, opened on first use."""

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir = out_dir
        self.shard_size = shard_size
        self.writers: dict[str, wds.ShardWriter] = {}
        self.counts: dict[str, int] = {}  # shard path -> samples, in writing order

    def write(self, prefix: str, key: str, record: dict[str, Any], images: list[EncodedImage]) -> None:
        if prefix not in self.writers:
            pattern = self.out_dir / f"{prefix}-%05d.tar"
            pattern.parent.mkdir(parents=True, exist_ok=True)
            # Fixed mtime/owner/mode and no encoder: the same samples give byte-identical tars.
            self.writers[prefix] = wds.ShardWriter(
                str(pattern), maxcount=self.shard_size, verbose=0, encoder=False, mtime=0.0
            )
        sample = {"__key__": key, "json": json.dumps(record, ensure_ascii=False, sort_keys=True).encode()}
        for i, image in enumerate(images):
            sample[f"{i}.{image.ext}"] = image.data
        writer = self.writers[prefix]
        writer.write(sample)
        self.counts[writer.fname] = self.counts.get(writer.fname, 0) + 1

    def close(self) -> list[dict[str, Any]]:
        """Close every shard; their manifest entries (path relative to OUT, samples, bytes, sha256), sorted."""
        for writer in self.writers.values():
            writer.close()
        entries = []
        for name, count in sorted(self.counts.items()):
            path = Path(name)
            entries.append(
                {
                    "path": path.relative_to(self.out_dir).as_posix(),
                    "samples": count,
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                }
            )
        return entries


# -- manifest and idempotency ----------------------------------------------------------------------------------------


def input_fingerprint(*paths: Path) -> dict[str, str]:
    """sha256 of each input table, so an edited table rebuilds (the images it points to are not hashed: too slow)."""
    return {str(p.resolve()): file_sha256(p) for p in paths}


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def up_to_date(out_dir: Path, identity: dict[str, Any]) -> tuple[bool, str]:
    """Whether OUT already holds this exact build: same identity and every listed shard intact. Also says why not."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        return False, "no valid manifest"
    changed = [k for k in identity if manifest.get(k) != identity[k]]
    if changed:
        return False, f"{', '.join(changed)} changed"
    for shard in manifest.get("shards", []):
        path = out_dir / shard["path"]
        if not path.is_file() or path.stat().st_size != shard["bytes"] or file_sha256(path) != shard["sha256"]:
            return False, f"shard {shard['path']} is missing or damaged"
    return True, "up to date"


def clear_output(out_dir: Path) -> None:
    """Remove the manifest and the shards of an earlier build: those it lists, plus any `<name>-NNNNN.tar` in OUT or
    in OUT/<task>/ left by an interrupted run. Nothing deeper: OUT may hold other folders that are not ours."""
    old = read_manifest(out_dir)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    listed = [out_dir / s["path"] for s in (old or {}).get("shards", []) if isinstance(s, dict) and "path" in s]
    found = [p for d in (out_dir, *(out_dir / t for t in TASKS)) if d.is_dir() for p in d.glob("*.tar")]
    for path in {*listed, *(p for p in found if _SHARD_NAME.match(p.name))}:
        if path.resolve().is_relative_to(out_dir.resolve()):
            path.unlink(missing_ok=True)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


class SkipLog:
    """Skipped items: complete counts by reason, and the items themselves up to `MAX_SKIP_ITEMS`."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.items: list[dict[str, str]] = []

    def add(self, item: Skipped) -> None:
        self.by_reason[item.reason] += 1
        if len(self.items) < MAX_SKIP_ITEMS:
            self.items.append({"id": item.id, "reason": item.reason, "detail": item.detail})

    def summary(self) -> dict[str, Any]:
        first_ids: dict[str, list[str]] = defaultdict(list)
        for item in self.items:
            if len(first_ids[item["reason"]]) < 5:
                first_ids[item["reason"]].append(item["id"])
        total = sum(self.by_reason.values())
        return {
            "total": total,
            "by_reason": dict(sorted(self.by_reason.items())),
            "first_ids": dict(sorted(first_ids.items())),
            "items": self.items,
            "items_truncated": total > len(self.items),
        }


class Tally:
    """The manifest's counts: samples, images and question types (`meta.qtype`) per task and split, and skips."""

    def __init__(self) -> None:
        self.samples: dict[str, Counter[str]] = defaultdict(Counter)
        self.images: dict[str, Counter[str]] = defaultdict(Counter)
        self.qtypes: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        self.skipped = SkipLog()

    def add(self, record: dict[str, Any], split: str, num_images: int) -> None:
        task = record["task"]
        self.samples[task][split] += 1
        self.images[task][split] += num_images
        qtype = (record.get("meta") or {}).get("qtype")
        if qtype is not None:
            self.qtypes[task][split][qtype] += 1

    def summary(self) -> dict[str, Any]:
        def nested(counts: dict[str, Any]) -> dict[str, Any]:
            return {k: nested(v) if isinstance(v, dict) else v for k, v in sorted(counts.items())}

        return {
            "samples": nested(self.samples),
            "images": nested(self.images),
            "images_total": sum(sum(c.values()) for c in self.images.values()),
            "qtypes": nested(self.qtypes),
            "skipped": self.skipped.summary(),
        }


def build(
    out_dir: Path,
    *,
    script: str,
    arguments: dict[str, Any],
    inputs: dict[str, str],
    samples: Iterable[Sample | Skipped],
    shard_size: int,
    by_task: bool = False,
    force: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Write `samples` as shards under `out_dir` plus `manifest.json`, unless that exact output already exists.

    `arguments` are the options that determine the output (not paths to OUT, worker counts or --force); `inputs`
    fingerprints the source tables. Shards go to `OUT/<split>-%05d.tar`, or `OUT/<task>/<split>-%05d.tar` with
    `by_task`. Returns the manifest.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    identity = {"script": script, "format_version": FORMAT_VERSION, "arguments": arguments, "inputs": inputs}
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as the stored manifest has them
    done, why = up_to_date(out_dir, identity)
    if done and not force:
        log(f"{out_dir / MANIFEST}: up to date (same arguments and inputs, all shards intact); nothing to do")
        return read_manifest(out_dir) or {}
    log(f"{out_dir}: building ({'--force' if done else why})")
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_output(out_dir)

    sink = ShardSink(out_dir, shard_size)
    tally = Tally()
    keys: dict[str, set[str]] = defaultdict(set)  # per task: ids are unique within a dataset
    try:
        for item in samples:
            if isinstance(item, Skipped):
                tally.skipped.add(item)
                continue
            record = item.record
            try:
                images = [im if isinstance(im, EncodedImage) else load_image(im) for im in item.images]
                validate_record(record, len(images))
                key = sample_key(record["id"])
                if key in keys[record["task"]]:
                    raise SkipSample("duplicate_id", f"key {key!r} already written for task {record['task']}")
            except SkipSample as e:
                tally.skipped.add(Skipped(str(record.get("id")), e.reason, e.detail))
                continue
            except ValueError as e:
                tally.skipped.add(Skipped(str(record.get("id")), "invalid_record", str(e)))
                continue
            keys[record["task"]].add(key)
            sink.write(f"{record['task']}/{item.split}" if by_task else item.split, key, record, images)
            tally.add(record, item.split, len(images))
    finally:
        shards = sink.close()

    manifest = {**identity, "counts": tally.summary(), "shards": shards}
    write_manifest(out_dir, manifest)
    counts = manifest["counts"]
    total = sum(sum(c.values()) for c in counts["samples"].values())
    log(
        f"{out_dir}: wrote {total} samples, {counts['images_total']} images in {len(shards)} shards; "
        f"skipped {counts['skipped']['total']} {counts['skipped']['by_reason'] or ''}".rstrip()
    )
    return manifest
