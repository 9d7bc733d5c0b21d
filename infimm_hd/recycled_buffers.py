"""Float32 buffers that are handed out again once no tensor uses them: warm memory for big, short-lived outputs.

Why this exists: the image processor writes 5-24 MB of ``pixel_values`` per image (2-10 crops of 448 px) and the
caller usually drops them soon after (a data loader collates them into a batch, a server runs the model). Fresh
memory costs a first-touch page fault per 4 KB page, and the kernel zeroes every page before the processor
overwrites it. glibc only hands back warm memory when its dynamic mmap threshold and heap trimming happen to allow
it, which depends on the process's history of allocation sizes: in a process that only preprocesses (a data-loader
worker, bench_preprocess run alone) it mostly did not, and 2,000-6,000 page faults per image took ~30% of the
processor's time. No library offers a reusable CPU buffer for a tensor the caller owns (torch's CPU allocator is
plain malloc), so this keeps a few mappings and reuses one only when nothing references it any more.

How "nothing references it" is known: a tensor made by ``torch.frombuffer`` holds a buffer export on the mapping,
which keeps a reference to it for as long as the tensor's storage lives: through views, ``.numpy()`` arrays,
DLPack capsules and ``untyped_storage()`` objects alike (``share_memory_()`` moves the storage out and releases
it). So a mapping whose reference count is back to the pool's own is free, and nothing can reach its memory.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import sys
import threading
import weakref
from dataclasses import dataclass

import torch

__all__ = ["DEFAULT_MAX_BYTES", "OUTPUT_BUFFERS", "RecycledBuffers"]

MIN_BYTES = 2 << 20  # below one 2 MB huge page requests use torch.empty: malloc keeps blocks that small warm
# The pool retains at most this many bytes of mappings; a worker's outputs alive at once beyond it are fresh memory.
DEFAULT_MAX_BYTES = int(os.environ.get("INFIMM_HD_RECYCLED_BUFFER_BYTES", 256 << 20))
_ROUND = 2 << 20  # capacities are whole 2 MB units, so outputs of nearby sizes share buffers


@dataclass
class _Buffer:
    mapping: mmap.mmap
    capacity: int  # bytes


class RecycledBuffers:
    """A thread-safe pool of anonymous memory mappings, at most ``max_bytes`` of them retained.

    `empty_float32(shape)` returns an uninitialised float32 tensor: in the smallest free retained mapping that is
    large enough, else in a new mapping (retained if the budget allows, after dropping free mappings that are in
    the way). ``max_bytes = 0`` turns recycling off (every request gets fresh memory). Retained memory is never
    more than the largest total of outputs that were alive at the same time, and never more than ``max_bytes``.
    A forked child starts with an empty pool (its copies of the parent's mappings would be copied on write).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._buffers: list[_Buffer] = []
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            pool = weakref.ref(self)  # the registry must not keep every pool ever made alive
            os.register_at_fork(after_in_child=lambda: (live := pool()) is not None and live._forget())

    @property
    def retained_bytes(self) -> int:
        """Bytes of mappings the pool holds, in use or free."""
        with self._lock:
            return self._retained()

    def clear(self) -> None:
        """Drop every retained mapping (those still in use live on until their tensors are gone)."""
        with self._lock:
            self._buffers.clear()

    def empty_float32(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised, contiguous float32 tensor of ``shape``; see the class docstring for where it lives."""
        numel = math.prod(shape)
        nbytes = 4 * numel
        if nbytes < MIN_BYTES:
            return torch.empty(shape, dtype=torch.float32)
        with self._lock:
            buffer = self._free_buffer(nbytes) or self._new_buffer(nbytes)
            # Made under the lock: the export it takes marks the mapping as in use before another thread looks.
            return torch.frombuffer(buffer.mapping, dtype=torch.float32, count=numel).view(shape)

    # -- under the lock -------------------------------------------------------------------------------------------

    def _free_buffer(self, nbytes: int) -> _Buffer | None:
        """The smallest retained mapping of at least ``nbytes`` that no tensor uses, or None."""
        fitting = [b for b in self._buffers if b.capacity >= nbytes and _unused(b)]
        return min(fitting, key=lambda b: b.capacity, default=None)

    def _new_buffer(self, nbytes: int) -> _Buffer:
        """A fresh mapping of ``nbytes`` rounded up to 2 MB; retained when it fits the budget after evictions."""
        capacity = _ROUND * math.ceil(nbytes / _ROUND)
        buffer = _Buffer(mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), capacity)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            with contextlib.suppress(OSError):  # 2 MB pages for this mapping where the kernel offers them
                buffer.mapping.madvise(mmap.MADV_HUGEPAGE)
        retained = self._retained()
        for free in sorted((b for b in self._buffers if _unused(b)), key=lambda b: b.capacity):
            if retained + capacity <= self.max_bytes:
                break
            self._buffers.remove(free)  # smallest free first: large free mappings are the valuable ones
            retained -= free.capacity
        if retained + capacity <= self.max_bytes:
            self._buffers.append(buffer)
        return buffer

    def _retained(self) -> int:
        return sum(b.capacity for b in self._buffers)

    def _forget(self) -> None:
        """After fork, in the child: start empty (no lock is held across fork by a single-threaded child)."""
        self._lock = threading.Lock()
        self._buffers = []


def _unused(buffer: _Buffer) -> bool:
    """True when no tensor storage holds the mapping: only ``buffer`` and this call's argument refer to it."""
    return sys.getrefcount(buffer.mapping) <= 2


# The image processor's output pool, one per process (data-loader workers each get their own after fork/spawn).
OUTPUT_BUFFERS = RecycledBuffers()
