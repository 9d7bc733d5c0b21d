"""Tests for ``infimm_hd.image_processing``: decoding every kind of input, rejecting bad ones, and the fast path.

Each case is either processed correctly, checked against the tiling plan of its expected (oriented) size and
against pixel expectations computed independently (numpy on the source pixels, or PIL's own conversion), or
rejected with a `ValueError` whose message names the problem. The fast path is compared with
`reference_preprocess` (full decode + `hires.tile_image` + per-crop `normalize`) on real photos, within the
tolerances stated in the module docstring (in 8-bit levels):

* windows without JPEG DCT scaling: mean 0.2, max 8 (torch's and PIL's bicubic quantise their weights
  differently; typically mean < 0.01 and max 2, up to mean 0.16 and max 7 for scale factors near 1);
* windows with DCT scaling: mean 0.4, max 12 (JPEG's scaling filter does part of the reduction);
* thumbnails: mean 0.3, max 12 (made from the resized grid image rather than from the full image).
"""

from __future__ import annotations

import io
import json
import pickle
import resource
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin
from transformers import BatchFeature

from infimm_hd.hires import plan_tiles
from infimm_hd.image_processing import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    InfiMMHDImageProcessor,
    load_image,
    normalize,
    open_image_header,
    process_images,
    scaled_decode,
)
from infimm_hd.image_processing.layout import _canvas
from infimm_hd.image_processing.orientation import _orient
from infimm_hd.image_processing.resize import _resize
from infimm_hd.image_processing.tiling import _pad_resolution

# torchvision 0.29 deprecates its image decoders (the processor uses them when present and falls back to PIL).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

WS = 448
MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proc() -> InfiMMHDImageProcessor:
    return InfiMMHDImageProcessor()


