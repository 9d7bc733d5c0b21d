"""Length bucketing: batches of samples of similar token length, so right padding wastes little compute.

The scheme (deterministic given the `rng`): take the stream in pools of `pool_size` samples (a whole number of
batches), sort each pool by length (stable, so ties keep their shuffled order), cut it into batches, and yield the
pool's batches in a shuffled order. Short and long batches therefore alternate at random instead of the stream
running from short to long, and a pool is the only look-ahead (no global sort, so it streams).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def bucket_by_length(
    items: Iterable[T],
    length: Callable[[T], int],
    batch_size: int,
    pool_batches: int,
    rng: random.Random,
    drop_last: bool = False,
) -> Iterator[list[T]]:
    """Group `items` into batches of `batch_size`, bucketed by `length` within pools of `pool_batches` batches.

    `pool_batches=0` turns bucketing off: batches are consecutive items in arrival order. Only the last pool of the
    stream can leave a partial batch; it is kept unless `drop_last`.

    >>> [b for b in bucket_by_length([5, 1, 4, 2, 3, 6], lambda x: x, 2, 3, random.Random(0))]
    [[1, 2], [5, 6], [3, 4]]
    >>> list(bucket_by_length([5, 1, 4], lambda x: x, 2, 0, random.Random(0)))
    [[5, 1], [4]]
    """
    if batch_size < 1 or pool_batches < 0:
        raise ValueError(f"batch_size must be >= 1 and pool_batches >= 0, got {batch_size} and {pool_batches}")
    pool_size = batch_size * max(pool_batches, 1)
    pool: list[T] = []
    for item in items:
        pool.append(item)
        if len(pool) == pool_size:
            yield from _cut(pool, length, batch_size, pool_batches > 0, rng, drop_last)
            pool = []
    if pool:
        yield from _cut(pool, length, batch_size, pool_batches > 0, rng, drop_last)


def _cut(
    pool: list[T], length: Callable[[T], int], batch_size: int, bucket: bool, rng: random.Random, drop_last: bool
) -> list[list[T]]:
    """One pool -> its batches (sorted by length and shuffled when `bucket`)."""
    ordered = sorted(pool, key=length) if bucket else pool
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    if drop_last and len(batches[-1]) < batch_size:
        batches.pop()
    if bucket:
        rng.shuffle(batches)
    return batches


def padding_waste(batch_lengths: Sequence[Sequence[int]]) -> float:
    """Fraction of the padded (B, T_max) token slots that are padding, over a run of batches.

    >>> padding_waste([[4, 2], [3, 3]])  # 14 slots, 12 tokens
    0.1428571428571429
    """
    padded = sum(len(lengths) * max(lengths) for lengths in batch_lengths if lengths)
    real = sum(sum(lengths) for lengths in batch_lengths)
    return 1.0 - real / padded if padded else 0.0
