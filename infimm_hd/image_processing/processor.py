"""Images in, crops out: decode any image input, plan its tiles, and normalise the crops for the ViT.

Shape legend
    N   crops of all images (thumbnail first, then windows row-major, image after image)
    I   images              S   window size (448)       C   working channels (1 grey or 3 RGB, uint8)

`InfiMMHDImageProcessor` is the Hugging Face image processor (saved as ``preprocessor_config.json``); the functions
`load_image`, `normalize` and `process_images` are thin wrappers kept for existing callers.

What the processor guarantees
-----------------------------
* Every input becomes 8-bit RGB the same way, whatever its type (PIL image, numpy array, torch tensor, file path,
  encoded bytes, binary file object): EXIF orientation applied; alpha (RGBA, LA, PA, palette or grey/RGB PNGs with a
  transparent colour) composited onto ``background`` instead of dropped; 16-bit images scaled by 255/65535 and
  32-bit integer images by 255/(2**31 - 1) rather than clipped; CMYK, YCbCr, HSV and LAB through PIL's conversion.
* Anything that cannot be decoded is a `ValueError` naming the image's index and the problem: unknown or random
  bytes, truncated files (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never changed), zero-size images, arrays of
  unsupported shape or value range, and images over the pixel budget. The budget is checked from the header, before
  any pixel is decoded, and PIL's own decompression-bomb warning and error become the same `ValueError`.

Fast path (what makes it cheap enough for a training data loader) and how it differs from the reference
--------------------------------------------------------------------------------------------------------
`reference_preprocess` is the straightforward path, kept as the specification: full decode, the RGB image tiled
by `hires.tile_image` with PIL (thumbnail from a padded square canvas, windows cut from the resized image), each
crop normalised on its own. `preprocess` computes the same crops with far less work:

1. The tile plan comes from the header size (EXIF orientation applied), so it is exactly the reference's plan.
2. A JPEG at least twice the size the windows need is decoded with JPEG DCT scaling (``Image.draft``: 1/2, 1/4 or
   1/8) to the smallest size still >= the resized grid, so the later resize is always a reduction; the fraction
   of a pixel the scaling leaves at the right and bottom edges is honoured by resizing with the exact scale
   factor. Other RGB/grey JPEGs are decoded by torchvision's libjpeg-turbo decoder straight into a tensor
   (1.5-3x cheaper than PIL's decode plus the copy out of PIL for a 6 MP photo; torchvision is pinned with torch
   and required by timm). torchvision 0.29 deprecates that decoder; when it is missing or fails, PIL decodes
   (bit-identical pixels), so PIL alone decides which files are accepted. Other formats decode with PIL.
3. The image is resized once to the grid size with torch's antialiased bicubic on uint8 (PIL's BICUBIC kernel,
   3-4x faster than PIL here; the more strongly reduced axis first, see `_resize`) and the windows are strided
   views of that tensor; EXIF rotations are applied to the small resized tensor, not to the decoded image.
4. The thumbnail is made from the resized grid image when that is at least twice the thumbnail's content size in
   both directions (PIL calls such a reducing gap indistinguishable from a direct resize); otherwise from the
   decoded image, on the reference's own ``side x side`` pad canvas when that is small (<= 1024 px). Otherwise
   ``"pad"`` uses a canvas of S x (2 to 4)S pixels instead of the reference's ``side**2`` (20000**2 pixels for a
   1x20000 image): the image is resized into a number of canvas rows chosen so that the reference's pad offset
   falls on a whole row, and the canvas reduced with the reference canvas's exact scale, so the image and its
   edge against the padding land where the reference puts them.
5. All crops are copied once from uint8 into one float32 batch, normalised in place by one fused multiply-add
   pass, in memory recycled from earlier outputs that are no longer referenced (`recycled_buffers`: fresh
   memory's page faults were ~30% of the time in a process that only preprocesses). Pad canvases are filled row
   by row (`_canvas`). ``pixel_values`` is (N, 3, S, S) in **channels-last memory**
   (``torch.channels_last``: stored as (N, S, S, 3)), the layout the resize produces: copying windows out of the
   interleaved RGB grid into planar NCHW memory was the single most expensive step (a de-interleaving uint8 ->
   float32 copy, ~2x slower than this layout's row copies plus the normalisation). Values are identical; every
   torch op accepts the layout, convolutions (the ViT's patch embedding) prefer it on CPU and on tensor-core GPUs,
   and ``.contiguous()`` gives NCHW memory for code that needs ``.view`` on it.

Measured against `reference_preprocess` (tests/test_image_processor.py; in 8-bit levels): windows agree to a mean
absolute difference < 0.01 and max 2 for most sizes (< 0.08 where the vertical pass runs first), and never beyond
mean 0.2 / max 7 (torch and PIL quantise the bicubic weights differently; worst for scale factors near 1); with
DCT scaling, mean < 0.3 and max < 10 on photographs (the JPEG scaling filter stands in for part of the bicubic
reduction), more on point-like content: skimage's Hubble star field at 4032x3024 gives mean 0.42 and max 17;
thumbnails, mean < 0.2 and max < 10 (the grid image as an intermediate).

Threads: the processor holds no mutable state, but PIL's decompression-bomb warning is turned into an error with
``warnings.catch_warnings``, which is process-global in Python < 3.14: use processes (data-loader workers), not
threads, to run several decodes at once.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from ..hires import TilePlan, plan_tiles, tile_image
from ..recycled_buffers import OUTPUT_BUFFERS

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "ImageTooLargeError",
    "ImageInput",
    "InfiMMHDImageProcessor",
    "ProcessedImages",
    "load_image",
    "normalize",
    "open_image_header",
    "process_images",
]

# OpenAI-CLIP normalisation, used by EVA-CLIP and the official InfiMM code.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Pixel budget: 64 MP admits every camera photo in common use (61 MP full-frame bodies, 50 MP phone sensors at full
# resolution, 8192x7800 scans) while bounding one decode at ~190 MB of RGB (~250 MB during a mode conversion), so
# a few data-loader workers cannot be driven out of memory by hostile or broken files. It is below PIL's own
# warning threshold (89.5 MP), so in the default setting our clearer error fires first.
DEFAULT_MAX_PIXELS = 64_000_000

THUMBNAIL_MODES = ("pad", "squash")
_PAD_OVERSAMPLE = 4  # at most this many canvas rows per thumbnail pixel along a padded axis
_EXACT_CANVAS_MAX_SIDE = 1024  # small images get the reference's own side x side pad canvas (at most 1 MP)
_MIN_REDUCING_GAP = 2  # the grid image may serve as thumbnail source only when it is >= 2x the thumbnail content
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height
_INT32_MAX = 2**31 - 1

ImageInput = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


# ---------------------------------------------------------------------------------------------------------------
# Pixel conversions (pure functions over numpy arrays)
# ---------------------------------------------------------------------------------------------------------------


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


def _resize(x: torch.Tensor, size: tuple[int, int], content: tuple[float, float] | None = None) -> torch.Tensor:
    """(1, C, h, w) uint8 -> (1, C, *size) uint8, bicubic with antialiasing (PIL's BICUBIC kernel).

    ``content`` = (height, width) of the part of ``x`` that holds the image, in input pixels, when that is a
    fraction short of ``x`` (a DCT-scaled JPEG's last row and column cover less than a full source block): the
    resize then maps exactly that extent onto ``size``, as PIL's ``resize(box=...)`` would.

    The filter is separable and torch, like PIL, runs the horizontal pass first. When the vertical reduction is
    the stronger one (a 3000x2000 photo to its 1792x896 grid), the vertical pass runs first instead, so the
    horizontal pass sweeps the already reduced rows (20% less time for that photo). Same kernel and weights; only
    which intermediate is rounded to 8 bits differs: unbiased, a few % of pixels by 1 level, at most 2 at sharp
    edges (tests/test_image_processor.py), the size of PIL's own intermediate rounding.
    """
    h, w = x.shape[-2:]
    extent = (float(h), float(w)) if content is None else content
    if size[0] < h and size[1] != w and size[0] / extent[0] < size[1] / extent[1]:
        rows = _resize_once(x, (size[0], w), (extent[0], float(w)))  # (1, C, size[0], w): vertical pass only
        return _resize_once(rows, size, (float(size[0]), extent[1]))  # horizontal pass only
    return _resize_once(x, size, extent)


def _resize_once(x: torch.Tensor, size: tuple[int, int], content: tuple[float, float]) -> torch.Tensor:
    """One torch resize call (an axis whose size is unchanged is skipped by torch); see `_resize`."""
    h, w = x.shape[-2:]
    if content == (h, w):
        if (h, w) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    scales = (size[0] / content[0], size[1] / content[1])
    if (math.floor(h * scales[0]), math.floor(w * scales[1])) == tuple(size):
        out = F.interpolate(
            x, scale_factor=scales, mode="bicubic", antialias=True, align_corners=False, recompute_scale_factor=False
        )
        if tuple(out.shape[-2:]) == tuple(size):
            return out
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


def _canvas(height: int, width: int, fill: tuple[int, int, int]) -> torch.Tensor:
    """(1, 3, height, width) uint8 channels-last, every pixel the RGB ``fill``.

    Why one row first: broadcasting a 3-byte colour over the whole canvas runs torch's copy with an innermost
    loop of 3 elements (1.2 ms for a 1280x448 canvas); broadcasting a ready row copies whole rows (~10x faster).
    """
    row = torch.tensor(fill, dtype=torch.uint8).repeat(width)  # (width * 3,) one canvas row, RGB interleaved
    return row.view(1, 1, width, 3).expand(1, height, width, 3).clone().permute(0, 3, 1, 2)


def _as_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) with C in {1, 3} -> (1, 3, h, w) channels-last (torch's fast uint8 resize wants 3+ channels)."""
    if x.shape[1] == 3:
        return x
    return x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


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


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    """An input opened just far enough to know its oriented size, before any (costly) pixel decoding.

    Exactly one of ``pil`` and ``pixels`` is set. ``data`` holds the encoded bytes when the input was encoded;
    ``owned`` says the PIL image was opened here, so it may be drafted (which mutates it) and decoded lazily.
    """

    width: int  # oriented (as displayed)
    height: int
    orientation: int  # EXIF orientation 1..8 of the stored pixels
    pil: Image.Image | None = None
    pixels: torch.Tensor | None = None  # (1, C, H, W) uint8, already oriented
    data: bytes | None = None
    owned: bool = False


@dataclass(frozen=True)
class _Decoded:
    """Decoded pixels in stored (un-oriented) orientation, plus the extent that maps onto the whole image."""

    pixels: torch.Tensor  # (1, C, h, w) uint8, C in {1, 3}
    content: tuple[float, float]  # (height, width) in pixels of `pixels`; < (h, w) by a fraction after DCT scaling


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an image; 1 when absent or unreadable (bad EXIF is not bad pixels)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - PIL raises many types on corrupt EXIF; the pixels may still be fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


class ImageTooLargeError(ValueError):
    """An image refused from its header for its pixel count: over ``max_pixels`` or PIL's decompression-bomb limit."""


def check_image_size(width: int, height: int, max_pixels: int | None) -> None:
    """Zero-size (`ValueError`) and pixel-budget (`ImageTooLargeError`) checks on a declared size."""
    if width < 1 or height < 1:
        raise ValueError(f"image has zero size: {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels, over the pixel budget "
            f"(max_pixels={max_pixels:,}); refused before decoding"
        )


def open_image_header(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Encoded bytes -> a lazily opened PIL image (header read, no pixel decoded) whose size passed the checks.

    Every failure is a `ValueError` naming the problem: empty, unknown or corrupt bytes, a malformed header, a
    zero size, and (as `ImageTooLargeError`) a size over ``max_pixels`` or PIL's decompression-bomb limit. The
    processor opens every encoded input with it, and the server checks request images with it before queueing.
    """
    if not data:
        raise ValueError("image data is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice that; both mean "refuse".
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(
            f"image refused before decoding: over the pixel budget (PIL's Image.MAX_IMAGE_PIXELS="
            f"{Image.MAX_IMAGE_PIXELS}, max_pixels={max_pixels}): {err}"
        ) from err
    except UnidentifiedImageError as err:
        raise ValueError(f"cannot identify an image format in {len(data)} bytes (not an image or corrupt)") from err
    except Exception as err:  # noqa: BLE001 - PIL raises many exception types on malformed headers
        raise ValueError(f"cannot read the image header ({len(data)} bytes): {type(err).__name__}: {err}") from err
    check_image_size(pil.width, pil.height, max_pixels)
    return pil


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


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ProcessedImages:
    """pixel_values (N, 3, S, S), image_grids (I, 2) as (rows, cols), and the plans that made them."""

    pixel_values: torch.Tensor
    image_grids: torch.Tensor
    plans: list[TilePlan]


class InfiMMHDImageProcessorKwargs(ImagesKwargs, total=False):
    """The settings of `InfiMMHDImageProcessor`, so `from_pretrained(..., max_windows=16)` can override them."""

    window_size: int
    max_windows: int
    thumbnail_mode: str
    max_pixels: int | None
    background: tuple[int, int, int] | list[int]


class InfiMMHDImageProcessor(BaseImageProcessor):
    """InfiMM-HD image processor: each image -> a thumbnail + a grid of ``window_size`` windows, CLIP-normalised.

    ``processor(images)`` / ``processor.preprocess(images, max_windows=None, return_tensors="pt")`` returns a
    `BatchFeature` with ``pixel_values`` (N, 3, S, S) float32 in channels-last memory (per image: thumbnail, then
    windows row-major) and ``image_grids`` (I, 2) long (rows, cols). See the module docstring for the accepted
    inputs and guarantees.

    Args:
        window_size: side ``S`` of every crop (the vision encoder's input size).
        max_windows: window budget of the tiling plan (the training budget); a call may override it (e.g. with the
            model's larger inference budget).
        thumbnail_mode: ``"pad"`` (aspect kept, padded with the mean colour) or ``"squash"``.
        image_mean, image_std: per-channel normalisation (OpenAI-CLIP by default).
        max_pixels: largest image (width * height, as declared by its header) that is decoded; ``None`` disables
            the budget (PIL's ``Image.MAX_IMAGE_PIXELS`` still applies to encoded inputs).
        background: RGB colour transparent pixels are composited onto.
    """

    model_input_names = ["pixel_values", "image_grids"]
    valid_kwargs = InfiMMHDImageProcessorKwargs

    # Class-level defaults: `BaseImageProcessor.to_dict` keeps an explicit None only when the class default is not
    # None, so `max_pixels=None` survives a save/load round trip.
    window_size: int = 448
    max_windows: int = 9
    thumbnail_mode: str = "pad"
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] = (255, 255, 255)

    def __init__(
        self,
        window_size: int = 448,
        max_windows: int = 9,
        thumbnail_mode: str = "pad",
        image_mean: tuple[float, ...] | list[float] = CLIP_MEAN,
        image_std: tuple[float, ...] | list[float] = CLIP_STD,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        background: tuple[int, ...] | list[int] = (255, 255, 255),
        **kwargs: Any,
    ) -> None:
        """Validate and store the settings; unknown keys (e.g. from a newer config) are kept as attributes."""
        kwargs.pop("image_processor_type", None)  # written by `to_dict`, not a setting
        super().__init__(**kwargs)
        self.window_size = _positive_int(window_size, "window_size")
        self.max_windows = _window_budget(max_windows)
        if thumbnail_mode not in THUMBNAIL_MODES:
            raise ValueError(f"unknown thumbnail_mode {thumbnail_mode!r}; expected one of {THUMBNAIL_MODES}")
        self.thumbnail_mode = thumbnail_mode
        self.image_mean = _triple(image_mean, "image_mean", float)
        self.image_std = _triple(image_std, "image_std", float)
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.max_pixels = None if max_pixels is None else _positive_int(max_pixels, "max_pixels")
        self.background = _triple(background, "background", int)
        if not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background must be an RGB colour with components in 0..255, got {self.background}")

    # -- public API ---------------------------------------------------------------------------------------------

    def preprocess(
        self, images: Any, max_windows: int | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Images (one, a list, nested lists, or a 4-D batch array) -> ``pixel_values`` and ``image_grids``.

        ``max_windows`` overrides the window budget for this call. ``return_tensors``: ``"pt"`` (default; also
        used for None) or ``"np"``.
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        processed = self.process(images, max_windows=max_windows)
        data: dict[str, Any] = {"pixel_values": processed.pixel_values, "image_grids": processed.image_grids}
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def process(self, images: Any, max_windows: int | None = None) -> ProcessedImages:
        """Like `preprocess`, but returns a `ProcessedImages` that also holds each image's `TilePlan`."""
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        ws = self.window_size
        plans: list[TilePlan] = []
        crops: list[tuple[torch.Tensor, torch.Tensor]] = []  # per image: thumbnail (1,3,S,S), grid (1,3,rS,cS)
        for index, image in enumerate(_flatten(images)):
            with _image_errors(index):
                opened = self._open(image)
                plan = plan_tiles(opened.width, opened.height, window_size=ws, max_windows=budget)
                # A thumbnail-only plan makes its thumbnail exactly as the default windowed plan would, so the
                # thumbnail-only ablation and the low-resolution stages see the very pixels windowed runs see.
                shape = plan_tiles(opened.width, opened.height, ws, max(1, self.max_windows)) if budget == 0 else plan
                decoded = self._decode(opened, shape)
            grid, thumbnail = self._tile(decoded, opened, shape)
            plans.append(plan)
            crops.append((thumbnail, grid))

        # (N, S, S, 3) memory, handed out as an (N, 3, S, S) channels-last view: see the module docstring (5.).
        pixels_hwc = OUTPUT_BUFFERS.empty_float32((sum(p.num_crops for p in plans), ws, ws, 3))
        start = 0
        for plan, (thumbnail, grid) in zip(plans, crops, strict=True):
            pixels_hwc[start].copy_(thumbnail[0].permute(1, 2, 0))  # uint8 -> float32, (S, S, 3)
            if plan.thumbnail_only:
                start += 1
                continue
            windows = pixels_hwc[start + 1 : start + plan.num_crops].view(plan.rows, plan.cols, ws, ws, 3)
            # (rows*S, cols*S, 3) -> (rows, cols, S, S, 3): a strided view whose rows of S*3 bytes are contiguous
            grid_hwc = grid[0].permute(1, 2, 0)
            windows.copy_(grid_hwc.unflatten(0, (plan.rows, ws)).unflatten(2, (plan.cols, ws)).permute(0, 2, 1, 3, 4))
            start += plan.num_crops
        # (x / 255 - mean) / std as x * 1/(255 std) - mean/std: one fused pass over rows of S pixels x 3 channels
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.image_std], dtype=torch.float32).repeat(ws)  # (S*3,)
        shift = torch.tensor([-m / s for m, s in zip(self.image_mean, self.image_std, strict=True)]).repeat(ws)
        rows = pixels_hwc.view(-1, ws * 3)  # (N*S, S*3)
        torch.addcmul(shift.float(), rows, scale, out=rows)
        pixel_values = pixels_hwc.permute(0, 3, 1, 2)  # (N, 3, S, S), channels-last strides
        grids = torch.tensor([[p.rows, p.cols] for p in plans], dtype=torch.long).view(-1, 2)
        return ProcessedImages(pixel_values, grids, plans)

    def reference_preprocess(self, images: Any, max_windows: int | None = None) -> ProcessedImages:
        """The straightforward path, kept as the specification `process` is tested against.

        Full decode, `ImageOps.exif_transpose`, RGB conversion, `hires.tile_image` (PIL, padded canvas) and
        `normalize` per crop. Slow, and the pad canvas is ``side**2`` pixels: meant for tests, not training.
        """
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        pixel_values: list[torch.Tensor] = []
        plans: list[TilePlan] = []
        for index, image in enumerate(_flatten(images)):
            with _image_errors(index):
                pil = self._load_rgb(image)
            plan = plan_tiles(pil.width, pil.height, window_size=self.window_size, max_windows=budget)
            tiles = tile_image(pil, plan, thumbnail_mode=self.thumbnail_mode, fill=self.pad_fill)
            pixel_values.extend(normalize(tile, self.image_mean, self.image_std) for tile in tiles)
            plans.append(plan)
        ws = self.window_size
        stacked = torch.stack(pixel_values) if pixel_values else torch.empty(0, 3, ws, ws)
        grids = torch.tensor([[p.rows, p.cols] for p in plans], dtype=torch.long).view(-1, 2)
        return ProcessedImages(stacked, grids, plans)

    def load_image(self, image: ImageInput) -> Image.Image:
        """Any supported input -> an RGB PIL image (fully decoded, oriented, alpha composited, budget checked)."""
        with _image_errors(None):
            return self._load_rgb(image)

    def plan_image(self, image: ImageInput, max_windows: int | None = None) -> TilePlan:
        """The tiling plan of an image from its header alone (no pixel decoding for encoded inputs).

        Why: a data pipeline can budget crops (and so cross-attention keys) per sample before decoding anything.
        """
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        with _image_errors(None):
            opened = self._open(image)
        return plan_tiles(opened.width, opened.height, window_size=self.window_size, max_windows=budget)

    @property
    def pad_fill(self) -> tuple[int, int, int]:
        """Colour of the thumbnail padding: the mean as 8-bit RGB, truncated like the official ``expand2square``."""
        r, g, b = (int(m * 255) for m in self.image_mean)
        return (r, g, b)

    # -- decoding -----------------------------------------------------------------------------------------------

    def _check_size(self, width: int, height: int) -> None:
        """Zero-size and pixel-budget checks, from the declared size, before any decoding."""
        check_image_size(width, height, self.max_pixels)

    def _open(self, image: Any) -> _Opened:
        """Identify the input and read its size and orientation; encoded inputs are not decoded yet."""
        if isinstance(image, (str, os.PathLike)):
            image = _read_file(Path(image))
        elif hasattr(image, "read") and not isinstance(image, Image.Image):
            image = image.read()
        if isinstance(image, (bytes, bytearray, memoryview)):
            return self._open_bytes(bytes(image))
        if isinstance(image, Image.Image):
            self._check_size(image.width, image.height)
            orientation = _exif_orientation(image)
            width, height = _oriented_size(image.size, orientation)
            return _Opened(width, height, orientation, pil=image)
        if isinstance(image, torch.Tensor):
            tensor = image.detach().cpu()
            if tensor.dtype in (torch.float16, torch.bfloat16):
                tensor = tensor.float()
            channels_first, image = True, tensor.numpy()
        elif isinstance(image, np.ndarray):
            channels_first = False
        else:
            raise ValueError(f"unsupported image input of type {type(image).__name__}")
        if image.ndim in (2, 3) and image.size:
            height, width = _array_size(image, channels_first)
            self._check_size(width, height)
        pixels = _hwc_to_nchw(_array_to_hwc(image, self.background, channels_first))
        return _Opened(pixels.shape[-1], pixels.shape[-2], 1, pixels=pixels)

    def _open_bytes(self, data: bytes) -> _Opened:
        """Parse the header of encoded bytes (`open_image_header`); nothing is decoded yet."""
        pil = open_image_header(data, self.max_pixels)
        orientation = _exif_orientation(pil)
        width, height = _oriented_size(pil.size, orientation)
        return _Opened(width, height, orientation, pil=pil, data=data, owned=True)

    def _decode(self, opened: _Opened, plan: TilePlan) -> _Decoded:
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
        array = _pil_call(lambda: _pil_to_hwc(pil, self.background))
        return _Decoded(_hwc_to_nchw(array), content)

    def _load_rgb(self, image: Any) -> Image.Image:
        """Full-resolution decode as an RGB PIL image, orientation by `ImageOps.exif_transpose` (reference path)."""
        opened = self._open(image)
        if opened.pixels is not None:
            return _to_pil_rgb(opened.pixels)
        pil = opened.pil
        assert pil is not None
        _pil_call(pil.load)
        pil = _pil_call(lambda: ImageOps.exif_transpose(pil))
        return _to_pil_rgb(_hwc_to_nchw(_pil_call(lambda: _pil_to_hwc(pil, self.background))))

    # -- tiling -------------------------------------------------------------------------------------------------

    def _tile(self, decoded: _Decoded, opened: _Opened, plan: TilePlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded pixels -> (grid (1, 3, rows*S, cols*S), thumbnail (1, 3, S, S)), both uint8 and oriented."""
        ws = self.window_size
        stored = _as_three_channels(decoded.pixels)  # (1, 3, h, w) stored orientation
        transposed = opened.orientation in _TRANSPOSING_ORIENTATIONS
        grid_hw = (plan.rows * ws, plan.cols * ws)
        grid = _orient(_resize(stored, grid_hw[::-1] if transposed else grid_hw, decoded.content), opened.orientation)

        width, height = plan.width, plan.height
        side = max(width, height)
        # Thumbnail pixels covered by the image: all of them when squashed.
        pad = self.thumbnail_mode == "pad"
        content_hw = (height * ws / side, width * ws / side) if pad else (float(ws), float(ws))
        if min(g / c for g, c in zip(grid_hw, content_hw, strict=True)) >= _MIN_REDUCING_GAP:
            return grid, self._thumbnail(grid, width, height)
        oriented = _orient(stored, opened.orientation)  # (1, 3, h, w): small here (the grid was not >= 2x)
        if pad and max(oriented.shape[-2:]) <= _EXACT_CANVAS_MAX_SIDE:
            return grid, self._thumbnail_on_canvas(oriented)
        return grid, self._thumbnail(oriented, width, height)

    def _thumbnail_on_canvas(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, h, w) -> (1, 3, S, S) exactly as `hires.tile_image` pads: a max(h, w) square canvas, then resize.

        Used for small images only (the canvas is side**2 pixels); there it is cheap and, for an image decoded at
        full size, the reference's own geometry, including where an upscaled image's edge blends into the padding.
        """
        h, w = image.shape[-2:]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        canvas = _canvas(side, side, self.pad_fill)  # (1, 3, side, side) channels-last
        canvas[:, :, top : top + h, left : left + w] = image
        return _resize(canvas, (self.window_size, self.window_size))

    def _thumbnail(self, source: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """(1, 3, h, w) uint8 image (any resolution, oriented) -> (1, 3, S, S) thumbnail of a width x height image.

        ``"pad"`` reproduces `hires.tile_image` (the image centred on a ``side``-square canvas of the pad colour,
        resized to S) on a much smaller canvas: S pixels across the long axis and 2 to 4 pixels per thumbnail pixel
        along the padded axis. The image is resized into ``inner`` canvas rows, with ``inner`` chosen (see
        `_pad_resolution`) so that the reference's pad offset falls on a whole canvas row; the canvas is then
        reduced with the exact scale of the reference's canvas, so the image and its edge land where the reference
        puts them (exactly for common photo sizes, otherwise to a small fraction of a canvas row).
        """
        ws = self.window_size
        if self.thumbnail_mode == "squash" or width == height:
            return _resize(source, (ws, ws))
        landscape = width > height
        side, short = max(width, height), min(width, height)
        offset = (side - short) // 2  # the reference pastes the image this far into its canvas (image pixels)
        available = source.shape[-2] if landscape else source.shape[-1]
        inner, per_pixel = _pad_resolution(offset, short, side, ws, available)
        top = round(offset * per_pixel)
        extent = side * per_pixel  # canvas rows covering the reference's whole canvas
        rows = max(math.ceil(extent), top + inner)
        if landscape:
            canvas = _canvas(rows, ws, self.pad_fill)  # (1, 3, rows, S) channels-last
            canvas[:, :, top : top + inner, :] = _resize(source, (inner, ws))
            return _resize(canvas, (ws, ws), content=(extent, float(ws)))
        canvas = _canvas(ws, rows, self.pad_fill)  # (1, 3, S, rows) channels-last
        canvas[:, :, :, top : top + inner] = _resize(source, (ws, inner))
        return _resize(canvas, (ws, ws), content=(float(ws), extent))


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def _pad_resolution(offset: int, short: int, side: int, ws: int, available: int) -> tuple[int, float]:
    """Canvas resolution along a padded thumbnail's short axis: (rows for the image, canvas rows per image pixel).

    The image (``short`` pixels, ``offset`` pixels into a ``side`` canvas) spans ``length = short * ws / side``
    thumbnail pixels. It gets ``inner`` canvas rows: 2 to 4 per thumbnail pixel (as many as the ``available``
    source rows allow, so the first resize does not upsample), picked from a 20% range so that
    ``offset * inner / short`` is (nearest to) a whole number: pasting at that integer row is then exact. Common
    photo sizes have an exact choice (1920x1080 from its 896-row grid: 720 rows, pasted at row 280); otherwise the
    best of the K candidates is typically within ~1/K of a row. An image thinner than 1/4 thumbnail pixel gets one
    row on a 4S canvas.
    """
    length = short * ws / side
    if _PAD_OVERSAMPLE * length < 1:
        return 1, _PAD_OVERSAMPLE * ws / side
    target = min(_PAD_OVERSAMPLE * length, max(2 * length, available))
    hi = max(1, math.floor(target))
    candidates = np.arange(max(1, math.ceil(0.8 * hi)), hi + 1)  # (K,)
    position = offset * candidates / short  # (K,) where the image starts, in canvas rows
    inner = int(candidates[np.argmin(np.abs(position - np.rint(position)))])
    return inner, inner / short


def _window_budget(value: Any) -> int:
    """A window budget: a non-negative int, where 0 means thumbnail only (no windows)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"max_windows must be an integer >= 0 (0 = thumbnail only), got {value!r}")
    return int(value)


def _positive_int(value: Any, name: str) -> int:
    """A strictly positive int (bools and floats rejected), naming the setting in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _triple(value: Any, name: str, kind: type) -> tuple[Any, Any, Any]:
    """Three numbers as a tuple of ``kind`` (JSON turns tuples into lists; this turns them back)."""
    try:
        items = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be 3 numbers, got {value!r}") from err
    if len(items) != 3:
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
    return items


def _oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) as displayed: swapped for the EXIF orientations that rotate by 90 degrees."""
    return (size[1], size[0]) if orientation in _TRANSPOSING_ORIENTATIONS else (size[0], size[1])


def _array_size(array: np.ndarray, channels_first: bool) -> tuple[int, int]:
    """(height, width) an array image will have, for the budget check before converting it."""
    if array.ndim == 2:
        return array.shape[0], array.shape[1]
    first, last = array.shape[0] <= 4, array.shape[-1] <= 4
    if first and (channels_first or not last):
        return array.shape[1], array.shape[2]
    return array.shape[0], array.shape[1]


def _read_file(path: Path) -> bytes:
    """A file's bytes; a missing or unreadable path is a ValueError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise ValueError(f"image file not found: {path}") from err
    except OSError as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err


def _pil_call(fn: Any) -> Any:
    """Run a PIL decoding step, turning every failure (truncated data, corrupt streams, bombs) into ValueError.

    Why so broad: on malformed data PIL raises OSError, SyntaxError, struct.error, IndexError, EOFError, ... and a
    data loader must be able to skip a bad sample by catching one type.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return fn()
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"image refused: over the pixel budget (PIL decompression-bomb check): {err}") from err
    except Exception as err:  # noqa: BLE001 - see docstring
        message = str(err) or type(err).__name__
        if "truncated" in message.lower():
            raise ValueError(f"image data is truncated (incomplete file): {message}") from err
        raise ValueError(f"cannot decode image: {type(err).__name__}: {message}") from err


def _to_pil_rgb(pixels: torch.Tensor) -> Image.Image:
    """(1, C, H, W) uint8 with C in {1, 3} -> RGB PIL image."""
    array = pixels[0].permute(1, 2, 0).numpy()  # (H, W, C)
    if array.shape[-1] == 1:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0]), mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _flatten(images: Any) -> Iterator[Any]:
    """One image, a (nested) list/tuple of images, or a 4-D array/tensor batch -> images in order."""
    if isinstance(images, (list, tuple)):
        for item in images:
            yield from _flatten(item)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        yield from images
    else:
        yield images


@contextlib.contextmanager
def _image_errors(index: int | None) -> Iterator[None]:
    """Prefix a ValueError raised inside with the index of the image it is about ("image 3: ..."); an
    `ImageTooLargeError` stays one, so callers can tell "too large" from "not an image"."""
    try:
        yield
    except ValueError as err:
        if index is None:
            raise
        kind = ImageTooLargeError if isinstance(err, ImageTooLargeError) else ValueError
        raise kind(f"image {index}: {err}") from err


# ---------------------------------------------------------------------------------------------------------------
# Functional API (kept for existing callers)
# ---------------------------------------------------------------------------------------------------------------


def load_image(image: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image; a clear `ValueError` for what cannot be decoded or is empty."""
    return InfiMMHDImageProcessor().load_image(image)


def normalize(
    crop: Image.Image, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """RGB PIL crop -> (3, S, S) float32 tensor normalised with the CLIP mean/std."""
    array = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (array - m) / s


def process_images(
    images: list[ImageInput],
    window_size: int = 448,
    max_windows: int = 9,
    thumbnail_mode: str = "pad",
) -> ProcessedImages:
    """Decode, tile and normalise a flat list of images (in prompt order); see `InfiMMHDImageProcessor`."""
    processor = InfiMMHDImageProcessor(window_size=window_size, max_windows=max_windows, thumbnail_mode=thumbnail_mode)
    return processor.process(images)
