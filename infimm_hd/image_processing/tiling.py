"""Decoded pixels -> the oriented grid image and thumbnail of a tiling plan (steps 3 and 4 of the fast path).

The grid image is the decoded image resized once to rows*S x cols*S and then oriented (the windows are strided
views of it, cut in `normalisation`). The thumbnail is made from that grid image when it is at least twice the
thumbnail's content size, otherwise from the decoded image; for ``"pad"`` on a canvas far smaller than the
reference's ``side x side`` one, placed so that the image and its edge against the padding land where
`hires.tile_image` (the reference) puts them. Shapes as in the package docstring's legend.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..hires import TilePlan
from .decoding import _Opened
from .layout import _as_three_channels, _canvas
from .orientation import _TRANSPOSING_ORIENTATIONS, _orient
from .resize import _resize
from .scaled_decode import _Decoded

THUMBNAIL_MODES = ("pad", "squash")
_PAD_OVERSAMPLE = 4  # at most this many canvas rows per thumbnail pixel along a padded axis
_EXACT_CANVAS_MAX_SIDE = 1024  # small images get the reference's own side x side pad canvas (at most 1 MP)
_MIN_REDUCING_GAP = 2  # the grid image may serve as thumbnail source only when it is >= 2x the thumbnail content


def _tile_decoded(
    decoded: _Decoded,
    opened: _Opened,
    plan: TilePlan,
    window_size: int,
    thumbnail_mode: str,
    pad_fill: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded pixels -> (grid (1, 3, rows*S, cols*S), thumbnail (1, 3, S, S)), both uint8 and oriented."""
    ws = window_size
    stored = _as_three_channels(decoded.pixels)  # (1, 3, h, w) stored orientation
    transposed = opened.orientation in _TRANSPOSING_ORIENTATIONS
    grid_hw = (plan.rows * ws, plan.cols * ws)
    grid = _orient(_resize(stored, grid_hw[::-1] if transposed else grid_hw, decoded.content), opened.orientation)

    width, height = plan.width, plan.height
    side = max(width, height)
    # Thumbnail pixels covered by the image: all of them when squashed.
    pad = thumbnail_mode == "pad"
    content_hw = (height * ws / side, width * ws / side) if pad else (float(ws), float(ws))
    if min(g / c for g, c in zip(grid_hw, content_hw, strict=True)) >= _MIN_REDUCING_GAP:
        return grid, _thumbnail(grid, width, height, ws, thumbnail_mode, pad_fill)
    oriented = _orient(stored, opened.orientation)  # (1, 3, h, w): small here (the grid was not >= 2x)
    if pad and max(oriented.shape[-2:]) <= _EXACT_CANVAS_MAX_SIDE:
        return grid, _thumbnail_on_canvas(oriented, ws, pad_fill)
    return grid, _thumbnail(oriented, width, height, ws, thumbnail_mode, pad_fill)


def _thumbnail_on_canvas(image: torch.Tensor, window_size: int, pad_fill: tuple[int, int, int]) -> torch.Tensor:
    """(1, 3, h, w) -> (1, 3, S, S) exactly as `hires.tile_image` pads: a max(h, w) square canvas, then resize.

    Used for small images only (the canvas is side**2 pixels); there it is cheap and, for an image decoded at
    full size, the reference's own geometry, including where an upscaled image's edge blends into the padding.
    """
    h, w = image.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    canvas = _canvas(side, side, pad_fill)  # (1, 3, side, side) channels-last
    canvas[:, :, top : top + h, left : left + w] = image
    return _resize(canvas, (window_size, window_size))


def _thumbnail(
    source: torch.Tensor, width: int, height: int, window_size: int, thumbnail_mode: str, pad_fill: tuple[int, int, int]
) -> torch.Tensor:
    """(1, 3, h, w) uint8 image (any resolution, oriented) -> (1, 3, S, S) thumbnail of a width x height image.

    ``"pad"`` reproduces `hires.tile_image` (the image centred on a ``side``-square canvas of the pad colour,
    resized to S) on a much smaller canvas: S pixels across the long axis and 2 to 4 pixels per thumbnail pixel
    along the padded axis. The image is resized into ``inner`` canvas rows, with ``inner`` chosen (see
    `_pad_resolution`) so that the reference's pad offset falls on a whole canvas row; the canvas is then
    reduced with the exact scale of the reference's canvas, so the image and its edge land where the reference
    puts them (exactly for common photo sizes, otherwise to a small fraction of a canvas row).
    """
    ws = window_size
    if thumbnail_mode == "squash" or width == height:
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
        canvas = _canvas(rows, ws, pad_fill)  # (1, 3, rows, S) channels-last
        canvas[:, :, top : top + inner, :] = _resize(source, (inner, ws))
        return _resize(canvas, (ws, ws), content=(extent, float(ws)))
    canvas = _canvas(ws, rows, pad_fill)  # (1, 3, S, rows) channels-last
    canvas[:, :, :, top : top + inner] = _resize(source, (ws, inner))
    return _resize(canvas, (ws, ws), content=(float(ws), extent))


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
