"""High-resolution tiling for InfiMM-HD: how an image becomes a thumbnail plus a grid of windows.

InfiMM-HD feeds the vision encoder a ``window_size`` x ``window_size`` *thumbnail* of the whole image plus
``rows * cols`` windows of the same size cut from the image resized to exactly ``cols * window_size`` by
``rows * window_size`` pixels (the paper: "resized to the nearest multiple of 448"; 1x1 up to 3x3 windows in
training, more at inference). Each window later gets a fixed 2D sin-cos position embedding so the language model
can tell where in the image a window came from; the thumbnail gets its own, distinct one.

Grid rule (``plan_tiles``)
--------------------------
Let ``w``, ``h`` be the image size, ``ws`` the window size and ``M`` the window budget (``max_windows``). The ideal
grid of the image uniformly scaled by a factor ``x > 0`` is::

    cols(x) = max(1, floor(x * w / ws + 1/2))
    rows(x) = max(1, floor(x * h / ws + 1/2))

i.e. each side is rounded to the nearest multiple of the window, ties rounding up, and a side shorter than half a
window is upscaled to one window (never a zero grid).

* If ``rows(1) * cols(1) <= M`` that grid is used.
* Otherwise the image is shrunk uniformly (aspect ratio kept) to the largest scale ``x < 1`` whose grid fits the
  budget, ``rows(x) * cols(x) <= M``, and that grid is used. Both ``rows`` and ``cols`` are non-decreasing step
  functions of ``x`` that only change at the finitely many *breakpoints* where ``x * w / ws + 1/2`` or
  ``x * h / ws + 1/2`` is an integer ``k >= 2``; between breakpoints the grid is constant, and at a breakpoint it
  already has its new (larger) value. The chosen grid is that of the highest constant piece below ``x = 1`` that
  fits, found by visiting the breakpoints ``b < 1`` in descending order and evaluating the grid *at* ``b`` (the
  value on ``[b, next breakpoint)``); if none fits, the piece below the smallest breakpoint has grid 1x1, which
  always fits. All arithmetic is exact (``fractions.Fraction``), so no breakpoint is missed or misrounded.

Consequences (all covered by ``tests/test_hires.py``):

* a 448x448 image gives a 1x1 grid, and so does any image with both sides ``< 672`` (= 1.5 windows; at exactly
  672 the tie rounds up to 2);
* ``1 <= rows``, ``1 <= cols`` and ``rows * cols <= max_windows`` whenever ``max_windows >= 1``;
* the window count never decreases when an image is scaled up uniformly (same aspect ratio): the larger image's
  grid is the grid of the smaller one at a larger scale, and the search range only grows;
* a 1x20000 image with ``max_windows=9`` gives 9 rows and 1 column;
* ``max_windows=0`` gives the *thumbnail-only* plan ``0 x 0``: no windows, just the thumbnail, which is what the
  low-resolution stages (1 and 2) train on and what the "thumbnail-only" ablation evaluates.

The module is pure: every function is deterministic and there is no module-level mutable state.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import torch
from PIL import Image

__all__ = [
    "TilePlan",
    "plan_tiles",
    "tile_image",
    "sinusoid_table",
    "window_position_embedding",
]

# The OpenAI-CLIP pixel mean as 8-bit RGB; the official demo pads non-square images with it ("expand2square").
CLIP_MEAN_RGB: tuple[int, int, int] = (122, 116, 104)

_THUMBNAIL_MODES = ("pad", "squash")


def _as_int(value: Any, name: str) -> int:
    """Return ``value`` as a plain ``int`` (numpy integers accepted); bools and floats are rejected as type errors."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _check_image_size(width: Any, height: Any) -> tuple[int, int]:
    """Validate an image size, naming it in the error so a bad input is easy to trace back."""
    width, height = _as_int(width, "width"), _as_int(height, "height")
    if width < 0 or height < 0:
        raise ValueError(f"image has negative size: {width}x{height}")
    if width == 0 or height == 0:
        raise ValueError(f"image has zero size: {width}x{height}")
    return width, height


