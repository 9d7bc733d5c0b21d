"""Decoding for a tiling plan: JPEG DCT scaling (draft mode), torchvision's JPEG decoder, PIL for the rest.

Step 2 of the fast path (package docstring): a JPEG at least twice the size the windows need is decoded at 1/2,
1/4 or 1/8 with ``Image.draft``, and the exact extent the scaled pixels cover (a fraction of a pixel short at the
right and bottom edges) travels with them in `_Decoded`, for the resize to honour. Other RGB/grey JPEGs are
decoded by libjpeg-turbo straight into a tensor; other formats, and anything torchvision refuses, by PIL, so PIL
alone decides which files are accepted. The pixels stay in stored orientation: rotating the resized image is
cheaper (`tiling`). Shapes as in the package docstring's legend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import JpegImagePlugin

from ..hires import TilePlan
from .decoding import _Opened, _pil_call
from .layout import _hwc_to_nchw, _nhwc_to_nchw
from .modes import _pil_to_hwc
from .orientation import _TRANSPOSING_ORIENTATIONS


@dataclass(frozen=True)
class _Decoded:
    """Decoded pixels in stored (un-oriented) orientation, plus the extent that maps onto the whole image."""

    pixels: torch.Tensor  # (1, C, h, w) uint8, C in {1, 3}
    content: tuple[float, float]  # (height, width) in pixels of `pixels`; < (h, w) by a fraction after DCT scaling


def _decode_jpeg_torchvision(data: bytes, grey: bool) -> torch.Tensor | None:
    """Decode JPEG bytes with torchvision (libjpeg-turbo) to (1, C, H, W) uint8; None if unavailable or failed.

    Why: it writes straight into a tensor, skipping PIL's 4-byte-per-pixel storage and the copy out of it (1.5-3x
    faster for a 6 MP photo; same libjpeg-turbo, bit-identical pixels). Any failure falls back to PIL, which then
    gives the authoritative error, so torchvision never decides which files are accepted (it rejects truncated
    files too). torchvision 0.29 deprecates ``torchvision.io``'s decoders; once they are gone this returns None.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    try:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        decoded = decode_jpeg(buffer, mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB)
    except Exception:  # noqa: BLE001 - fall back to PIL for anything torchvision cannot or will not decode
        return None
    return _nhwc_to_nchw(decoded.permute(1, 2, 0))  # (C, H, W) view of HWC memory -> (1, C, H, W)


def _decode_for_plan(opened: _Opened, plan: TilePlan, background: tuple[int, int, int]) -> _Decoded:
    """Decode the pixels, as small as the plan allows (JPEG DCT scaling), in stored orientation."""
    if opened.pixels is not None:
        pixels = opened.pixels
        return _Decoded(pixels, (float(pixels.shape[-2]), float(pixels.shape[-1])))
    pil = opened.pil
    assert pil is not None
    need_w, need_h = plan.resized_size
    if opened.orientation in _TRANSPOSING_ORIENTATIONS:
        need_w, need_h = need_h, need_w  # in stored orientation
    content = (float(pil.height), float(pil.width))
    if opened.owned and isinstance(pil, JpegImagePlugin.JpegImageFile):
        reduction = min(pil.width // need_w, pil.height // need_h)
        if reduction >= 2:
            # DCT scaling to the smallest 1/2, 1/4 or 1/8 that keeps >= (need_w, need_h); box = exact extent.
            drafted = _pil_call(lambda: pil.draft(pil.mode, (need_w, need_h)))
            if drafted is not None:
                _, box = drafted
                content = (float(box[3] - box[1]), float(box[2] - box[0]))
        elif pil.mode in ("RGB", "L") and opened.data is not None:
            fast = _decode_jpeg_torchvision(opened.data, grey=pil.mode == "L")
            if fast is not None and tuple(fast.shape[-2:]) == (pil.height, pil.width):
                return _Decoded(fast, content)
    _pil_call(pil.load)
    array = _pil_call(lambda: _pil_to_hwc(pil, background))
    return _Decoded(_hwc_to_nchw(array), content)
