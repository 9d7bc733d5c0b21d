"""Bit depths, colour modes and alpha -> 8-bit grey or RGB: pure numpy conversions of decoded pixels.

Every input ends up here as pixels (PIL images through `_pil_to_hwc`, numpy arrays and torch tensors through
`_array_to_hwc`), so every input type becomes 8-bit the same way: 16-bit samples scaled by 255/65535, integers of
unknown depth by the smallest of 8/16/32 bits that holds them, floats from [0, 1] (or PIL mode F's 0..255), alpha
composited onto the background colour instead of dropped. Grey stays one channel (expanded to three only where
torch's resize wants it). A module of its own because these are pure functions of pixel values: no files, headers
or budgets, and each is testable on a tiny array. Shapes as in the package docstring's legend.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_INT32_MAX = 2**31 - 1


def _scale_uint16(values: np.ndarray) -> np.ndarray:
    """16-bit samples -> 8-bit, ``round(v * 255 / 65535)`` (exact integer rounding; 65535 -> 255, 32896 -> 128)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _scale_integers(values: np.ndarray) -> np.ndarray:
    """Integer samples of unknown bit depth -> 8-bit, scaled by the smallest of 8/16/32 bits that holds them.

    Why by the data: PIL's mode ``I`` and numpy's int arrays do not record a bit depth. Values up to 255 are read as
    8-bit, up to 65535 as 16-bit, larger ones as 32-bit (``v * 255 / (2**31 - 1)``, or the unsigned 32-bit range for
    uint32 data), so nothing is clipped. Negative samples have no meaning as intensities and are rejected.
    """
    lo, hi = int(values.min()), int(values.max())
    if lo < 0:
        raise ValueError(f"integer image has negative pixel values (min {lo}); expected intensities >= 0")
    if hi <= 255:
        return values.astype(np.uint8)
    if hi <= 65535:
        return _scale_uint16(values)
    full = 2**32 - 1 if values.dtype == np.uint32 else _INT32_MAX
    if hi > full:
        raise ValueError(f"integer image has values up to {hi}, beyond 32 bits; convert it to uint8/uint16/float")
    return np.rint(values.astype(np.float64) * (255.0 / full)).astype(np.uint8)


def _scale_floats(values: np.ndarray, allow_255: bool) -> np.ndarray:
    """Float samples -> 8-bit: ``[0, 1]`` is scaled by 255; ``[0, 255]`` is taken as is when ``allow_255``.

    ``allow_255`` is PIL's convention for mode ``F`` images (its own conversion reads them as 0..255); numpy and
    torch float images must be in ``[0, 1]``, the convention of torchvision and most data pipelines. Values within
    half an 8-bit level outside the range are clipped (float round-off), anything further is an error.
    """
    values = values.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise ValueError("float image contains NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    tol = 0.5 / 255
    if lo >= -tol and hi <= 1 + tol:
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    if allow_255 and lo >= -0.5 and hi <= 255.5:
        return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
    expected = "[0, 1] (or [0, 255] for PIL mode F)" if allow_255 else "[0, 1]; divide 0..255 data by 255"
    raise ValueError(f"float image values span [{lo:g}, {hi:g}], expected {expected}")


def _composite(pixels: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """(H, W, C+1) colour + straight alpha -> (H, W, 3) over ``background``; ``round((c*a + bg*(255-a)) / 255)``.

    Why not drop alpha: transparent pixels of a PNG often hold black or garbage colour; compositing shows the
    image the way a viewer does. A fully opaque image is returned without arithmetic.
    """
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    if colour.shape[-1] == 1:
        colour = np.broadcast_to(colour, (*colour.shape[:-1], 3))
    if alpha.min() == 255:
        return np.ascontiguousarray(colour)
    a = alpha.astype(np.uint16)
    bg = np.asarray(background, dtype=np.uint16)
    mixed = colour * a + bg * (255 - a) + 127  # (H, W, 3) uint16, at most 255*255 + 127
    return (mixed // 255).astype(np.uint8)


def _array_to_hwc(array: np.ndarray, background: tuple[int, int, int], channels_first: bool) -> np.ndarray:
    """A numpy image (HW, HWC or CHW; C in 1..4; bool/uint8/uint16/int/float) -> (H, W, C) uint8 with C in {1, 3}.

    ``channels_first`` says which layout wins when both ends of a 3-D shape could be channels (torch tensors are
    CHW by convention, numpy arrays HWC).
    """
    if array.size == 0:
        raise ValueError(f"image array has zero size: shape {tuple(array.shape)}")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        first, last = array.shape[0] <= 4, array.shape[-1] <= 4
        if first and (channels_first or not last):
            array = np.moveaxis(array, 0, -1)  # CHW -> HWC
        elif not last:
            raise ValueError(f"image array of shape {tuple(array.shape)} has no channel axis of size 1 to 4")
    else:
        raise ValueError(f"image array must have 2 or 3 dimensions (HW, HWC or CHW), got shape {tuple(array.shape)}")
    kind = array.dtype.kind
    if kind == "b":
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = _scale_uint16(array)
    elif kind in "iu":
        array = _scale_integers(array)
    elif kind == "f":
        array = _scale_floats(array, allow_255=False)
    else:
        raise ValueError(f"unsupported image array dtype {array.dtype}")
    if array.shape[-1] in (2, 4):
        array = _composite(array, background)
    return array


def _array_size(array: np.ndarray, channels_first: bool) -> tuple[int, int]:
    """(height, width) an array image will have, for the budget check before converting it."""
    if array.ndim == 2:
        return array.shape[0], array.shape[1]
    first, last = array.shape[0] <= 4, array.shape[-1] <= 4
    if first and (channels_first or not last):
        return array.shape[1], array.shape[2]
    return array.shape[0], array.shape[1]


def _pil_to_hwc(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """A loaded PIL image of any mode -> (H, W, C) uint8 with C in {1, 3} (grey stays one channel)."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"  # palette / grey / RGB PNG with a transparent colour (tRNS)
    if mode in ("PA", "RGBa"):
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "La":
        image, mode = image.convert("LA"), "LA"
    elif mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode == "P":
        image, mode = image.convert("RGB"), "RGB"
    if mode in ("RGB", "L", "RGBA", "LA"):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        return _composite(array, background) if mode in ("RGBA", "LA") else array
    if mode.startswith("I;16"):
        return _scale_uint16(np.asarray(image))[:, :, None]
    if mode == "I":
        return _scale_integers(np.asarray(image))[:, :, None]
    if mode == "F":
        return _scale_floats(np.asarray(image), allow_255=True)[:, :, None]
    try:
        return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, HSV, LAB, RGBX, ...
    except (ValueError, OSError) as err:
        raise ValueError(f"unsupported image mode {mode!r}: {err}") from err
