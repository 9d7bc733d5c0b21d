"""One reader's endless stream of batches: what each DataLoader worker (or the main process) runs.

A *reader* is a (rank, worker) pair; R = world_size * workers readers each own a disjoint part of every epoch.
Stages, in this order so that a resume can skip delivered batches before any image is decoded:

    shard list                the epoch's order, reshuffled from (seed, epoch), identical on every reader
    -> split by shard         when there are >= R shards: reader r takes shards r, r + R, ...
    -> tar samples            webdataset's tar reader (raw bytes; a broken tar is counted and skipped)
    -> split by sample        otherwise: every reader reads every shard and keeps samples i with i % R == r
                              (fine for small sets; large ones should have many more shards than readers)
    -> shuffle buffer         webdataset's shuffle, seeded from (seed, epoch, reader)
    -> parse                  JSON, the sample contract, chat template, text tokens -> length (no image decode)
    -> bucket                 `buckets.bucket_by_length`: batches of similar length
    -> skip                   on resume: the batches formed before the position, still undecoded
    -> decode + tokenise      `collate.encode_sample` per sample (the processor, with labels)
    -> collate                `collate.collate`: right padding

Batches are numbered within the reader's epoch *before* decoding, so one that loses every sample to bad images
still takes its number and positions stay exact.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Any

import webdataset as wds
from jinja2 import TemplateError
from torch.utils.data import IterableDataset, get_worker_info

from ..processing import InfiMMHDProcessor
from .buckets import bucket_by_length
from .collate import collate, encode_sample, render_length
from .loader_config import LoaderConfig
from .sample_format import image_keys, validate_record

logger = logging.getLogger(__name__)


@dataclass
class Pending:
    """A parsed sample waiting in a batch: text checked and measured, images still encoded bytes."""

    key: str
    messages: list[dict[str, Any]]
    images: list[bytes]
    length: int  # tokens
    answer: str | None = None  # the record's reference answer (RLHF rewards read it from `batch["answers"]`)


@dataclass
class WorkerPosition:
    """Where one worker stands: `planned` batches of `epoch` are formed (delivered, or dropped empty) so far."""

    epoch: int = 0
    planned: int = 0
    delivered: int = 0  # batches of this worker the consumer received, all epochs (= ceil((k - w) / W))
    stats: dict[str, int] = field(default_factory=dict)  # the worker's counters when it made its last batch


class ReaderStream(IterableDataset):
    """What one DataLoader worker (or the main process with `num_workers=0`) runs: endless batches of its reader.

    Yields `(batch, (worker, epoch, planned, counters))`: the logical worker, and its position after this batch.
    """

    def __init__(
        self,
        config: LoaderConfig,
        processor: InfiMMHDProcessor,
        shards: list[str],
        rank: int,
        world_size: int,
        positions: list[WorkerPosition],
        rotation: int,
    ) -> None:
        super().__init__()
        self.config, self.processor, self.shards = config, processor, shards
        self.rank, self.world_size, self.positions, self.rotation = rank, world_size, positions, rotation
        self.workers = len(positions)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], tuple[int, int, int, dict[str, int]]]]:
        info = get_worker_info()
        worker = ((info.id if info is not None else 0) + self.rotation) % self.workers
        reader = self.rank * self.workers + worker
        start = self.positions[worker]
        counters: Counter[str] = Counter()
        epoch, skip = start.epoch, start.planned
        restore: dict[str, int] | None = start.stats
        while True:
            batches = iter(self._planned_batches(reader, epoch, counters))
            for _ in range(skip):  # resume: re-form and drop, before any image decode
                if next(batches, None) is None:
                    raise ValueError(f"resume position ({epoch}, {skip}) is past the end of reader {reader}'s epoch")
            if restore is not None:  # the counters as they were when the last delivered batch was made
                counters.clear()
                counters.update(restore)
                restore = None
            planned, delivered = skip, 0
            for pending in batches:
                planned += 1
                samples, keys, answers = self._encode(pending, counters)
                if not samples:
                    counters["empty_batches"] += 1
                    continue
                counters["samples"] += len(samples)
                delivered += 1
                batch = collate(samples, self.processor.tokenizer.pad_token_id)
                batch.update(keys=keys, answers=answers, epoch=epoch)
                yield batch, (worker, epoch, planned, dict(counters))
            if planned == 0:
                raise RuntimeError(
                    f"reader {reader} (rank {self.rank}, worker {worker}) got no usable sample in epoch {epoch}: "
                    f"fewer samples than readers, or all dropped ({dict(counters)})"
                )
            if skip == 0 and delivered == 0:
                raise RuntimeError(f"reader {reader} lost every sample of epoch {epoch} to bad data ({dict(counters)})")
            epoch, skip = epoch + 1, 0

    def _planned_batches(self, reader: int, epoch: int, counters: Counter[str]) -> wds.DataPipeline:
        """Reader `reader`'s batches of `epoch`, parsed and bucketed but not decoded (see the module docstring)."""
        cfg = self.config
        readers = self.world_size * self.workers
        by_shard = len(self.shards) >= readers
        shuffle = cfg.shuffle_buffer > 0

        def tar_error(err: Exception) -> bool:
            logger.warning("skipping unreadable tar data: %s", err)
            counters["bad_tar"] += 1
            return True  # go on with the next member / shard

        # webdataset's split_by_node / split_by_worker read the rank from torch.distributed and the worker from
        # torch; we split by the explicit (rank, logical worker) instead, so ranks can be simulated and a resumed
        # DataLoader's rotated workers keep their part of the data.
        split = partial(_every, offset=reader, step=readers)
        stages: list[Any] = [wds.SimpleShardList(self.shards, seed=f"{cfg.seed}:{epoch}" if shuffle else None)]
        stages += [split] if by_shard else []
        stages.append(wds.tarfile_to_samples(handler=tar_error))
        stages += [] if by_shard else [split]
        if shuffle:
            rng = random.Random(f"{cfg.seed}:{epoch}:{reader}:samples")
            stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng))
        stages.append(partial(self._parse, counters=counters))
        pool_batches = cfg.bucket_pool // cfg.batch_size if cfg.bucket_pool else 0
        rng = random.Random(f"{cfg.seed}:{epoch}:{reader}:buckets")
        stages.append(
            partial(
                bucket_by_length,
                length=_length,
                batch_size=cfg.batch_size,
                pool_batches=max(pool_batches, 1) if cfg.bucket_pool else 0,
                rng=rng,
                drop_last=cfg.drop_last,
            )
        )
        return wds.DataPipeline(*stages)

    def _parse(self, samples: Iterable[dict[str, Any]], counters: Counter[str]) -> Iterator[Pending]:
        """Raw tar samples -> `Pending` (text rendered and measured); drops and counts what cannot be used."""
        cfg = self.config
        for sample in samples:
            counters["samples_read"] += 1
            key = sample.get("__key__")
            try:
                record = json.loads(sample["json"])
                names = image_keys(sample)
                validate_record(record, num_images=len(names))
                if cfg.tasks is not None and record["task"] not in cfg.tasks:
                    counters["filtered_task"] += 1
                    continue
                length = render_length(self.processor, record["messages"], len(names))
            except (KeyError, TypeError, ValueError, TemplateError) as err:  # how a malformed record surfaces
                logger.debug("dropping sample %r: bad record: %s", key, err)
                counters["bad_record"] += 1
                continue
            if length > cfg.max_length:
                counters["too_long"] += 1
                continue
            yield Pending(key, record["messages"], [sample[n] for n in names], length, record.get("answer"))

    def _encode(
        self, pending: list[Pending], counters: Counter[str]
    ) -> tuple[list[dict[str, Any]], list[str], list[str | None]]:
        """Decode, tile and tokenise a batch's samples; a sample whose image fails is dropped and counted.
        Returns the encoded samples with their keys and reference answers."""
        samples, keys, answers = [], [], []
        for item in pending:
            counters["images_decoded"] += len(item.images)
            try:
                encoded = encode_sample(self.processor, item.messages, item.images, self.config.max_windows)
            except ValueError as err:
                if not item.images:  # its text was checked in `_parse`: this is a bug, not bad data
                    raise
                logger.debug("dropping sample %r: bad image: %s", item.key, err)
                counters["bad_image"] += 1
                continue
            samples.append(encoded)
            keys.append(item.key)
            answers.append(item.answer)
        return samples, keys, answers


def _every(items: Iterable[Any], offset: int, step: int) -> Iterator[Any]:
    """Items `offset`, `offset + step`, ... (one reader's share)."""
    yield from islice(items, offset, None, step)


def _length(item: Pending) -> int:
    return item.length
