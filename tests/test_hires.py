"""Tests for ``infimm_hd.hires``: the tile grid rule, image tiling and the window position embeddings.

Expectations are computed independently of the implementation where possible: the shrink rule is checked against
a reference that reasons about the interval of scales on which each candidate grid holds, tiles are checked
against numpy slices of images with known content, and the sinusoid tables against ``math`` directly.
"""

from __future__ import annotations

import doctest
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from infimm_hd import hires
from infimm_hd.hires import TilePlan, plan_tiles, sinusoid_table, tile_image, window_position_embedding

FILL = (122, 116, 104)
sizes = st.integers(min_value=1, max_value=30000)
fast = settings(max_examples=150, deadline=None)


# ---------------------------------------------------------------------------------------------------------------
# Independent reference for the grid rule
# ---------------------------------------------------------------------------------------------------------------


def _scales_with_count(n: int, side: int, ws: int) -> tuple[Fraction, Fraction | None]:
    """Half-open interval ``[lo, hi)`` of scales x > 0 where a side of ``side`` px gets exactly ``n`` windows.

    ``n`` windows means ``n <= x*side/ws + 1/2 < n + 1`` for ``n >= 2``; one window covers everything below the
    step to two (the clamp turns 0 into 1). ``hi`` is never None here but the type documents an unbounded end.
    """
    lo = Fraction(0) if n == 1 else Fraction(2 * n - 1, 2) * ws / side
    hi = Fraction(2 * n + 1, 2) * ws / side
    return lo, hi


def reference_grid(width: int, height: int, ws: int, max_windows: int) -> tuple[int, int]:
    """``(rows, cols)`` by the rule, derived per candidate grid rather than by walking breakpoints.

    For every grid with ``r * c <= max_windows`` take the set of scales in ``(0, 1]`` where the ideal grid is
    exactly ``(r, c)``; the answer is the grid whose set reaches highest. A set containing 1 beats one that only
    approaches 1 from below (a breakpoint exactly at scale 1 belongs to the larger grid).
    """
    best: tuple[tuple[Fraction, int], tuple[int, int]] | None = None
    for r in range(1, max_windows + 1):
        for c in range(1, max_windows // r + 1):
            r_lo, r_hi = _scales_with_count(r, height, ws)
            c_lo, c_hi = _scales_with_count(c, width, ws)
            lo, hi = max(r_lo, c_lo), min(r_hi, c_hi)
            if not (lo < hi and lo <= 1):
                continue
            key = (min(hi, Fraction(1)), 1 if lo <= 1 < hi else 0)
            if best is None or key > best[0]:
                best = (key, (r, c))
    assert best is not None
    return best[1]


# ---------------------------------------------------------------------------------------------------------------
# plan_tiles / TilePlan
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "max_windows", "rows", "cols"),
    [
        (448, 448, 9, 1, 1),
        (671, 671, 9, 1, 1),  # just under 1.5 windows per side rounds down
        (672, 672, 9, 2, 2),  # exactly 1.5 windows: the tie rounds up
        (1, 1, 9, 1, 1),  # tiny images are upscaled to one window
        (1344, 896, 9, 2, 3),
        (1344, 1344, 9, 3, 3),
        (1, 20000, 9, 9, 1),
        (20000, 1, 9, 1, 9),
        (100000, 100000, 9, 3, 3),
        (672, 672, 3, 1, 1),  # 2x2 is over budget and the breakpoint is exactly at scale 1: next grid down is 1x1
        (1792, 448, 3, 1, 3),  # ideal 1x4 shrinks to 1x3
    ],
)
def test_plan_known_sizes(width: int, height: int, max_windows: int, rows: int, cols: int) -> None:
    plan = plan_tiles(width, height, max_windows=max_windows)
    assert (plan.rows, plan.cols) == (rows, cols)
    assert (plan.width, plan.height, plan.window_size) == (width, height, 448)


