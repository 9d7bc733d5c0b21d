"""EXIF orientation: reading the tag, and applying it to sizes (before decoding) and to tensors (after resizing).

The tiling plan is made from the displayed size, so the orientation is read with the header
(`_exif_orientation`, `_oriented_size`); the fast path then applies it to the small resized tensor (`_orient`,
the transposes of `PIL.ImageOps.exif_transpose`) rather than to the full decoded image.
"""

from __future__ import annotations

import torch
from PIL import Image

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an image; 1 when absent or unreadable (bad EXIF is not bad pixels)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - PIL raises many types on corrupt EXIF; the pixels may still be fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) as displayed: swapped for the EXIF orientations that rotate by 90 degrees."""
    return (size[1], size[0]) if orientation in _TRANSPOSING_ORIENTATIONS else (size[0], size[1])


def _orient(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to (..., H, W) exactly as `PIL.ImageOps.exif_transpose` does to an image."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return x.flip(-1)
    if orientation == 3:  # ROTATE_180
        return x.flip(-2, -1)
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return x.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return x.transpose(-2, -1)
    if orientation == 6:  # ROTATE_270 (90 degrees clockwise)
        return x.transpose(-2, -1).flip(-1)
    if orientation == 7:  # TRANSVERSE
        return x.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # ROTATE_90 (90 degrees counter-clockwise)
        return x.transpose(-2, -1).flip(-2)
    return x