def levels(pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised crops (N, 3, S, S) back to 8-bit levels (float)."""
    return (pixel_values * STD + MEAN) * 255.0


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.fromarray(getattr(skimage.data, name)())
    return image if size is None else image.resize(size, Image.Resampling.BICUBIC)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB but whose data is a few bytes: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def check_plan(result, width: int, height: int, max_windows: int = 9) -> None:
    """The output has the grid and crop count of the plan for a width x height image."""
    plan = plan_tiles(width, height, window_size=WS, max_windows=max_windows)
    assert result.image_grids.tolist() == [[plan.rows, plan.cols]]
    assert tuple(result.pixel_values.shape) == (plan.num_crops, 3, WS, WS)
    assert result.pixel_values.dtype == torch.float32 and result.image_grids.dtype == torch.long


def assert_close_to_reference(fast, ref, dct_scaled: bool = False) -> None:
    """Fast path vs reference within the documented tolerances (8-bit levels)."""
    assert torch.equal(fast.image_grids, ref.image_grids)
    assert [p.to_dict() for p in fast.plans] == [p.to_dict() for p in ref.plans]
    diff = (levels(fast.pixel_values) - levels(ref.pixel_values)).abs()
    starts = np.cumsum([0] + [p.num_crops for p in fast.plans])[:-1]
    is_thumb = torch.zeros(diff.shape[0], dtype=torch.bool)
    is_thumb[torch.as_tensor(starts)] = True
    thumbs, windows = diff[is_thumb], diff[~is_thumb]
    assert thumbs.mean() <= 0.3 and thumbs.max() <= 12, (thumbs.mean(), thumbs.max())
    if not windows.numel():
        return  # thumbnail-only plans
    if dct_scaled:
        assert windows.mean() <= 0.4 and windows.max() <= 12, (windows.mean(), windows.max())
    else:
        assert windows.mean() <= 0.2 and windows.max() <= 8.0 + 1e-3, (windows.mean(), windows.max())


# ---------------------------------------------------------------------------------------------------------------
# Real photos
# ---------------------------------------------------------------------------------------------------------------


def test_rgb_photo_array(proc):
    array = skimage.data.astronaut()  # (512, 512, 3)
    out = proc.process(array)
    check_plan(out, 512, 512)
    crops = levels(out.pixel_values)
    # Square image: thumbnail and the single window are both the whole photo resized; mean colour is preserved.
    for crop in crops:
        np.testing.assert_allclose(crop.mean(dim=(1, 2)).numpy(), array.mean(axis=(0, 1)), atol=1.0)


def test_grayscale_photo(proc):
    array = skimage.data.camera()  # (512, 512) uint8
    out = proc.process(array)
    check_plan(out, 512, 512)
    crops = levels(out.pixel_values)
    assert torch.allclose(crops[:, 0], crops[:, 1], atol=1e-3) and torch.allclose(crops[:, 1], crops[:, 2], atol=1e-3)
    assert abs(crops[1].mean().item() - array.mean()) < 1.0
    # The same photo as HWC (1 channel), as a PIL "L" image and as a CHW tensor gives the same crops.
    for other in (array[:, :, None], Image.fromarray(array), torch.from_numpy(array)[None]):
        assert torch.equal(proc.process(other).pixel_values, out.pixel_values)


def test_rgba_photo_is_composited_onto_background():
    rgb = skimage.data.astronaut()
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    alpha[:, 256:] = 255  # left half transparent, right half opaque
    alpha[:, 240:256] = 128  # a semi-transparent band
    rgba = np.dstack([rgb, alpha])
    background = (10, 200, 30)
    proc = InfiMMHDImageProcessor(background=background)
    window = levels(proc.process(Image.fromarray(rgba, mode="RGBA")).pixel_values)[1]  # (3, 448, 448), 512 -> 448
    left = window[:, :, :200].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(left, background, atol=0.5)  # transparent: exactly the background
    right = window[:, :, 240:].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(right, rgb[:, 275:].mean(axis=(0, 1)), atol=2.0)
    # Semi-transparent pixels are mixed, not dropped: check on the full-resolution decode.
    full = np.asarray(proc.load_image(rgba))
    expected = np.rint((rgb[:, 248].astype(float) * 128 + np.array(background) * 127) / 255)
    np.testing.assert_array_equal(full[:, 248], expected)
    # numpy RGBA and PIL RGBA inputs agree.
    assert torch.equal(proc.process(rgba).pixel_values, proc.process(Image.fromarray(rgba, mode="RGBA")).pixel_values)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("astronaut", (3000, 2000)),  # large: shrunk to fit 9 windows
        ("coffee", (100, 80)),  # small: upscaled to one window
        ("chelsea", (4000, 300)),  # very wide: 1 x 9
        ("rocket", (1920, 1080)),
        ("coffee", (300, 1200)),  # tall
    ],
)
def test_photo_fast_path_matches_reference(proc, name, size):
    data = encode(photo(name, size), "JPEG", quality=92)
    fast = proc.process(data)
    check_plan(fast, *size)
    assert_close_to_reference(fast, proc.reference_preprocess(data))


def test_random_sizes_match_reference(proc):
    rng = np.random.default_rng(7)
    source = photo("astronaut")
    for _ in range(6):
        size = (int(rng.integers(40, 2200)), int(rng.integers(40, 2200)))
        array = np.asarray(source.resize(size, Image.Resampling.BICUBIC))
        fast = proc.process(array)
        check_plan(fast, *size)
        assert_close_to_reference(fast, proc.reference_preprocess(array))


def test_pad_offset_lands_on_a_whole_canvas_row():
    for width, height, available in [(1920, 1080, 896), (3000, 2000, 896), (4032, 3024, 1344), (1024, 768, 896)]:
        offset = (width - height) // 2
        inner, per_pixel = _pad_resolution(offset, height, width, WS, available)
        length = height * WS / width
        assert 2 * length * 0.8 <= inner <= 4 * length and inner <= max(available, 2 * length)
        assert offset * per_pixel == pytest.approx(round(offset * per_pixel), abs=1e-9)
    inner, _ = _pad_resolution(499, 1757, 4001, WS, 1344)  # no exact choice: the best of the range
    assert abs(499 * inner / 1757 - round(499 * inner / 1757)) < 0.01


def test_large_jpeg_uses_dct_scaling_and_stays_close(proc, monkeypatch):
    calls = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    # 4001 x 3003 is not a multiple of the DCT scale: the last decoded row and column cover a fraction of a pixel.
    data = encode(photo("astronaut", (4001, 3003)), "JPEG", quality=92)
    fast = proc.process(data)
    check_plan(fast, 4001, 3003)
    plan = fast.plans[0]
    assert calls and calls[0][0] == plan.resized_size  # drafted to the grid size ...
    assert calls[0][1][0] >= plan.resized_size[0] and calls[0][1][1] >= plan.resized_size[1]  # ... never below it
    assert calls[0][1] == (2001, 1502)  # and actually reduced, by 2
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    assert_close_to_reference(fast, proc.reference_preprocess(data), dct_scaled=True)


@pytest.mark.parametrize(("mode", "size"), [("L", (1200, 900)), ("L", (4000, 3000)), ("CMYK", (4000, 3000))])
def test_grey_and_cmyk_jpegs_match_reference(proc, mode, size):
    data = encode(photo("astronaut", size).convert(mode), "JPEG", quality=90)
    fast = proc.process(data)
    check_plan(fast, *size)
    assert_close_to_reference(fast, proc.reference_preprocess(data), dct_scaled=size[0] >= 2 * 1344)


def test_pil_fallback_decoder_gives_the_same_pixels(proc, monkeypatch):
    data = encode(photo("rocket", (1920, 1080)), "JPEG", quality=90)
    fast = proc.process(data)
    monkeypatch.setattr(scaled_decode, "_decode_jpeg_torchvision", lambda data, grey: None)  # as without torchvision
    assert torch.equal(proc.process(data).pixel_values, fast.pixel_values)


def test_batch_equals_images_processed_one_by_one(proc):
    # 3000x2000 (9 crops) + 4000x3000 (10 crops): 45 MB of output, in one recycled buffer.
    images = [encode(photo("astronaut", (3000, 2000)), "JPEG"), encode(photo("coffee", (4000, 3000)), "JPEG")]
    batch = proc.process(images)
    single = [proc.process(image) for image in images]
    assert torch.equal(batch.pixel_values, torch.cat([s.pixel_values for s in single]))
    assert torch.equal(batch.image_grids, torch.cat([s.image_grids for s in single]))
    restored = pickle.loads(pickle.dumps(batch.pixel_values))
    assert torch.equal(restored, batch.pixel_values)


def test_outputs_kept_by_the_caller_survive_later_calls(proc):
    # pixel_values live in recycled buffers (`recycled_buffers`): one the caller still holds, even only through a
    # view or a numpy array, must never be written by a later call; one it dropped is reused.
    photos = [encode(photo(name, (1024, 768)), "JPEG") for name in ("astronaut", "coffee", "chelsea")]
    first = proc(photos[0])["pixel_values"]
    expected = first.clone()
    as_numpy = first.numpy()
    view = first[1:3]
    first_ptr = first.data_ptr()
    del first
    second = proc(photos[1])["pixel_values"]
    assert second.data_ptr() != first_ptr
    assert np.array_equal(as_numpy, expected.numpy()) and torch.equal(view, expected[1:3])
    del as_numpy, view
    third = proc(photos[2])["pixel_values"]  # the first output is unreachable now: its buffer comes back
    assert third.data_ptr() == first_ptr
    assert torch.equal(third, proc(photos[2])["pixel_values"])  # every value rewritten (that call: fresh memory)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic edge cases
# ---------------------------------------------------------------------------------------------------------------


def test_one_pixel_image(proc):
    out = proc.process(np.array([[[200, 100, 50]]], dtype=np.uint8))
    check_plan(out, 1, 1)
    np.testing.assert_allclose(levels(out.pixel_values).mean(dim=(2, 3)).numpy(), [[200, 100, 50]] * 2, atol=0.01)


def test_one_by_twenty_thousand(proc):
    column = np.rint(np.linspace(0, 255, 20000)).astype(np.uint8)[:, None]  # (20000, 1) vertical gradient
    out = proc.process(np.repeat(column[:, :, None], 3, axis=2))
    check_plan(out, 1, 20000)
    assert out.image_grids.tolist() == [[9, 1]]
    windows = levels(out.pixel_values)[1:]
    means = windows.mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(means, (np.arange(9) + 0.5) / 9 * 255, atol=1.0)  # row r shows its ninth
    thumbnail = levels(out.pixel_values)[0]
    assert torch.allclose(thumbnail[:, :, :200].mean(dim=(1, 2)), torch.tensor(proc.pad_fill, dtype=torch.float32))


def test_sixteen_bit_png_gradient_scales_to_eight_bits(proc):
    v16 = np.rint(np.linspace(0, 65535, 1000)).astype(np.uint16)
    image = Image.fromarray(np.tile(v16, (8, 1)))
    assert image.mode == "I;16"
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = np.asarray(proc.load_image(data))
    expected = np.floor(v16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[0, :, channel], expected)  # the 8-bit gradient, not clipped to 255
    assert rgb.max() == 255 and rgb.min() == 0
    dark = Image.fromarray(np.full((4, 4), 4000, dtype=np.uint16))  # a dark 16-bit image stays dark
    assert np.asarray(proc.load_image(encode(dark, "PNG")))[0, 0, 0] == round(4000 * 255 / 65535)
    out = proc.process(data)
    check_plan(out, 1000, 8)
    windows = levels(out.pixel_values)[1:]  # 1 x 2 windows: the left and right halves of the gradient
    np.testing.assert_allclose(windows.mean(dim=(1, 2, 3)).numpy(), [63.75, 191.25], atol=1.0)


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        (np.array([0, 100, 255]), 255),  # 8-bit data in a 32-bit image
        (np.array([0, 30000, 65535]), 65535),  # 16-bit data (e.g. an old 16-bit PNG decoded as "I")
        (np.array([0, 2**30, 2**31 - 1]), 2**31 - 1),  # full 32-bit range
    ],
)
def test_thirty_two_bit_integer_images_are_scaled_not_clipped(proc, values, scale):
    image = Image.fromarray(np.tile(values.astype(np.int32), (4, 1)))
    assert image.mode == "I"
    rgb = np.asarray(proc.load_image(image))
    np.testing.assert_array_equal(rgb[0, :, 0], np.rint(values * 255 / scale).astype(np.uint8))


def test_cmyk_jpeg_uses_pil_conversion(proc):
    cmyk = Image.new("CMYK", (640, 480), (200, 30, 0, 20))
    cmyk.paste((0, 180, 200, 0), (320, 0, 640, 480))
    data = encode(cmyk, "JPEG", quality=95)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "CMYK"
    expected = np.asarray(decoded.convert("RGB")).astype(float)
    out = proc.process(data)
    check_plan(out, 640, 480)
    window = levels(out.pixel_values)[1]  # 640x480 -> 448x448
    np.testing.assert_allclose(window[:, :, :200].mean(dim=(1, 2)).numpy(), expected[:, :280].mean((0, 1)), atol=1.5)
    np.testing.assert_allclose(window[:, :, 248:].mean(dim=(1, 2)).numpy(), expected[:, 360:].mean((0, 1)), atol=1.5)


def test_palette_png_transparency_becomes_background(proc):
    image = Image.new("P", (64, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black, 1 red
    image.paste(1, (32, 0, 64, 32))
    data = encode(image, "PNG", transparency=0)  # index 0 is transparent
    assert "transparency" in Image.open(io.BytesIO(data)).info
    rgb = np.asarray(proc.load_image(data))
    assert (rgb[:, :32] == 255).all()  # transparent black -> white background, not black
    assert (rgb[:, 32:] == [255, 0, 0]).all()
    out = levels(InfiMMHDImageProcessor(background=(0, 0, 255)).process(data).pixel_values)[1]
    np.testing.assert_allclose(out[:, :, :200].mean(dim=(1, 2)).numpy(), [0, 0, 255], atol=0.5)


@pytest.mark.parametrize(
    "mode", ["L", "1", "LA", "La", "PA", "P", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB", "I", "F"]
)
def test_every_pil_mode_becomes_rgb(proc, mode):
    rgb = Image.new("RGB", (96, 64), (200, 100, 50))
    rgb.paste((20, 180, 240), (48, 0, 96, 64))
    image = {"La": lambda: rgb.convert("LA").convert("La"), "RGBa": lambda: rgb.convert("RGBA").convert("RGBa")}.get(
        mode, lambda: rgb.convert(mode)
    )()
    assert image.mode == mode
    if mode in ("I", "F"):  # PIL converts RGB to 8-bit grey values held in int32 / float32
        expected = np.asarray(rgb.convert("L").convert("RGB"))
    elif mode in ("La", "RGBa", "LA", "RGBA", "PA"):  # fully opaque: the colours themselves
        expected = np.asarray(image.convert("RGBA" if mode != "La" else "LA").convert("RGB"))
    else:
        expected = np.asarray(image.convert("RGB"))
    got = np.asarray(proc.load_image(image))
    np.testing.assert_array_equal(got, expected)
    out = proc.process(image)
    check_plan(out, 96, 64)
    np.testing.assert_allclose(
        levels(out.pixel_values)[1].mean(dim=(1, 2)).numpy(), expected.reshape(-1, 3).mean(0), atol=1.0
    )


def test_exif_rotated_jpeg(proc):
    stored = Image.new("RGB", (1600, 800), (220, 30, 30))  # stored landscape: left red, right blue
    stored.paste((30, 30, 220), (800, 0, 1600, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert proc.plan_image(data).to_dict() == plan_tiles(800, 1600, window_size=WS).to_dict()  # header only
    out = proc.process(data)
    check_plan(out, 800, 1600)  # displayed portrait 800 x 1600: 4 rows x 2 cols
    windows = levels(out.pixel_values)[1:].view(4, 2, 3, WS, WS)
    top, bottom = windows[:2].mean(dim=(0, 1, 3, 4)), windows[2:].mean(dim=(0, 1, 3, 4))
    np.testing.assert_allclose(top.numpy(), [220, 30, 30], atol=3)  # stored left (red) is displayed on top
    np.testing.assert_allclose(bottom.numpy(), [30, 30, 220], atol=3)
    assert_close_to_reference(out, proc.reference_preprocess(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_exif_transpose(proc, orientation):
    image = photo("chelsea", (451, 300))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(image, "PNG", exif=exif.tobytes())
    fast, ref = proc.process(data), proc.reference_preprocess(data)
    size = (300, 451) if orientation >= 5 else (451, 300)
    check_plan(fast, *size)
    assert_close_to_reference(fast, ref)
    # The tensor orientation helper agrees with PIL's transposes pixel for pixel.
    array = np.asarray(image)
    oriented = _orient(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(oriented, expected)


def test_jpeg_draft_respects_orientation(proc):
    stored = photo("astronaut", (4000, 2000))
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(stored, "JPEG", quality=92, exif=exif.tobytes())
    fast = proc.process(data)
    check_plan(fast, 2000, 4000)
    assert_close_to_reference(fast, proc.reference_preprocess(data), dct_scaled=True)


def test_truncated_jpeg_is_rejected(proc):
    data = encode(photo("coffee"), "JPEG", quality=90)
    flag = ImageFile.LOAD_TRUNCATED_IMAGES
    for cut in (len(data) // 2, len(data) - 2):
        with pytest.raises(ValueError, match=r"image 1: .*truncated"):
            proc.process([data, data[:cut]])
        with pytest.raises(ValueError, match="truncated"):
            proc.reference_preprocess([data[:cut]])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is flag is False


def test_random_and_empty_bytes_are_rejected(proc):
    junk = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(ValueError, match="image 0: cannot identify an image format in 5000 bytes"):
        proc.process(junk)
    with pytest.raises(ValueError, match="empty"):
        proc.process(b"")


def test_corrupted_files_raise_only_value_error(proc):
    """Byte flips and cuts of a JPEG and a PNG: each variant is either decoded or a ValueError, never a crash."""
    rng = np.random.default_rng(0)
    small = photo("astronaut", (64, 48))
    for data in (encode(small, "JPEG", quality=80), encode(small, "PNG"), encode(small.convert("P"), "GIF")):
        for trial in range(40):
            corrupt = bytearray(data)
            if trial % 3 == 0:
                corrupt = corrupt[: int(rng.integers(1, len(data)))]
            for _ in range(int(rng.integers(1, 6))):
                corrupt[int(rng.integers(0, len(corrupt)))] = int(rng.integers(0, 256))
            try:
                out = proc.process(bytes(corrupt))
            except ValueError:
                continue
            assert torch.isfinite(out.pixel_values).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 10, 3), dtype=np.uint8),
        np.zeros((10, 0), dtype=np.uint8),
        torch.zeros(3, 0, 5),
        Image.new("RGB", (0, 5)),
    ],
    ids=["numpy-0xN", "numpy-Nx0", "torch-empty", "pil-0x5"],
)
def test_zero_size_is_rejected(proc, bad):
    with pytest.raises(ValueError, match="zero size"):
        proc.process(bad)


def test_zero_width_png_header_is_rejected(proc):
    with pytest.raises(ValueError, match="image 0: "):
        proc.process(png_header_only(0, 10))


def test_decompression_bomb_is_refused_before_decoding(proc):
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 200
    filters = list(warnings.filters)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="image 0: .*pixel budget"):
        proc.process(bomb)
    with pytest.raises(ImageTooLargeError, match="pixel budget"):
        InfiMMHDImageProcessor(max_pixels=None).process(bomb)  # PIL's own limit still applies
    with pytest.raises(ImageTooLargeError, match="PIL's Image.MAX_IMAGE_PIXELS"):
        open_image_header(bomb, max_pixels=None)  # the header check the server uses
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024  # not 2.7 GB of pixels
    assert warnings.filters == filters  # no global warning filter left behind


def test_header_check_tells_too_large_from_not_an_image():
    data = encode(photo("coffee", (640, 480)), "JPEG")
    assert open_image_header(data, max_pixels=640 * 480).size == (640, 480)  # exactly at the budget: accepted
    with pytest.raises(ImageTooLargeError, match=r"640x480 = 307,200 pixels, over the pixel budget"):
        open_image_header(data, max_pixels=640 * 480 - 1)
    for bad, message in ((b"", "empty"), (b"not an image at all", "cannot identify"), (data[:30], "header")):
        with pytest.raises(ValueError, match=message) as info:
            open_image_header(bad)
        assert not isinstance(info.value, ImageTooLargeError)


def test_pixel_budget(proc):
    # 10000 x 8000 = 80 MP: under PIL's limits, over our default 64 MP budget; rejected from the header alone.
    with pytest.raises(ValueError, match=r"10000x8000 = 80,000,000 pixels, over the pixel budget \(max_pixels=64"):
        proc.process(png_header_only(10000, 8000))
    # 10000 x 10000 = 100 MP with our budget off: PIL's DecompressionBombWarning becomes the same ValueError.
    with pytest.raises(ValueError, match="pixel budget"):
        InfiMMHDImageProcessor(max_pixels=None).process(png_header_only(10000, 10000))
    small = InfiMMHDImageProcessor(max_pixels=1000)
    with pytest.raises(ValueError, match="pixel budget"):
        small.process(np.zeros((40, 30), dtype=np.uint8))  # arrays are checked too
    small.process(np.zeros((10, 100), dtype=np.uint8))  # exactly on the budget is fine
    assert DEFAULT_MAX_PIXELS == proc.max_pixels == 64_000_000


def test_error_names_the_image_index(proc):
    good = skimage.data.astronaut()
    with pytest.raises(ValueError, match=r"^image 2: float image values span \[0, 255\]"):
        proc.process([good, good, good.astype(np.float32)])
    with pytest.raises(ValueError, match=r"image 0: image file not found"):
        proc.process("/nonexistent/picture.jpg")
    with pytest.raises(ValueError, match="unsupported image input of type dict"):
        proc.process({"not": "an image"})
    with pytest.raises(ValueError, match="negative"):
        proc.process(np.full((4, 4), -1, dtype=np.int32))
    with pytest.raises(ValueError, match="NaN"):
        proc.process(np.full((4, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="no channel axis"):
        proc.process(np.zeros((10, 10, 7), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Array, tensor, path and file inputs
# ---------------------------------------------------------------------------------------------------------------


def test_array_and_tensor_layouts_and_dtypes_agree(proc):
    rgb = photo("chelsea", (120, 80))
    u8 = np.asarray(rgb)  # (80, 120, 3)
    expected = proc.process(u8).pixel_values
    variants = [
        rgb,
        np.ascontiguousarray(u8.transpose(2, 0, 1)),  # CHW numpy
        np.dstack([u8, np.full(u8.shape[:2], 255, np.uint8)]),  # opaque RGBA
        u8.astype(np.uint16) * 257,  # 16-bit
        u8.astype(np.float32) / 255,  # float in [0, 1]
        u8.astype(np.float64) / 255,
        torch.from_numpy(u8).permute(2, 0, 1).contiguous(),  # torch CHW uint8
        torch.from_numpy(u8),  # torch HWC uint8
        torch.from_numpy(u8).permute(2, 0, 1).float() / 255,  # torch CHW float
        torch.from_numpy(u8).permute(2, 0, 1).half() / 255,
        encode(rgb, "PNG"),
        bytearray(encode(rgb, "PNG")),
        io.BytesIO(encode(rgb, "PNG")),
    ]
    for i, variant in enumerate(variants):
        got = proc.process(variant).pixel_values
        assert torch.allclose(got, expected, atol=1e-6) or (i in (9,) and (got - expected).abs().max() < 0.05), i
    binary = np.zeros((8, 8), dtype=bool)
    binary[:, 4:] = True
    assert np.asarray(proc.load_image(binary))[0].tolist() == [[0] * 3] * 4 + [[255] * 3] * 4


def test_batch_array_and_nested_lists(proc):
    batch = np.stack([skimage.data.astronaut(), skimage.data.astronaut()[::-1]])  # (2, 512, 512, 3)
    out = proc(batch)
    assert isinstance(out, BatchFeature) and set(out.keys()) == {"pixel_values", "image_grids"}
    assert out["image_grids"].tolist() == [[1, 1], [1, 1]] and out["pixel_values"].shape == (4, 3, WS, WS)
    nested = proc([[batch[0]], [], [batch[1]]])
    assert torch.equal(nested["pixel_values"], out["pixel_values"])
    empty = proc([])
    assert empty["pixel_values"].shape == (0, 3, WS, WS) and empty["image_grids"].shape == (0, 2)
    as_np = proc.preprocess(batch, return_tensors="np")
    assert isinstance(as_np["pixel_values"], np.ndarray) and as_np["pixel_values"].dtype == np.float32


def test_paths_and_file_objects(proc, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(photo("rocket"), "JPEG"))
    by_path = proc.process(path).pixel_values
    assert torch.equal(proc.process(str(path)).pixel_values, by_path)
    with open(path, "rb") as f:
        assert torch.equal(proc.process(f).pixel_values, by_path)
    check_plan(proc.process(path), 640, 427)


# ---------------------------------------------------------------------------------------------------------------
# Settings, saving, call-time overrides and the functional API
# ---------------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    custom = InfiMMHDImageProcessor(
        window_size=224, max_windows=4, thumbnail_mode="squash", max_pixels=None, background=(0, 0, 0)
    )
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "InfiMMHDImageProcessor"
    assert saved["window_size"] == 224 and saved["max_pixels"] is None and saved["thumbnail_mode"] == "squash"
    loaded = InfiMMHDImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == custom.to_dict()
    assert loaded.model_input_names == ["pixel_values", "image_grids"]
    image = encode(photo("coffee", (900, 500)), "JPEG")
    a, b = custom(image), loaded(image)
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["image_grids"], b["image_grids"])
    assert a["pixel_values"].shape[-1] == 224
    overridden = InfiMMHDImageProcessor.from_pretrained(tmp_path, max_windows=2)
    assert overridden.max_windows == 2 and overridden.window_size == 224

    default = InfiMMHDImageProcessor()
    default.save_pretrained(tmp_path / "default")
    assert InfiMMHDImageProcessor.from_pretrained(tmp_path / "default").to_dict() == default.to_dict()


def test_call_time_max_windows_overrides_the_training_budget(proc):
    image = encode(photo("astronaut", (3000, 2000)), "JPEG")
    assert proc(image)["image_grids"].tolist() == [[2, 4]]
    big = proc(image, max_windows=16)
    plan = plan_tiles(3000, 2000, window_size=WS, max_windows=16)
    assert big["image_grids"].tolist() == [[plan.rows, plan.cols]] and plan.num_windows > 9
    assert proc.max_windows == 9  # unchanged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_size": 0}, "window_size"),
        ({"max_windows": 2.5}, "max_windows"),
        ({"thumbnail_mode": "crop"}, "thumbnail_mode"),
        ({"image_std": (1, 0, 1)}, "image_std"),
        ({"background": (0, 0, 300)}, "background"),
        ({"max_pixels": 0}, "max_pixels"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfiMMHDImageProcessor(**kwargs)


def test_squash_thumbnail_matches_reference():
    proc = InfiMMHDImageProcessor(thumbnail_mode="squash")
    data = encode(photo("rocket", (1500, 700)), "JPEG")
    assert_close_to_reference(proc.process(data), proc.reference_preprocess(data))


def test_functional_api_is_kept():
    images = [skimage.data.astronaut(), encode(photo("coffee", (1000, 700)), "JPEG")]
    out = process_images(images, window_size=WS, max_windows=9, thumbnail_mode="pad")
    expected = InfiMMHDImageProcessor().process(images)
    assert torch.equal(out.pixel_values, expected.pixel_values) and torch.equal(out.image_grids, expected.image_grids)
    assert [p.to_dict() for p in out.plans] == [p.to_dict() for p in expected.plans]
    rgb = load_image(encode(Image.new("LA", (5, 4), (100, 0)), "PNG"))
    assert rgb.mode == "RGB" and rgb.size == (5, 4) and rgb.getpixel((0, 0)) == (255, 255, 255)
    crop = Image.new("RGB", (WS, WS), (255, 0, 0))
    np.testing.assert_allclose(
        normalize(crop)[:, 0, 0].numpy(), ((np.array([1.0, 0, 0]) - CLIP_MEAN) / CLIP_STD), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("name", "size"), [("astronaut", (3000, 2000)), ("coffee", (300, 1200)), ("rocket", (448, 448))]
)
def test_thumbnail_only_matches_reference_and_the_windowed_thumbnail(proc, name, size):
    """max_windows=0: one crop per image, grid (0, 0), the same thumbnail the windowed plan makes."""
    data = encode(photo(name, size), "JPEG", quality=92)
    fast = proc.process(data, max_windows=0)
    assert fast.image_grids.tolist() == [[0, 0]] and fast.pixel_values.shape[0] == 1
    assert_close_to_reference(fast, proc.reference_preprocess(data, max_windows=0))
    windowed = proc.process(data)
    assert torch.equal(fast.pixel_values[0], windowed.pixel_values[0]), "thumbnail-only must not change the thumbnail"


def test_negative_window_budget_is_rejected(proc):
    with pytest.raises(ValueError, match="max_windows"):
        proc.process(np.zeros((8, 8, 3), np.uint8), max_windows=-1)


# ---------------------------------------------------------------------------------------------------------------
# Fast-path building blocks against straightforward implementations
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "size"),
    [((2000, 3000), (896, 1792)), ((1080, 1920), (896, 1792)), ((896, 1792), (720, 448)), ((480, 640), (448, 448))],
)
def test_resize_order_changes_only_the_intermediate_rounding(hw, size):
    """Vertical pass first (when it reduces more) vs torch's single call (horizontal first): <= 2 levels, unbiased.

    The intermediate is rounded to 8 bits after the other pass; bicubic's negative lobes can amplify that half
    level to 2 at a sharp edge, and a few % of pixels differ by 1.
    """
    x = torch.from_numpy(np.asarray(photo("astronaut", hw[::-1]))).unsqueeze(0).permute(0, 3, 1, 2)  # (1,3,h,w) CL
    one_call = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    got = _resize(x, size)
    diff = (got.int() - one_call.int()).abs()
    vertical_first = size[0] / hw[0] < size[1] / hw[1]
    assert diff.max() <= (2 if vertical_first else 0), f"resize order changed pixels by {diff.max()} levels"
    assert diff.float().mean() < 0.1 and abs((got.float() - one_call.float()).mean()) < 0.01, "rounding is biased"


def test_canvas_is_the_fill_colour_in_channels_last():
    canvas = _canvas(7, 5, (122, 116, 104))
    expected = torch.tensor([122, 116, 104], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 7, 5)
    assert torch.equal(canvas, expected), "canvas pixels are not the fill colour"
    assert canvas.is_contiguous(memory_format=torch.channels_last), "resize's fast uint8 path wants channels-last"


def test_fused_normalisation_equals_the_textbook_formula(proc):
    """pixel_values are ((x / 255) - mean) / std of the 8-bit crops, computed here one crop at a time."""
    data = encode(photo("rocket", (1920, 1080)), "JPEG", quality=90)
    opened = proc._open(data)
    plan = plan_tiles(opened.width, opened.height, window_size=WS, max_windows=9)
    grid, thumbnail = proc._tile(proc._decode(opened, plan), opened, plan)
    crops = [thumbnail[0]] + [
        grid[0, :, r * WS : (r + 1) * WS, c * WS : (c + 1) * WS] for r in range(plan.rows) for c in range(plan.cols)
    ]
    expected = torch.stack([(crop.float() / 255.0 - MEAN[0]) / STD[0] for crop in crops])  # (N, 3, S, S)
    got = proc.process(data).pixel_values
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0, msg="fused normalisation drifted")
    assert got.is_contiguous(memory_format=torch.channels_last), "pixel_values should be channels-last memory"
