"""Peak bytes of live tensor storage over a block of code, on any device: the planner's measured side.

Why by hand: torch's `torch.distributed._tools.mem_tracker.MemTracker` registers a gradient hook on every
parameter and raises on frozen ones (torch 2.14), and every training stage but none freezes a part of the model;
`torch.cuda.max_memory_allocated` exists only on GPUs. This dispatch mode sees every tensor an operator returns
(forward, the autograd engine's backward on this thread, optimizer states created in `step`), counts each storage
once while it is alive (a weak reference tells when it is freed), and keeps the peak. What existed before the block
(parameters, buffers, optimizer states, gradients) is counted from `existing`. No allocator rounding or caching is
modelled: it measures the bytes tensors hold, which is what the planner predicts.

Storages that change size are followed too. FSDP2 frees a unit's gathered parameters by resizing their storages to
zero bytes (`storage.resize_(0)`) and gathers them again by resizing them back, while autograd keeps the same
tensors alive for backward: a tracker that only watched tensors die would count every unit as gathered from its
first forward to the end of the step. `UntypedStorage.resize_` is not a dispatched operator, so while the block
runs it is wrapped (class attribute, restored on exit) to report each resize here; `aten.resize_` on a tensor is
dispatched and caught by re-reading the size of every storage an operator returns.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorMemory(TorchDispatchMode):
    """`with LiveTensorMemory(existing) as m: ...` then `m.peak_bytes` (and `m.live_bytes` now)."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, int] = {}  # id of a live storage -> its bytes
        self._refs: dict[int, weakref.ref] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.window_peak = 0  # the peak since the last `open_window()`
        for tensor in existing:
            self._track(tensor)

    def _track(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        local = getattr(tensor, "_local_tensor", None)  # a DTensor (FSDP2 shard): its local storage is the memory
        if local is not None:
            tensor = local
        self._track_storage(tensor.untyped_storage())

    def _track_storage(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        if key not in self._live:  # a new storage: counted from zero bytes up to its size
            self._live[key] = 0
            self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
        self._resize(key, storage.nbytes())

    def _resize(self, key: int, size: int) -> None:
        self.live_bytes += size - self._live[key]
        self._live[key] = size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self.window_peak = max(self.window_peak, self.live_bytes)

    def __enter__(self) -> LiveTensorMemory:
        original = self._original_resize = torch.UntypedStorage.resize_

        def resize_(storage: torch.UntypedStorage, size: int) -> torch.UntypedStorage:
            out = original(storage, size)
            if storage.device.type != "meta":
                self._track_storage(storage)
            return out

        torch.UntypedStorage.resize_ = resize_
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        torch.UntypedStorage.resize_ = self._original_resize
        return super().__exit__(*exc)

    def open_window(self) -> int:
        """Start a new window (its peak is `window_peak`); returns the bytes live now."""
        self.window_peak = self.live_bytes
        return self.live_bytes

    def _free(self, key: int) -> None:
        self.live_bytes -= self._live.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            self._track(tensor)
        return out


def model_state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
    """Parameters, buffers, gradients and optimizer states: what a training step starts with."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors
