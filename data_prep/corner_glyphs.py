"""High-resolution canvases with tiny digits in their corners: the images of `data_prep.synthetic`.

Why this design: InfiMM-HD's own augmentation put coloured characters at image corners, so that answering needs the
high-resolution windows. Here a canvas has sides that are exact multiples of the 448 px window (mostly 1344 px on
its long side, so the 448 thumbnail is a >= 3x reduction) and holds digits from a 5x7 dot-matrix font, 1 px strokes
by default, each on a small solid plate at a fixed margin from a corner. In a window the glyph is 5x7 clean pixels;
in the thumbnail it is about 2x2 blurred ones. How much survives, measured by nearest-template matching with
templates of the exact position and sub-pixel phase (tests/test_data_prep.py): 100% of the digits in a window;
about half of them in the thumbnail of a 1344 px canvas (chance: 10%), and about 90% when the long side is 896 px
(the 2x2 grid, a 2x reduction). So the thumbnail blurs the digits badly but does not erase them; a grid list of
3-window sides only makes the gap widest.

Everything is drawn with numpy slices on uint8 arrays from a `numpy.random.Generator`: the same generator state gives
the same pixels, and no font files or per-pixel Python loops are involved.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

WINDOW = 448  # the model's window and thumbnail size; canvas sides are multiples of it
DEFAULT_GRIDS: tuple[tuple[int, int], ...] = ((3, 3), (2, 3), (3, 2), (1, 3), (3, 1), (2, 2))  # (rows, cols)
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

# 5x7 dot-matrix digits, one string per row, "1" = ink (the classic HD44780 LCD shapes).
FONT: dict[int, tuple[str, ...]] = {
    0: ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    1: ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    2: ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    3: ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    4: ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    5: ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    6: ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    7: ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    8: ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    9: ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}
GLYPH_W, GLYPH_H = 5, 7

# Glyph colours with exact RGB (the colour questions' answers) and the plate each sits on: white under dark colours,
# black under light ones, so every glyph has strong contrast with its plate whatever the background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 160, 40),
    "blue": (30, 70, 230),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "yellow": (250, 215, 0),
    "magenta": (220, 0, 200),
    "cyan": (0, 200, 220),
}
PLATES: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0)}

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "camera")
_PHOTO_BLOCK = 3  # photos are resized to 1/3 of the canvas, then pixel-repeated: sharp, cheap to PNG-encode
_NOISE_BLOCK, _NOISE_AMPLITUDE = 4, 3  # gradient grain: +-3 levels per 4x4 block


def plate_for(colour: str) -> str:
    """The plate name for a glyph colour: white under dark glyphs, black under light ones."""
    r, g, b = PALETTE[colour]
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 128 else "black"


def glyph_mask(digit: int, scale: int = 1) -> np.ndarray:
    """(7*scale, 5*scale) bool: the digit's ink, each font dot a scale x scale square."""
    rows = np.array([[c == "1" for c in row] for row in FONT[digit]], dtype=bool)
    return np.kron(rows, np.ones((scale, scale), dtype=bool)).astype(bool)


def corner_box(
    width: int, height: int, corner: str, glyph_scale: int = 1, margin: int = 8, plate_margin: int = 2
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), right/bottom exclusive: the plate of `corner`'s glyph on a width x height canvas.

    The plate is the glyph box grown by `plate_margin` on each side, `margin` px from the two canvas edges.

    >>> corner_box(1344, 896, "bottom-right")
    (1327, 877, 1336, 888)
    """
    plate_w = GLYPH_W * glyph_scale + 2 * plate_margin
    plate_h = GLYPH_H * glyph_scale + 2 * plate_margin
    left = margin if corner.endswith("left") else width - margin - plate_w
    top = margin if corner.startswith("top") else height - margin - plate_h
    return left, top, left + plate_w, top + plate_h


@functools.cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as (H, W, 3) uint8, loaded once per process."""
    from skimage import data

    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])


def preload_photos() -> None:
    """Load every background photo now (e.g. before forking workers that would each load them)."""
    for name in PHOTOS:
        _photo(name)


