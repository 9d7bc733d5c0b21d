"""Tests for ``infimm_hd.recycled_buffers``: a buffer is reused only when nothing can reach it, and it is reused.

The safety invariant is checked the way a caller would break it: keep some object derived from an earlier output
(a view, a numpy array, a storage, a DLPack capsule), ask for a new buffer, write into it, and check the earlier
values are intact. The usefulness is checked by the address: a released buffer comes back.
"""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest
import torch

from infimm_hd.recycled_buffers import MIN_BYTES, OUTPUT_BUFFERS, RecycledBuffers

SHAPE = (3, 448, 448, 3)  # 6.9 MiB (8 MiB in 2 MiB units): three crops of pixel_values
MB = 1 << 20  # MiB


def holders() -> dict[str, object]:
    """Ways a caller keeps an output's memory reachable after dropping the tensor itself."""
    return {
        "view": lambda t: t.permute(0, 3, 1, 2)[1:],
        "numpy": lambda t: t.numpy(),
        "storage": lambda t: t.untyped_storage(),
        "dlpack": lambda t: torch.utils.dlpack.to_dlpack(t),
        "reshaped": lambda t: t.view(-1)[10:],
    }


@pytest.mark.parametrize("holder", list(holders()))
def test_a_buffer_still_reachable_is_never_handed_out(holder):
    pool = RecycledBuffers(max_bytes=256 * MB)
    first = pool.empty_float32(SHAPE)
    first.fill_(1.0)
    kept = holders()[holder](first)
    first_ptr = first.data_ptr()
    del first
    second = pool.empty_float32(SHAPE)
    second.fill_(2.0)
    assert second.data_ptr() != first_ptr
    if holder == "dlpack":
        kept = torch.utils.dlpack.from_dlpack(kept)
    if holder == "storage":
        kept = torch.tensor([], dtype=torch.float32).set_(kept)
    assert bool((torch.as_tensor(kept) == 1.0).all())


def test_a_released_buffer_is_reused_smallest_fit_first():
    pool = RecycledBuffers(max_bytes=256 * MB)
    big, small = pool.empty_float32(SHAPE), pool.empty_float32((1, 448, 448, 3))
    big_ptr, small_ptr = big.data_ptr(), small.data_ptr()
    del big, small
    again_small = pool.empty_float32((1, 448, 448, 3))  # both fit: the smaller buffer is taken
    assert again_small.data_ptr() == small_ptr
    again_big = pool.empty_float32(SHAPE)
    assert again_big.data_ptr() == big_ptr
    assert pool.retained_bytes == 8 * MB + 4 * MB  # 6.9 and 2.3 MiB, rounded up to whole 2 MiB


def test_values_are_float32_contiguous_and_writable():
    pool = RecycledBuffers()
    tensor = pool.empty_float32(SHAPE)
    assert tensor.dtype == torch.float32 and tensor.shape == SHAPE and tensor.is_contiguous()
    tensor.copy_(torch.arange(tensor.numel(), dtype=torch.float32).view(SHAPE))
    assert tensor.view(-1)[-1].item() == tensor.numel() - 1


def test_budget_bounds_what_is_retained_and_zero_turns_recycling_off():
    pool = RecycledBuffers(max_bytes=20 * MB)
    alive = [pool.empty_float32(SHAPE) for _ in range(4)]  # 4 x 8 MiB wanted at once: two fit the budget
    assert pool.retained_bytes == 16 * MB
    ptrs = {t.data_ptr() for t in alive}
    assert len(ptrs) == 4
    del alive
    bigger = pool.empty_float32((6, 448, 448, 3))  # 13.8 MiB -> 14: both free 8 MiB buffers go to fit in 20
    assert pool.retained_bytes == 14 * MB
    del bigger

    off = RecycledBuffers(max_bytes=0)
    tensor = off.empty_float32(SHAPE)
    assert off.retained_bytes == 0 and tensor.shape == SHAPE
    with pytest.raises(ValueError, match="max_bytes"):
        RecycledBuffers(max_bytes=-1)


def test_small_requests_are_ordinary_tensors():
    pool = RecycledBuffers()
    shape = (1, 28, 28, 3)
    assert 4 * np.prod(shape) < MIN_BYTES
    tensor = pool.empty_float32(shape)
    assert tensor.shape == shape and pool.retained_bytes == 0


def test_threads_never_share_a_live_buffer():
    pool = RecycledBuffers(max_bytes=64 * MB)
    errors: list[str] = []
    start = threading.Barrier(4)

    def work(ident: int) -> None:
        start.wait()
        for _ in range(30):
            tensor = pool.empty_float32((1, 448, 448, 3))
            tensor.fill_(float(ident))
            torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # let other threads run in between
            if not bool((tensor == ident).all()):
                errors.append(f"thread {ident} saw another thread's values")
            del tensor

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert pool.retained_bytes <= 4 * 4 * MB  # at most one 2.3 MiB (4 MiB rounded) buffer per thread


def _child_retained(queue) -> None:
    queue.put(OUTPUT_BUFFERS.retained_bytes)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_a_forked_child_starts_with_an_empty_pool():
    held = OUTPUT_BUFFERS.empty_float32(SHAPE)
    assert OUTPUT_BUFFERS.retained_bytes > 0
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_retained, args=(queue,))
    child.start()
    retained_in_child = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and retained_in_child == 0
    del held


def test_shared_memory_moves_the_storage_out_and_frees_the_buffer():
    pool = RecycledBuffers()
    tensor = pool.empty_float32(SHAPE)
    tensor.fill_(3.0)
    ptr = tensor.data_ptr()
    tensor.share_memory_()  # what a DataLoader worker does before sending a tensor to the main process
    assert tensor.data_ptr() != ptr and bool((tensor == 3.0).all())
    reused = pool.empty_float32(SHAPE)
    assert reused.data_ptr() == ptr
    reused.fill_(4.0)
    assert bool((tensor == 3.0).all())