def test_plan_small_images_are_one_window() -> None:
    for w in (1, 100, 447, 448, 449, 600, 671):
        for h in (1, 300, 448, 671):
            assert plan_tiles(w, h).num_windows == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 10), "image has zero size: 0x10"),
        ((10, 0), "image has zero size: 10x0"),
        ((-3, 10), "image has negative size: -3x10"),
        ((10, 10, 0), "window_size must be >= 1, got 0"),
        ((10, 10, 448, -2), "max_windows must be >= 0, got -2"),
    ],
)
def test_plan_rejects_bad_input(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def test_plan_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        plan_tiles(448.0, 448)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        plan_tiles(True, 448)  # type: ignore[arg-type]
    assert plan_tiles(np.int64(896), np.int32(448)) == plan_tiles(896, 448)


@fast
@given(width=sizes, height=sizes, max_windows=st.integers(min_value=1, max_value=25))
def test_plan_properties(width: int, height: int, max_windows: int) -> None:
    plan = plan_tiles(width, height, max_windows=max_windows)
    assert plan.rows >= 1 and plan.cols >= 1
    assert plan.num_windows == plan.rows * plan.cols <= max_windows
    assert plan.num_crops == plan.num_windows + 1
    assert plan == plan_tiles(width, height, max_windows=max_windows)

    # The boxes partition the resized image: in bounds, non-empty, pairwise disjoint, total area equal.
    rw, rh = plan.resized_size
    assert (rw, rh) == (plan.cols * 448, plan.rows * 448)
    boxes = plan.window_boxes()
    assert len(boxes) == plan.num_windows
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= rw and 0 <= top < bottom <= rh
        assert (right - left, bottom - top) == (448, 448)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap_w = min(a[2], b[2]) - max(a[0], b[0])
            overlap_h = min(a[3], b[3]) - max(a[1], b[1])
            assert overlap_w <= 0 or overlap_h <= 0, (a, b)
    assert sum((r - left) * (b - t) for left, t, r, b in boxes) == rw * rh

    # Row-major order: tops never decrease, lefts increase within a row.
    assert boxes == sorted(boxes, key=lambda box: (box[1], box[0]))

    restored = TilePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert restored == plan


@fast
@given(
    width=st.integers(min_value=1, max_value=5000),
    height=st.integers(min_value=1, max_value=5000),
    window_size=st.sampled_from([1, 7, 32, 100, 224, 336, 448, 500]),
    max_windows=st.integers(min_value=1, max_value=12),
)
def test_plan_matches_reference(width: int, height: int, window_size: int, max_windows: int) -> None:
    plan = plan_tiles(width, height, window_size=window_size, max_windows=max_windows)
    assert (plan.rows, plan.cols) == reference_grid(width, height, window_size, max_windows)


def test_plan_matches_reference_exhaustive_small() -> None:
    # Small window sizes make breakpoints land exactly on scale 1 and on each other often.
    for ws in (2, 3, 4):
        for w in range(1, 25):
            for h in range(1, 25):
                for m in (1, 2, 3, 4, 6, 7):
                    plan = plan_tiles(w, h, window_size=ws, max_windows=m)
                    assert (plan.rows, plan.cols) == reference_grid(w, h, ws, m), (w, h, ws, m)


def test_plan_unshrunk_grid_is_nearest_multiple() -> None:
    # When the ideal grid fits it is used as is: each side rounded half-up to whole windows.
    for w in range(1, 3000, 37):
        for h in range(1, 3000, 41):
            plan = plan_tiles(w, h, max_windows=100)
            assert plan.cols == max(1, (2 * w + 448) // 896)
            assert plan.rows == max(1, (2 * h + 448) // 896)


@fast
@given(
    width=sizes,
    height=sizes,
    factor=st.integers(min_value=1, max_value=6),
    max_windows=st.integers(min_value=1, max_value=25),
)
def test_plan_monotone_under_uniform_upscaling(width: int, height: int, factor: int, max_windows: int) -> None:
    small = plan_tiles(width, height, max_windows=max_windows)
    large = plan_tiles(factor * width, factor * height, max_windows=max_windows)
    assert large.num_windows >= small.num_windows
    assert large.rows >= small.rows and large.cols >= small.cols


def test_tileplan_helpers() -> None:
    plan = plan_tiles(1344, 896)
    assert plan.resized_size == (1344, 896)
    assert plan.window_boxes() == [
        (0, 0, 448, 448),
        (448, 0, 896, 448),
        (896, 0, 1344, 448),
        (0, 448, 448, 896),
        (448, 448, 896, 896),
        (896, 448, 1344, 896),
    ]
    assert plan.cross_attention_keys(64) == 7 * 64
    with pytest.raises(ValueError):
        plan.cross_attention_keys(0)
    d = plan.to_dict()
    assert d == {"width": 1344, "height": 896, "rows": 2, "cols": 3, "window_size": 448}
    assert all(type(v) is int for v in d.values())
    with pytest.raises(ValueError, match="unknown keys"):
        TilePlan.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="missing keys"):
        TilePlan.from_dict({k: v for k, v in d.items() if k != "rows"})
    with pytest.raises(ValueError, match="either empty"):
        TilePlan(width=10, height=10, rows=0, cols=1, window_size=448)
    with pytest.raises(AttributeError):
        plan.rows = 5  # type: ignore[misc]
    assert hash(plan) == hash(TilePlan.from_dict(d))


def test_doctests() -> None:
    result = doctest.testmod(hires, raise_on_error=False)
    assert result.attempted >= 4
    assert result.failed == 0


# ---------------------------------------------------------------------------------------------------------------
# tile_image
# ---------------------------------------------------------------------------------------------------------------


def _reassemble(windows: list[Image.Image], plan: TilePlan) -> Image.Image:
    canvas = Image.new("RGB", plan.resized_size, (0, 0, 0))
    for window, box in zip(windows, plan.window_boxes(), strict=True):
        canvas.paste(window, box[:2])
    return canvas


def _coordinate_image(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 image whose pixels encode their own coordinates, so any misplaced pixel is detected."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, (x // 256) * 16 + (y // 256)], axis=-1).astype(np.uint8)


def test_tile_image_real_photo() -> None:
    photo = Image.fromarray(skimage.data.astronaut())  # 512x512 RGB
    plan = plan_tiles(*photo.size, window_size=160)
    assert (plan.rows, plan.cols) == (3, 3)
    crops = tile_image(photo, plan)
    assert len(crops) == plan.num_crops == 10
    assert all(c.size == (160, 160) and c.mode == "RGB" for c in crops)
    expected = photo.resize(plan.resized_size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(_reassemble(crops[1:], plan)), np.asarray(expected))
    # A square image needs no padding, so both thumbnail modes agree and the thumbnail is the squashed photo.
    squash = tile_image(photo, plan, thumbnail_mode="squash")[0]
    assert np.array_equal(np.asarray(crops[0]), np.asarray(squash))
    assert np.array_equal(np.asarray(squash), np.asarray(photo.resize((160, 160), Image.Resampling.BICUBIC)))

    default = tile_image(photo, plan_tiles(*photo.size))
    assert len(default) == 2 and all(c.size == (448, 448) for c in default)


def test_tile_image_windows_are_exact_slices() -> None:
    # An image already at the resized size is not resampled, so each window must be exactly its slice.
    ws = 64
    pixels = _coordinate_image(3 * ws, 2 * ws)
    image = Image.fromarray(pixels)
    plan = plan_tiles(*image.size, window_size=ws)
    assert (plan.rows, plan.cols) == (2, 3)
    windows = tile_image(image, plan)[1:]
    for i, window in enumerate(windows):
        r, c = divmod(i, 3)
        assert np.array_equal(np.asarray(window), pixels[r * ws : (r + 1) * ws, c * ws : (c + 1) * ws]), i
    assert np.array_equal(np.asarray(_reassemble(windows, plan)), pixels)


def test_tile_image_resampled_reassembles() -> None:
    image = Image.fromarray(_coordinate_image(700, 300))
    plan = plan_tiles(*image.size, window_size=128, max_windows=12)
    windows = tile_image(image, plan)[1:]
    expected = image.resize(plan.resized_size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(_reassemble(windows, plan)), np.asarray(expected))


def test_tile_image_thumbnail_pad_and_squash() -> None:
    colour = (200, 30, 60)
    wide = Image.new("RGB", (1000, 200), colour)  # on a 1000x1000 canvas it spans y 400..600 -> 179..269 at 448
    plan = plan_tiles(*wide.size)
    padded = np.asarray(tile_image(wide, plan, thumbnail_mode="pad")[0]).astype(int)
    assert padded.shape == (448, 448, 3)
    assert (padded[:170] == FILL).all() and (padded[279:] == FILL).all()
    assert (padded[190:259] == colour).all()

    custom = np.asarray(tile_image(wide, plan, fill=(0, 255, 0))[0])
    assert (custom[:170] == (0, 255, 0)).all()

    squashed = np.asarray(tile_image(wide, plan, thumbnail_mode="squash")[0]).astype(int)
    assert squashed.shape == (448, 448, 3)
    assert (squashed == colour).all()
    assert not (squashed == FILL).all(axis=-1).any()

    tall = Image.new("RGB", (150, 900), colour)
    padded_tall = np.asarray(tile_image(tall, plan_tiles(*tall.size))[0]).astype(int)
    assert (padded_tall[:, :150] == FILL).all() and (padded_tall[:, 300:] == FILL).all()
    assert (padded_tall[:, 200:250] == colour).all()


def test_tile_image_converts_to_rgb() -> None:
    gray = Image.new("L", (500, 900), 77)
    crops = tile_image(gray, plan_tiles(*gray.size), thumbnail_mode="squash")
    assert all(c.mode == "RGB" for c in crops)
    assert (np.asarray(crops[1]) == 77).all()


def test_tile_image_rejects_bad_input() -> None:
    image = Image.new("RGB", (500, 400))
    with pytest.raises(ValueError, match="500x400 does not match the plan's 400x500"):
        tile_image(image, plan_tiles(400, 500))
    with pytest.raises(ValueError, match="unknown thumbnail_mode 'crop'"):
        tile_image(image, plan_tiles(500, 400), thumbnail_mode="crop")


# ---------------------------------------------------------------------------------------------------------------
# Position embeddings
# ---------------------------------------------------------------------------------------------------------------


def test_sinusoid_table_values() -> None:
    table = sinusoid_table(50, 16)
    assert table.shape == (50, 16) and table.dtype == torch.float32
    for pos in (0, 1, 7, 49):
        for j in (0, 1, 2, 5, 14, 15):
            angle = pos / 10000 ** (2 * (j // 2) / 16)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[pos, j].item() == pytest.approx(want, abs=1e-6), (pos, j)
    assert torch.equal(table[0, 0::2], torch.zeros(8)) and torch.equal(table[0, 1::2], torch.ones(8))
    assert sinusoid_table(0, 4).shape == (0, 4)


@pytest.mark.parametrize("dim", [0, 3, -2])
def test_sinusoid_table_rejects_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match=f"got {dim}"):
        sinusoid_table(4, dim)


@pytest.mark.parametrize(("rows", "cols", "dim"), [(1, 1, 4), (2, 3, 8), (3, 3, 64), (5, 2, 1024), (1, 9, 12)])
def test_window_position_embedding(rows: int, cols: int, dim: int) -> None:
    emb = window_position_embedding(rows, cols, dim)
    assert emb.shape == (1 + rows * cols, dim) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.zeros(dim))
    windows = emb[1:].reshape(rows, cols, dim)
    half = dim // 2

    # Every window is distinct from every other and from the thumbnail; each (sin, cos) pair has unit norm.
    flat = emb[1:]
    assert torch.cdist(flat, flat).add(torch.eye(rows * cols) * 1e9).min() > 1e-3
    assert torch.allclose(flat.norm(dim=1), torch.full((rows * cols,), math.sqrt(half)), atol=1e-4)

    # First half depends only on the column, second half only on the row.
    for c in range(cols):
        assert torch.equal(windows[:, c, :half], windows[0:1, c, :half].expand(rows, half))
    for r in range(rows):
        assert torch.equal(windows[r, :, half:], windows[r : r + 1, 0, half:].expand(cols, half))

    # And they are the sinusoid rows at those indices.
    table = sinusoid_table(max(rows, cols), half)
    r, c = rows - 1, cols - 1
    assert torch.equal(windows[r, c], torch.cat([table[c], table[r]]))
    # Row-major order: window index 1 is (row 0, col 1) when there are two columns or more.
    if cols > 1:
        assert torch.equal(emb[2], torch.cat([table[1], table[0]]))


def test_window_position_embedding_matches_math() -> None:
    emb = window_position_embedding(2, 3, 8)  # half = 4: pairs with frequencies 1 and 1/100
    r, c = 1, 2
    got = emb[1 + r * 3 + c].tolist()
    want = [math.sin(c), math.cos(c), math.sin(c / 100), math.cos(c / 100)]
    want += [math.sin(r), math.cos(r), math.sin(r / 100), math.cos(r / 100)]
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("dim", [0, 2, 6, 10, 7])
def test_window_position_embedding_rejects_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match=f"multiple of 4.*got {dim}"):
        window_position_embedding(2, 2, dim)


def test_window_position_embedding_rejects_half_empty_grid() -> None:
    with pytest.raises(ValueError, match="either empty"):
        window_position_embedding(0, 2, 8)


@pytest.mark.parametrize(("width", "height"), [(448, 448), (1344, 896), (1, 20000), (5000, 7)])
def test_thumbnail_only_plan(width: int, height: int) -> None:
    """max_windows=0 -> the 0x0 plan: one crop (the thumbnail), a zero position row, tile_image gives only it."""
    plan = plan_tiles(width, height, max_windows=0)
    assert (plan.rows, plan.cols, plan.num_windows, plan.num_crops, plan.thumbnail_only) == (0, 0, 0, 1, True)
    assert TilePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert torch.equal(window_position_embedding(0, 0, 8), torch.zeros(1, 8))
    if width * height <= 2_000_000:
        crops = tile_image(Image.new("RGB", (width, height), (10, 20, 30)), plan)
        assert len(crops) == 1 and crops[0].size == (448, 448)
