"""Opening and decoding any image input, and its guards: the pixel budget, clear errors, the header-only open.

What the package docstring's guarantees say about inputs and errors is kept here: the accepted input types
(`ImageInput`), the pixel budget checked from the header before any pixel is decoded (`DEFAULT_MAX_PIXELS`,
`check_image_size`, `ImageTooLargeError`), `open_image_header` (also used by the server to refuse request images
before queueing them), and the translation of PIL's many failure types into one `ValueError` naming the image
(`_pil_call`, `_image_errors`). The ways in: `_open_input` reads an input's oriented size without decoding its
pixels (all the tiling plan needs), `_load_full_rgb` decodes it fully as RGB (the reference path and
`load_image`). Decoding at the reduced size a plan allows is `scaled_decode`'s.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .layout import _hwc_to_nchw, _to_pil_rgb
from .modes import _array_size, _array_to_hwc, _pil_to_hwc
from .orientation import _exif_orientation, _oriented_size

# Pixel budget: 64 MP admits every camera photo in common use (61 MP full-frame bodies, 50 MP phone sensors at full
# resolution, 8192x7800 scans) while bounding one decode at ~190 MB of RGB (~250 MB during a mode conversion), so
# a few data-loader workers cannot be driven out of memory by hostile or broken files. It is below PIL's own
# warning threshold (89.5 MP), so in the default setting our clearer error fires first.
DEFAULT_MAX_PIXELS = 64_000_000

ImageInput = Image.Image | np.ndarray | torch.Tensor | str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


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


def _open_input(image: Any, background: tuple[int, int, int], max_pixels: int | None) -> _Opened:
    """Identify the input and read its size and orientation; encoded inputs are not decoded yet."""
    if isinstance(image, (str, os.PathLike)):
        image = _read_file(Path(image))
    elif hasattr(image, "read") and not isinstance(image, Image.Image):
        image = image.read()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(image), max_pixels)
    if isinstance(image, Image.Image):
        check_image_size(image.width, image.height, max_pixels)
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
        check_image_size(width, height, max_pixels)
    pixels = _hwc_to_nchw(_array_to_hwc(image, background, channels_first))
    return _Opened(pixels.shape[-1], pixels.shape[-2], 1, pixels=pixels)


def _open_bytes(data: bytes, max_pixels: int | None) -> _Opened:
    """Parse the header of encoded bytes (`open_image_header`); nothing is decoded yet."""
    pil = open_image_header(data, max_pixels)
    orientation = _exif_orientation(pil)
    width, height = _oriented_size(pil.size, orientation)
    return _Opened(width, height, orientation, pil=pil, data=data, owned=True)


def _load_full_rgb(image: Any, background: tuple[int, int, int], max_pixels: int | None) -> Image.Image:
    """Full-resolution decode as an RGB PIL image, orientation by `ImageOps.exif_transpose` (reference path)."""
    opened = _open_input(image, background, max_pixels)
    if opened.pixels is not None:
        return _to_pil_rgb(opened.pixels)
    pil = opened.pil
    assert pil is not None
    _pil_call(pil.load)
    pil = _pil_call(lambda: ImageOps.exif_transpose(pil))
    return _to_pil_rgb(_hwc_to_nchw(_pil_call(lambda: _pil_to_hwc(pil, background))))


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


def _flatten(images: Any) -> Iterator[Any]:
    """One image, a (nested) list/tuple of images, or a 4-D array/tensor batch -> images in order."""
    if isinstance(images, (list, tuple)):
        for item in images:
            yield from _flatten(item)
    elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        yield from images
    else:
        yield images
