"""The RLHF reference policy (the frozen starting model) without a second model in memory.

Direct RLHF needs log pi_ref(y) of the *starting* model. A deep copy would hold every weight twice; but only the
trainable tensors ever change (in stage 4 the ViT is frozen; with cross-attention-only training the LLM is too). So
`SwappedReference` keeps a copy of just those tensors, taken when training starts, and for the reference pass points
each trainable parameter's storage at its snapshot, runs the model, and points it back. Nothing is copied during the
swap (`param.data` is re-pointed, both ways), so the policy comes back bit-identical and the optimizer, which holds the
`Parameter` objects, never notices. Extra memory: one copy of the trainable tensors (on the device, or on the CPU with
`offload=True`, then copied to the device for each pass and freed after it).

Limits: the plain (unsharded) module only. Under FSDP2 the parameters are `DTensor` shards that FSDP all-gathers from
its own buffers, so re-pointing `.data` would not reach the computation; that case raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor


class SwappedReference:
    """A snapshot of `model`'s trainable tensors (those with requires_grad), swapped in by `swapped_in(model)`.

    Take it while the model holds its starting weights (the training loop calls `Objective.setup` before a resume
    loads the trained ones). `offload=True` keeps the snapshot on the CPU.
    """

    def __init__(self, model: nn.Module, offload: bool = False):
        self.offload = offload
        self.snapshot: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():  # tied weights appear once
            if not param.requires_grad:
                continue
            if isinstance(param, DTensor):
                raise NotImplementedError(
                    f"{name} is an FSDP2 shard: the reference-by-swap needs the plain module (single process or DDP)"
                )
            self.snapshot[name] = param.detach().to("cpu" if offload else param.device, copy=True)
        if not self.snapshot:
            raise ValueError("the model has no trainable parameter: declare what trains before taking the reference")

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.snapshot.values())

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Yields `model` running as the reference inside the block (use it under `torch.no_grad()`); restored on
        exit, also on an exception. Every snapshot name must still be a parameter of `model`, with its shape. (Any
        object with this method can serve as the objective's `reference`; the module it yields is what runs.)"""
        params = dict(model.named_parameters())
        stash: dict[str, torch.Tensor] = {}
        try:
            for name, ref in self.snapshot.items():
                param = params.get(name)
                if param is None or param.shape != ref.shape:
                    found = None if param is None else tuple(param.shape)
                    raise ValueError(f"reference tensor {name} {tuple(ref.shape)} does not match the model's {found}")
                if ref.device != param.device or ref.dtype != param.dtype:
                    ref = ref.to(param.device, param.dtype)  # offloaded: a transient device copy
                    if not self.offload:  # the model moved (prepare() put it on the GPU): move the snapshot once
                        self.snapshot[name] = ref
                stash[name] = param.data
                param.data = ref
            yield model
        finally:
            for name, data in stash.items():
                params[name].data = data
