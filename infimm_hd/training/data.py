"""The streaming training loader: webdataset shards -> right-padded, length-bucketed batches, resumable exactly.

`StreamingLoader(config, processor, rank, world_size)` is an endless iterator of batches for one rank. Each
(rank, worker) pair reads a disjoint part of the data (`reader.ReaderStream`: shard split, seeded shuffle, text-only
parse, length bucketing, then image decoding); torch's DataLoader runs the workers in processes and returns their
batches round-robin. Every rank yields forever (epochs loop, epoch e reshuffled from seed + e), so DDP ranks stay in
step.

Position. The loader records, for each worker, the epoch and the pre-decode number of the last batch it delivered,
and that worker's counters at the time. `state_dict()` is that (plus the batch count and the settings that decide
the order); after `load_state_dict`, each worker re-forms and drops its delivered batches of that epoch (JSON and
text tokens only, no image decode), restores its counters and goes on. DataLoader takes batch i from worker i % W,
so after k batches worker w has delivered ceil((k - w) / W) of them and the next batch comes from worker k % W: the
resumed DataLoader's worker j plays worker (j + k) % W. The batches after a restore are then exactly those an
uninterrupted loader would have yielded.

Drop/keep policy: a sample is dropped and counted when its record breaks the contract or its text does not render
("bad_record"), its task is filtered out ("filtered_task"), its text is longer than `max_length` tokens ("too_long";
never truncated: a cut conversation would train on half an answer), or an image fails to decode ("bad_image"). A
batch shrinks by its dropped samples; one left empty is skipped ("empty_batches") and not yielded. The last batch of
a reader's epoch may be partial (kept unless `drop_last`). Normalise losses by `num_tokens`, not by the batch size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from ..image_processing import InfiMMHDImageProcessor
from ..processing import InfiMMHDProcessor
from .loader_config import LoaderConfig
from .reader import ReaderStream, WorkerPosition
from .sample_format import image_keys, validate_record

__all__ = ["LoaderConfig", "StreamingLoader", "ShardRecord", "expand_shards", "iterate_records", "STAT_KEYS"]

logger = logging.getLogger(__name__)

STAT_KEYS = (
    "samples_read",  # raw samples that reached this rank's readers
    "bad_tar",  # unreadable tar files or members (counted by every reader that hit them)
    "bad_record",
    "filtered_task",
    "too_long",
    "bad_image",
    "empty_batches",
    "images_decoded",  # images handed to the image processor (a resume skips decoding, so this does not grow then)
    "samples",  # samples delivered in batches
)
_STATE_FORMAT = 1


def expand_shards(patterns: Iterable[str | os.PathLike]) -> list[str]:
    """Paths, globs and brace patterns -> existing shard paths (each pattern's matches sorted; duplicates once)."""
    found: dict[str, None] = {}
    for pattern in patterns:
        matches = sorted(wds.utils.glob_with_braces(os.fspath(pattern)))
        if not matches:
            raise FileNotFoundError(f"no shard matches {os.fspath(pattern)!r}")
        found.update(dict.fromkeys(matches))
    return list(found)


@dataclass
class ShardRecord:
    """One sample as `iterate_records` gives it: the validated record and its images (RGB, decoded)."""

    key: str
    url: str
    record: dict[str, Any]
    images: list[Image.Image]


def iterate_records(
    shards: Sequence[str | os.PathLike], image_processor: InfiMMHDImageProcessor | None = None
) -> Iterator[ShardRecord]:
    """Every sample of `shards` in file order, decoded (for evaluation: no workers, no shuffling, no skipping).

    Images go through `image_processor.load_image` (EXIF orientation, alpha, pixel budget); a bad sample raises a
    `ValueError` naming its shard and key, since evaluation data should not silently lose samples.
    """
    image_processor = image_processor or InfiMMHDImageProcessor()
    pipeline = wds.DataPipeline(wds.SimpleShardList(expand_shards(shards)), wds.tarfile_to_samples())
    for sample in pipeline:
        try:
            record = json.loads(sample["json"])
            names = image_keys(sample)
            validate_record(record, num_images=len(names))
            images = [image_processor.load_image(sample[name]) for name in names]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{sample['__url__']}: sample {sample['__key__']!r}: {err}") from err
        yield ShardRecord(sample["__key__"], sample["__url__"], record, images)


class StreamingLoader:
    """Endless iterator of collated training batches for one rank; `state_dict`/`load_state_dict` resume it exactly.

    Each batch is a dict:
        input_ids, attention_mask, labels   (B, T) long, right-padded (pad id, 0, -100); labels -100 off the
                                            assistant turns
        pixel_values (N, 3, S, S) float32, image_grids (I, 2) long, image_sample_index (I,) long
                                            only when some sample of the batch has an image
        num_tokens (int)                    targets of the shifted next-token loss (labels[:, 1:] != -100)
        num_samples (int)                   B (after drops)
        stats (dict[str, int])              `STAT_KEYS` counters of this rank up to this batch, plus "batches"
        keys (list[str]), epoch (int)       the samples' webdataset keys and the delivering worker's epoch

    One iterator at a time: `iter()` again continues from the current position with fresh workers. `next(loader)`
    works on the loader itself (starting its workers on the first call), so the loader is the batch source the
    training loop takes: an iterator with `state_dict`/`load_state_dict`.
    """

    def __init__(self, config: LoaderConfig, processor: InfiMMHDProcessor, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} and world_size {world_size}")
        self.config, self.processor, self.rank, self.world_size = config, processor, rank, world_size
        self.shards = expand_shards(config.shards)
        # Fail here, not by dropping every image sample as "bad_image", when the processor refuses the budget.
        processor.image_processor.plan_image(Image.new("RGB", (1, 1)), max_windows=config.max_windows)
        self._workers = max(config.num_workers, 1)  # 0 workers = one reader in this process
        self._batches = 0
        self._positions = [WorkerPosition() for _ in range(self._workers)]
        self._iterator: Iterator[dict[str, Any]] | None = None

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.config
        stream = ReaderStream(
            cfg,
            self.processor,
            self.shards,
            self.rank,
            self.world_size,
            positions=[WorkerPosition(**asdict(p)) for p in self._positions],
            rotation=self._batches % self._workers,
        )
        loader = DataLoader(
            stream,
            batch_size=None,  # the stream yields whole batches
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor if cfg.num_workers else None,
            pin_memory=cfg.pin_memory,
        )
        for batch, (worker, epoch, planned, counters) in loader:
            delivered = self._positions[worker].delivered + 1
            self._positions[worker] = WorkerPosition(epoch, planned, delivered, counters)
            self._batches += 1
            batch["stats"] = self.stats
            yield batch

    @property
    def stats(self) -> dict[str, int]:
        """This rank's counters (`STAT_KEYS`) up to the last batch yielded, summed over its workers, and "batches"."""
        total = dict.fromkeys(STAT_KEYS, 0)
        for position in self._positions:
            for key, value in position.stats.items():
                total[key] = total.get(key, 0) + value
        total["batches"] = self._batches
        return total

    def state_dict(self) -> dict[str, Any]:
        """The position after the batches yielded so far: a small JSON-able dict."""
        return {
            "format": _STATE_FORMAT,
            "batches": self._batches,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.config.num_workers,
            "order": self._order_settings(),
            "workers": [asdict(p) for p in self._positions],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state` (from `state_dict` of a loader with the same layout and order settings); call it before
        iterating. Raises `ValueError` naming what differs, since another layout would yield other batches."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown loader state format {state.get('format')!r}; expected {_STATE_FORMAT}")
        mine = {"rank": self.rank, "world_size": self.world_size, "num_workers": self.config.num_workers}
        for name, value in mine.items():
            if state[name] != value:
                raise ValueError(
                    f"loader state was saved with {name}={state[name]} but this loader has {name}={value}; resume "
                    f"with the same rank layout and num_workers (each (rank, worker) reads its own part of the data)"
                )
        for name, value in self._order_settings().items():
            if state["order"].get(name) != value:
                raise ValueError(
                    f"loader state was saved with {name}={state['order'].get(name)!r} but this loader has "
                    f"{value!r}: the sample order would differ, so the position means nothing here"
                )
        batches, workers = int(state["batches"]), [WorkerPosition(**w) for w in state["workers"]]
        expected = [_delivered_by(w, batches, self._workers) for w in range(self._workers)]
        if len(workers) != self._workers or [w.delivered for w in workers] != expected:
            raise ValueError(f"inconsistent loader state: {batches} batches but per-worker counts {workers}")
        self._batches, self._positions = batches, workers
        self._iterator = None  # the next `next()` starts workers at the restored position

    def _order_settings(self) -> dict[str, Any]:
        """The settings that decide which samples land in which batch (max_windows does not: it can change)."""
        cfg = self.config
        names = "\n".join(os.path.basename(s) for s in self.shards)  # names, so a moved dataset still resumes
        return {
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "shuffle_buffer": cfg.shuffle_buffer,
            "bucket_pool": cfg.bucket_pool,
            "max_length": cfg.max_length,
            "drop_last": cfg.drop_last,
            "tasks": list(cfg.tasks) if cfg.tasks is not None else None,
            "shards": f"{len(self.shards)} shards, sha1 {hashlib.sha1(names.encode()).hexdigest()[:16]}",
        }


def _delivered_by(worker: int, batches: int, workers: int) -> int:
    """Batches worker `worker` delivered of the first `batches` (DataLoader's round-robin): ceil((k - w) / W).

    >>> [_delivered_by(w, 5, 2) for w in range(2)]
    [3, 2]
    """
    return max(0, -(-(batches - worker) // workers))
