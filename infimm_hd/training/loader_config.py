"""`LoaderConfig`: the streaming loader's settings, checked when built.

Its own module because both the loader (`data.py`) and each worker's stream (`reader.py`) read it, and the loader
imports the stream; `from infimm_hd.training.data import LoaderConfig` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .sample_format import TASKS


@dataclass
class LoaderConfig:
    """Settings of the streaming loader (per rank). See the module docstring for the drop/keep policy.

    shards: paths, globs or brace patterns (`data/train-{000..127}.tar`); each must match a file.
    batch_size: samples per batch on this rank (before drops).
    max_windows: window budget of the image tiling; 0 = thumbnails only.
    max_length: longest sample in tokens; longer ones are dropped.
    shuffle_buffer: samples in webdataset's shuffle buffer; 0 = no shuffling at all (file order, fixed shard order).
    seed: decides every order; epoch e of reader r shuffles from (seed, e, r).
    num_workers: decoding processes per rank (0 = decode in this process).
    tasks: keep only records of these tasks (None = all).
    bucket_pool: samples sorted by length together (rounded down to whole batches); 0 = no bucketing.
    drop_last: drop the partial last batch of each reader's epoch.
    prefetch_factor, pin_memory: passed to torch's DataLoader (prefetch only with workers).

    Memory: each worker holds up to `shuffle_buffer + bucket_pool` samples with their encoded images (a few MB
    each at high resolution), plus `prefetch_factor` decoded batches (10 crops of 448 px = 24 MB per image).
    """

    shards: Sequence[str | os.PathLike]
    batch_size: int = 8
    max_windows: int = 9
    max_length: int = 2048
    shuffle_buffer: int = 256
    seed: int = 0
    num_workers: int = 2
    tasks: Sequence[str] | None = None
    bucket_pool: int = 256
    drop_last: bool = False
    prefetch_factor: int = 2
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.shards, (str, os.PathLike)):
            self.shards = [self.shards]
        self.shards = [os.fspath(s) for s in self.shards]
        if not self.shards:
            raise ValueError("LoaderConfig.shards is empty: give shard paths, globs or brace patterns")
        for name, low in (("batch_size", 1), ("max_length", 1), ("prefetch_factor", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"LoaderConfig.{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("max_windows", "shuffle_buffer", "num_workers", "bucket_pool"):
            if getattr(self, name) < 0:
                raise ValueError(f"LoaderConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
            unknown = sorted(set(self.tasks) - set(TASKS))
            if unknown:
                raise ValueError(f"LoaderConfig.tasks has unknown tasks {unknown}; expected some of {TASKS}")