def gradient_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: a smooth random colour gradient (2x2 or 3x3 control colours) with mild blocky grain."""
    k = int(rng.integers(2, 4))
    controls = rng.integers(_NOISE_AMPLITUDE, 256 - _NOISE_AMPLITUDE, size=(k, k, 3), dtype=np.uint8)
    canvas = np.array(Image.fromarray(controls).resize((width, height), Image.Resampling.BILINEAR))
    grain = rng.integers(0, 2 * _NOISE_AMPLITUDE + 1, size=(-(-height // _NOISE_BLOCK), -(-width // _NOISE_BLOCK)))
    grain = np.asarray(Image.fromarray(grain.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST))
    canvas -= _NOISE_AMPLITUDE  # controls lie in [A, 255 - A], so this and the grain never wrap around
    canvas += grain[..., None]
    return canvas


def photo_background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    """(H, W, 3) uint8 from a random crop (canvas aspect, 50-100% of the largest) of a random scikit-image photo."""
    name = PHOTOS[int(rng.integers(len(PHOTOS)))]
    photo = _photo(name)
    src_h, src_w = photo.shape[:2]
    crop_w = min(src_w, src_h * width / height) * rng.uniform(0.5, 1.0)
    crop_h = crop_w * height / width
    x0, y0 = rng.uniform(0, src_w - crop_w), rng.uniform(0, src_h - crop_h)
    small = (-(-width // _PHOTO_BLOCK), -(-height // _PHOTO_BLOCK))
    image = Image.fromarray(photo).resize(small, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(image.resize((width, height), Image.Resampling.NEAREST)), name


def draw_glyph(
    canvas: np.ndarray,
    corner: str,
    digit: int,
    colour: str,
    glyph_scale: int = 1,
    margin: int = 8,
    plate_margin: int = 2,
) -> None:
    """Paint `digit` in `colour` on its plate in `corner` of (H, W, 3) uint8 `canvas`, in place."""
    height, width = canvas.shape[:2]
    left, top, right, bottom = corner_box(width, height, corner, glyph_scale, margin, plate_margin)
    canvas[top:bottom, left:right] = PLATES[plate_for(colour)]
    ink = canvas[top + plate_margin : bottom - plate_margin, left + plate_margin : right - plate_margin]
    ink[glyph_mask(digit, glyph_scale)] = PALETTE[colour]


PATTERNS = ("horizontal", "vertical", "checkered", "plain")
PATTERN_SIDE = 224  # px: the patterned square, centred in one window, far from the corner plates


def draw_pattern(canvas: np.ndarray, box: tuple[int, int, int, int], kind: str, rng: np.random.Generator) -> None:
    """Fill `box` of (H, W, 3) uint8 `canvas` with a 1-px two-colour pattern (`kind` in `PATTERNS`), in place.

    Every kind has the same mean colour ("plain" is that mean), so once a 3x antialiased downsample has removed the
    2-px period, the thumbnail shows the same flat square for all four: only a full-resolution window can tell them
    apart. That is the paper's claim in its simplest form, and unlike a 5x7 digit the evidence covers a whole
    224 px square, so a small model learns to read it in minutes.
    """
    left, top, right, bottom = box
    a = rng.integers(0, 128, size=3)
    b = a + 128  # the two colours are 128 levels apart in every channel; their mean is a + 64
    ys, xs = np.mgrid[top:bottom, left:right]
    if kind == "horizontal":
        on = ys % 2 == 0
    elif kind == "vertical":
        on = xs % 2 == 0
    elif kind == "checkered":
        on = (xs + ys) % 2 == 0
    elif kind == "plain":
        canvas[top:bottom, left:right] = (a + 64).astype(np.uint8)
        return
    else:
        raise ValueError(f"unknown pattern {kind!r}; expected one of {PATTERNS}")
    canvas[top:bottom, left:right] = np.where(on[..., None], a, b).astype(np.uint8)


def render_sample(
    rng: np.random.Generator,
    *,
    grids: Sequence[tuple[int, int]] = DEFAULT_GRIDS,
    glyph_scale: int = 1,
    margin: int = 8,
    plate_margin: int = 2,
    photo_fraction: float = 0.5,
    min_corners: int = 1,
    max_corners: int = 4,
    pattern: bool = False,
) -> tuple[Image.Image, dict[str, Any]]:
    """One canvas and its ground truth, everything drawn from `rng`.

    With `pattern`, a `PATTERN_SIDE` square of a fine pattern (`draw_pattern`) is drawn centred in a random window,
    after everything else (so the rest of the image is the same as without it); truth["pattern"] = {"kind",
    "window": [row, col], "box": [left, top, right, bottom]}.

    Truth: {"width", "height", "grid": [rows, cols], "background": "gradient"|"photo", "photo": name | None,
    "corners": {corner: {"digit": int, "colour": str, "plate": str}}} with the corners in `CORNERS` order.
    """
    rows, cols = grids[int(rng.integers(len(grids)))]
    width, height = cols * WINDOW, rows * WINDOW
    photo = None
    if rng.random() < photo_fraction:
        canvas, photo = photo_background(rng, width, height)
    else:
        canvas = gradient_background(rng, width, height)
    count = int(rng.integers(min_corners, max_corners + 1))
    chosen = sorted(rng.choice(len(CORNERS), size=count, replace=False).tolist())
    corners = {}
    for index in chosen:
        digit, colour = int(rng.integers(10)), list(PALETTE)[int(rng.integers(len(PALETTE)))]
        draw_glyph(canvas, CORNERS[index], digit, colour, glyph_scale, margin, plate_margin)
        corners[CORNERS[index]] = {"digit": digit, "colour": colour, "plate": plate_for(colour)}
    drawn = None
    if pattern:
        row, col = int(rng.integers(rows)), int(rng.integers(cols))
        kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
        left, top = col * WINDOW + (WINDOW - PATTERN_SIDE) // 2, row * WINDOW + (WINDOW - PATTERN_SIDE) // 2
        box = (left, top, left + PATTERN_SIDE, top + PATTERN_SIDE)
        draw_pattern(canvas, box, kind, rng)
        drawn = {"kind": kind, "window": [row, col], "box": list(box)}
    truth = {
        "width": width,
        "height": height,
        "grid": [rows, cols],
        "background": "photo" if photo else "gradient",
        "photo": photo,
        "corners": corners,
    }
    if drawn is not None:
        truth["pattern"] = drawn
    return Image.fromarray(canvas), truth
