"""The server's cache of vision-tower outputs, keyed by the image's bytes: a resent image skips the ViT.

Why: OpenAI-style chat clients resend the whole conversation, image included, with every turn, and many requests
ask about the same picture. The ViT over 10 crops is the most expensive part of a hi-res request's prefill (the
paper's EVA02-CLIP-E is 4.4B parameters), and its output depends only on the pixels: the same bytes through the
same processor give the same crops, so the same tokens. Cached here are the tower's tokens per image (crops, L,
Dv), before the window position embeddings (added per call, cheaply), on the model's device and dtype.

The generation thread is the only user (one `generate` at a time), so the cache needs no lock. Least recently used
images are dropped past ``max_bytes``; an image larger than the whole budget is computed and not kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from ..media_packing import crops_per_image

__all__ = ["VisionTokenCache", "image_key"]


def image_key(data: bytes) -> str:
    """The cache key of an encoded image: SHA-256 of its bytes (the processor's output is a function of them)."""
    return hashlib.sha256(data).hexdigest()


class VisionTokenCache:
    """LRU map image key -> vision-tower tokens (crops, L, Dv), at most ``max_bytes`` of them; counts hits/misses."""

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0 (leave the cache out to disable it), got {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._tokens: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._tokens)

    @torch.no_grad()
    def tokens(self, model, keys: list[str], pixel_values: torch.Tensor, image_grids: torch.Tensor) -> torch.Tensor:
        """(N, L, Dv) tower tokens for the crops of images ``keys`` (pixel_values (N, 3, S, S), image_grids (I, 2)).

        Cached images are read; the others go through ``model.vision_tower`` in one call (an image repeated within
        the batch is encoded once) and are stored.
        """
        if len(keys) != len(image_grids):
            raise ValueError(f"{len(keys)} image keys for {len(image_grids)} images")
        crops = crops_per_image(image_grids.cpu()).tolist()  # (I,)
        per_image = torch.split(pixel_values, crops)
        known = {key: self._tokens[key] for key in keys if key in self._tokens}  # read before any eviction below
        for key in known:
            self._tokens.move_to_end(key)
        missing = [i for i, key in enumerate(keys) if key not in known and keys.index(key) == i]  # first sightings
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            device = next(model.vision_tower.parameters()).device
            computed = model.vision_tower(torch.cat([per_image[i] for i in missing]).to(device))  # (M, L, Dv)
            for i, tokens in zip(missing, torch.split(computed, [crops[i] for i in missing]), strict=True):
                fresh[keys[i]] = tokens.clone()  # a clone: a view would keep the whole batch's output alive
                self._store(keys[i], fresh[keys[i]])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.cat([known[key] if key in known else fresh[key] for key in keys])

    def _store(self, key: str, tokens: torch.Tensor) -> None:
        size = tokens.numel() * tokens.element_size()
        if size > self.max_bytes:
            return
        while self._bytes + size > self.max_bytes:
            _, dropped = self._tokens.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()
        self._tokens[key] = tokens
        self._bytes += size
