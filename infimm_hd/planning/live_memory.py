"""Peak bytes of live tensor storage over a block of code, on any device: the planner's measured side.

Why by hand: torch's `torch.distributed._tools.mem_tracker.MemTracker` registers a gradient hook on every
parameter and raises on frozen ones (torch 2.14), and every training stage but none freezes a part of the model;
`torch.cuda.max_memory_allocated` exists only on GPUs. This dispatch mode sees every tensor an operator returns
(forward, the autograd engine's backward on this thread, optimizer states created in `step`), counts each storage
once while it is alive (a weak reference tells when it is freed), and keeps the peak. What existed before the block
(parameters, buffers, optimizer states, gradients) is counted from `existing`. No allocator rounding or caching is
modelled: it measures the bytes tensors hold, which is what the planner predicts.
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
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = storage.nbytes()
        self._live[key] = size
        self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self.window_peak = max(self.window_peak, self.live_bytes)

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
