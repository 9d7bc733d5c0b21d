"""Pixel memory layouts: numpy HWC <-> torch (1, C, H, W) channels-last views, pad canvases, RGB PIL images.

Decoders give interleaved HWC memory (numpy arrays from PIL, tensors from torchvision), and torch's uint8
antialiased resize is fastest on (1, C, H, W) channels-last tensors with canonical strides. These helpers make
such views without copying (a canvas with the cheapest fill), so the resize, the tiling and the normalised batch
all keep that layout; `_to_pil_rgb` turns pixels back into an RGB PIL image for the reference path.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image


def _hwc_to_nchw(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 numpy -> (1, C, H, W) uint8 tensor sharing its memory (a channels-last view)."""
    if not array.flags.writeable:
        # Only read from here on; a copy to silence torch's read-only warning would cost a full pass.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return _nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(array)))
    return _nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(array)))


def _nhwc_to_nchw(hwc: torch.Tensor) -> torch.Tensor:
    """(H, W, C) -> (1, C, H, W) view with canonical channels-last strides (batch stride H*W*C).

    Why not ``permute(2, 0, 1).unsqueeze(0)``: that gives the batch axis stride C, which torch still calls
    channels-last but which sends its uint8 antialiased resize down a ~1.5x slower path.
    """
    return hwc.unsqueeze(0).permute(0, 3, 1, 2)


def _as_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) with C in {1, 3} -> (1, 3, h, w) channels-last (torch's fast uint8 resize wants 3+ channels)."""
    if x.shape[1] == 3:
        return x
    return x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


def _canvas(height: int, width: int, fill: tuple[int, int, int]) -> torch.Tensor:
    """(1, 3, height, width) uint8 channels-last, every pixel the RGB ``fill``.

    Why one row first: broadcasting a 3-byte colour over the whole canvas runs torch's copy with an innermost
    loop of 3 elements (1.2 ms for a 1280x448 canvas); broadcasting a ready row copies whole rows (~10x faster).
    """
    row = torch.tensor(fill, dtype=torch.uint8).repeat(width)  # (width * 3,) one canvas row, RGB interleaved
    return row.view(1, 1, width, 3).expand(1, height, width, 3).clone().permute(0, 3, 1, 2)


def _to_pil_rgb(pixels: torch.Tensor) -> Image.Image:
    """(1, C, H, W) uint8 with C in {1, 3} -> RGB PIL image."""
    array = pixels[0].permute(1, 2, 0).numpy()  # (H, W, C)
    if array.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0]), mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")