def _check_positive(value: Any, name: str) -> int:
    """Validate a strictly positive integer parameter."""
    value = _as_int(value, name)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_non_negative(value: Any, name: str) -> int:
    """Validate a non-negative integer parameter (a window count or budget, where 0 means thumbnail only)."""
    value = _as_int(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _side_windows(scaled_side: Fraction) -> int:
    """Windows along one side of length ``scaled_side`` (in window units): nearest integer, ties up, at least 1."""
    return max(1, math.floor(scaled_side + Fraction(1, 2)))


def _grid_at(scale: Fraction, width: int, height: int, window_size: int) -> tuple[int, int]:
    """The ideal ``(rows, cols)`` grid of the image scaled by ``scale`` (exact arithmetic)."""
    return (
        _side_windows(scale * height / window_size),
        _side_windows(scale * width / window_size),
    )


def _breakpoints_below_one(side: int, window_size: int) -> list[Fraction]:
    """Scales ``x < 1`` at which ``side``'s window count steps up: ``x * side / ws + 1/2 == k`` for an integer k >= 2.

    ``k = 1`` is excluded because the count is clamped to 1 there anyway, so the grid does not change.
    """
    out = []
    k = 2
    while True:
        x = Fraction(2 * k - 1, 2) * window_size / side
        if x >= 1:
            return out
        out.append(x)
        k += 1


@dataclass(frozen=True)
class TilePlan:
    """How one image is cut: its original size and the ``rows`` x ``cols`` grid of ``window_size`` windows.

    ``rows == cols == 0`` is the thumbnail-only plan (no windows). Frozen so a plan can be shared, hashed and
    compared; ``to_dict``/``from_dict`` let it travel in JSON (e.g. in a preprocessed dataset's metadata) without
    pickling.
    """

    width: int
    height: int
    rows: int
    cols: int
    window_size: int

    def __post_init__(self) -> None:
        """Reject sizes that cannot describe a real tiling (zero, negative or non-integer)."""
        width, height = _check_image_size(self.width, self.height)
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "window_size", _check_positive(self.window_size, "window_size"))
        for name in ("rows", "cols"):
            object.__setattr__(self, name, _check_non_negative(getattr(self, name), name))
        if (self.rows == 0) != (self.cols == 0):
            raise ValueError(
                f"a grid is either empty (0x0, thumbnail only) or at least 1x1, got {self.rows}x{self.cols}"
            )

    @property
    def thumbnail_only(self) -> bool:
        """True for the 0x0 plan: the image is seen only through its thumbnail."""
        return self.rows == 0

    @property
    def resized_size(self) -> tuple[int, int]:
        """``(width, height)`` the image is resized to before the windows are cropped."""
        return (self.cols * self.window_size, self.rows * self.window_size)

    @property
    def num_windows(self) -> int:
        """Number of high-resolution windows (``rows * cols``), the thumbnail not counted."""
        return self.rows * self.cols

    @property
    def num_crops(self) -> int:
        """Number of encoder inputs for this image: the windows plus the thumbnail."""
        return self.num_windows + 1

    def window_boxes(self) -> list[tuple[int, int, int, int]]:
        """``(left, top, right, bottom)`` boxes of the windows in resized-image pixels, row-major (row 0 first).

        The order is the order of ``tile_image``'s windows and of ``window_position_embedding``'s rows 1...
        """
        ws = self.window_size
        return [(c * ws, r * ws, (c + 1) * ws, (r + 1) * ws) for r in range(self.rows) for c in range(self.cols)]

    def cross_attention_keys(self, tokens_per_crop: int) -> int:
        """Visual tokens the language model cross-attends to for this image: ``num_crops * tokens_per_crop``."""
        return self.num_crops * _check_positive(tokens_per_crop, "tokens_per_crop")

    def to_dict(self) -> dict[str, int]:
        """A JSON-serialisable dict of the fields (plain ints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilePlan:
        """Inverse of ``to_dict``; missing or unknown keys are errors so a stale record cannot load silently."""
        fields = ("width", "height", "rows", "cols", "window_size")
        missing = [k for k in fields if k not in d]
        unknown = sorted(set(d) - set(fields))
        if missing or unknown:
            raise ValueError(f"bad TilePlan dict: missing keys {missing}, unknown keys {unknown}")
        return cls(**{k: d[k] for k in fields})


def plan_tiles(width: int, height: int, window_size: int = 448, max_windows: int = 9) -> TilePlan:
    """Choose the window grid for a ``width`` x ``height`` image (rule in the module docstring).

    Deterministic and exact: the same size always gives the same plan, and the grid is the ideal
    nearest-multiple-of-the-window grid, uniformly shrunk only as far as needed to fit ``max_windows``.

    >>> p = plan_tiles(448, 448)
    >>> (p.rows, p.cols)
    (1, 1)
    >>> p = plan_tiles(1344, 896)
    >>> (p.rows, p.cols, p.resized_size, p.num_crops)
    (2, 3, (1344, 896), 7)
    >>> p = plan_tiles(1, 20000)
    >>> (p.rows, p.cols)
    (9, 1)
    >>> plan_tiles(1344, 896, max_windows=0).num_crops  # thumbnail only
    1
    >>> plan_tiles(0, 10)
    Traceback (most recent call last):
    ...
    ValueError: image has zero size: 0x10
    """
    width, height = _check_image_size(width, height)
    window_size = _check_positive(window_size, "window_size")
    max_windows = _check_non_negative(max_windows, "max_windows")
    if max_windows == 0:
        return TilePlan(width=width, height=height, rows=0, cols=0, window_size=window_size)

    rows, cols = _grid_at(Fraction(1), width, height, window_size)
    if rows * cols > max_windows:
        candidates = sorted(
            set(_breakpoints_below_one(width, window_size)) | set(_breakpoints_below_one(height, window_size)),
            reverse=True,
        )
        rows, cols = 1, 1  # the piece below the smallest breakpoint; reached only if no breakpoint fits
        for x in candidates:
            r, c = _grid_at(x, width, height, window_size)
            if r * c <= max_windows:
                rows, cols = r, c
                break
    return TilePlan(width=width, height=height, rows=rows, cols=cols, window_size=window_size)


def tile_image(
    image: Image.Image,
    plan: TilePlan,
    thumbnail_mode: str = "pad",
    fill: tuple[int, int, int] = CLIP_MEAN_RGB,
) -> list[Image.Image]:
    """Cut ``image`` into ``[thumbnail, window_0, ..., window_{n-1}]``, each ``window_size`` square, RGB.

    Windows follow ``plan.window_boxes()`` and come from the whole image resized (bicubic, antialiased when
    shrinking) to ``plan.resized_size``. The thumbnail shows the whole image at encoder resolution:

    * ``"pad"``: the image centred on a square canvas of ``fill`` (default the CLIP mean colour, as the official
      demo's ``expand2square`` does), then resized, so the aspect ratio is kept;
    * ``"squash"``: the image resized straight to the square, distorting non-square images.
    """
    if thumbnail_mode not in _THUMBNAIL_MODES:
        raise ValueError(f"unknown thumbnail_mode {thumbnail_mode!r}; expected one of {_THUMBNAIL_MODES}")
    if image.size != (plan.width, plan.height):
        raise ValueError(
            f"image size {image.size[0]}x{image.size[1]} does not match the plan's {plan.width}x{plan.height}"
        )
    if image.mode != "RGB":
        image = image.convert("RGB")
    ws = plan.window_size
    bicubic = Image.Resampling.BICUBIC

    if thumbnail_mode == "pad":
        side = max(plan.width, plan.height)
        canvas = Image.new("RGB", (side, side), tuple(fill))
        canvas.paste(image, ((side - plan.width) // 2, (side - plan.height) // 2))
        thumbnail = canvas.resize((ws, ws), bicubic)
    else:
        thumbnail = image.resize((ws, ws), bicubic)

    if plan.thumbnail_only:
        return [thumbnail]
    resized = image.resize(plan.resized_size, bicubic)
    return [thumbnail] + [resized.crop(box) for box in plan.window_boxes()]


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """The Transformer sinusoid table, shape ``(num_positions, dim)``, float32.

    ``table[pos, j] = sin(angle)`` for even ``j`` and ``cos(angle)`` for odd ``j``, with
    ``angle = pos / 10000 ** (2 * (j // 2) / dim)``. Computed in float64 and rounded once, so entries are the
    correctly rounded float32 of the exact values (up to libm accuracy).
    """
    num_positions = _as_int(num_positions, "num_positions")
    dim = _as_int(dim, "dim")
    if num_positions < 0:
        raise ValueError(f"num_positions must be >= 0, got {num_positions}")
    if dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even number, got {dim}")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    pair = torch.arange(dim, dtype=torch.float64) // 2  # (dim,) 0, 0, 1, 1, ...
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * pair / dim)  # (P, dim)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))  # (P, dim)
    return table.to(torch.float32)


def window_position_embedding(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2D position embeddings for one image's crops, shape ``(1 + rows * cols, dim)``, float32.

    Row 0 is the thumbnail and is all zeros: the thumbnail is the ``window_size`` view the vision encoder was
    trained on in the low-resolution stage, so leaving it unshifted keeps its features unchanged. Zeros are
    distinct from every window's vector because each window vector is made of (sin, cos) pairs of unit norm.

    ``rows == cols == 0`` (thumbnail only) gives just the zero row. Rows 1.. are the windows in row-major order
    (``TilePlan.window_boxes()`` order); window ``(r, c)`` is ``cat(table[c], table[r])`` with
    ``table = sinusoid_table(max(rows, cols), dim // 2)``: the first half of the channels encodes the column, the
    second half the row. ``dim // 2`` must be even, i.e. ``dim % 4 == 0``.
    """
    rows = _check_non_negative(rows, "rows")
    cols = _check_non_negative(cols, "cols")
    if (rows == 0) != (cols == 0):
        raise ValueError(f"a grid is either empty (0x0, thumbnail only) or at least 1x1, got {rows}x{cols}")
    dim = _as_int(dim, "dim")
    if dim < 4 or dim % 4:
        raise ValueError(
            f"dim must be a positive multiple of 4 (even, with an even half for the column/row tables), got {dim}"
        )
    if rows == 0:
        return torch.zeros(1, dim, dtype=torch.float32)
    table = sinusoid_table(max(rows, cols), dim // 2)  # (max(rows, cols), dim/2)
    col_part = table[:cols].repeat(rows, 1)  # (rows*cols, dim/2): column index cycles fastest (row-major)
    row_part = table[:rows].repeat_interleave(cols, dim=0)  # (rows*cols, dim/2)
    windows = torch.cat([col_part, row_part], dim=1)  # (rows*cols, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float32), windows], dim=0)  # (1 + rows*cols, dim)
