"""Pictures: `show-tiles` draws the grid where the windows fall; the attention map is the model's own softmax, placed
on the right pixels (checked against hand-computed rectangles and an independent softmax(q k^T) in this file)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from infimm_hd.hires import plan_tiles
from infimm_hd.inference.attention_map import (
    answer_attention_map,
    answer_cross_attention,
    keys_to_pixels,
    save_attention_overlay,
)
from infimm_hd.inference.tile_picture import GRID_COLOR, draw_tiles
from infimm_hd.inference.tile_picture import main as show_tiles_main

GREY = (128, 128, 128)
G, L = 8, 65  # tiny preset: 448 / 56 = 8 patches per side, CLS + 64 patch tokens per crop


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Blocky random colours: crops whose tokens differ, so attention has something to prefer."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 25, width // 25, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST)


def grid_columns(picture: Image.Image, y: int, width: int) -> list[int]:
    """x positions (within the image part, border excluded) where row `y` has the grid colour."""
    row = np.asarray(picture)[y, :width]  # (W, 3)
    hits = np.flatnonzero((row == GRID_COLOR).all(axis=1))
    return [int(x) for x in hits if 3 <= x < width - 3]


# -- show-tiles ---------------------------------------------------------------------------------------------------


def test_show_tiles_draws_2x3_grid_at_window_boundaries():
    picture = draw_tiles(Image.new("RGB", (1344, 896), GREY))
    pixels = np.asarray(picture)
    # 1344x896 is exactly 3 x 2 windows of 448: 3-px lines centred on x = 448, 896 and y = 448.
    assert grid_columns(picture, y=300, width=1344) == [447, 448, 449, 895, 896, 897]
    assert grid_columns(picture.transpose(Image.Transpose.TRANSPOSE), y=700, width=896) == [447, 448, 449]
    assert (pixels[:896, 448] == GRID_COLOR).all(), "the x=448 boundary must run the full image height"
    assert (pixels[:896, 896] == GRID_COLOR).all()
    assert (pixels[448, :1344] == GRID_COLOR).all()
    assert tuple(pixels[300, 224]) == GREY and tuple(pixels[700, 1100]) == GREY, "window interiors keep the image"
    assert picture.width > 1344 and picture.height > 896, "thumbnail panel and caption come beside and below"


def test_show_tiles_maps_boundaries_back_through_the_resize():
    # 1000x500 -> 1 x 2 windows cut from the image resized to 896x448; the boundary is the original's middle, x=500.
    picture = draw_tiles(Image.new("RGB", (1000, 500), GREY))
    assert grid_columns(picture, y=250, width=1000) == [499, 500, 501]
    # Thumbnail only: no interior lines at all.
    assert grid_columns(draw_tiles(Image.new("RGB", (1000, 500), GREY), max_windows=0), y=250, width=1000) == []


def test_show_tiles_cli_writes_png(tmp_path, capsys):
    src, out = tmp_path / "in.png", tmp_path / "tiles.png"
    Image.new("RGB", (1344, 896), GREY).save(src)
    assert show_tiles_main([str(src), "-o", str(out), "--max-windows", "4"]) == 0
    assert "2x2 windows" in capsys.readouterr().out
    written = Image.open(out)
    assert written.format == "PNG"
    # Budget 4: 1344x896 shrinks to a 2x2 grid, so the only interior column line is at 1344 / 2 = 672.
    assert grid_columns(written.convert("RGB"), y=300, width=1344) == [671, 672, 673]


def test_show_tiles_cli_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        show_tiles_main(["--help"])
    assert exit_info.value.code == 0 and "--max-windows" in capsys.readouterr().out

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image at all")
    assert show_tiles_main([str(bad), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "bad.png" in err
    assert show_tiles_main([str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), GREY).save(good)
    assert show_tiles_main([str(good), "-o", str(tmp_path / "x.png"), "--max-windows", "-1"]) == 2
    assert "max_windows" in capsys.readouterr().err
    assert show_tiles_main([str(good), "-o", str(tmp_path / "no_dir" / "x.png")]) == 2
    assert "cannot write" in capsys.readouterr().err


# -- keys -> pixels (geometry, no model) --------------------------------------------------------------------------


def test_uniform_patch_mass_is_uniform_on_a_square_image_and_cls_is_dropped():
    plan = plan_tiles(896, 896)  # 2 x 2 windows, the pad thumbnail covers exactly the image
    mass = np.ones((plan.num_crops, L))
    mass[:, 0] = 1000.0  # CLS tokens: no place on the image, must not show
    heat, total = keys_to_pixels(mass.ravel(), plan, G, L)
    expected = plan.num_crops * G * G / (896 * 896)
    assert total == pytest.approx(plan.num_crops * G * G)
    np.testing.assert_allclose(heat, expected, rtol=1e-12)


def test_same_region_gives_same_map_with_1x1_or_1x2_windows():
    """Mass on the left half of a 896x448 image, seen through 1x2 windows or one window: the same map."""
    two = plan_tiles(896, 448)  # 1 x 2 windows, no resize
    one = plan_tiles(896, 448, max_windows=1)  # 1 x 1 window: the image squeezed to 448x448
    assert (two.rows, two.cols, one.rows, one.cols) == (1, 2, 1, 1)
    mass_two = np.zeros((two.num_crops, L))
    mass_two[1, 1:] = 1.0  # every patch of the left window
    window = np.zeros((G, G))
    window[:, : G // 2] = 2.0  # left half of the single window's patch columns, same total (64)
    mass_one = np.zeros((one.num_crops, L))
    mass_one[1, 1:] = window.ravel()
    heat_two, total_two = keys_to_pixels(mass_two.ravel(), two, G, L)
    heat_one, total_one = keys_to_pixels(mass_one.ravel(), one, G, L)
    assert total_two == pytest.approx(64) and total_one == pytest.approx(64), "mass conserved"
    np.testing.assert_allclose(heat_two, heat_one, atol=1e-12)
    np.testing.assert_allclose(heat_two[:, :448], 64 / (448 * 448), rtol=1e-12)
    assert heat_two[:, 448:].max() == 0


def test_pad_thumbnail_mass_on_the_padding_is_left_out():
    plan = plan_tiles(896, 448)  # thumbnail canvas 896 square, image rows at canvas y 224..672
    mass = np.zeros((plan.num_crops, L))
    mass[0, 1:] = 1.0  # thumbnail patches only: rows 0-1 and 6-7 of its 8 lie on the padding
    heat, total = keys_to_pixels(mass.ravel(), plan, G, L)
    assert total == pytest.approx(32), "exactly the 4 middle patch rows land on the image"
    np.testing.assert_allclose(heat, 32 / (896 * 448), rtol=1e-12)
    _, total_squash = keys_to_pixels(mass.ravel(), plan, G, L, thumbnail_mode="squash")
    assert total_squash == pytest.approx(64)


def test_fractional_cells_conserve_mass():
    plan = plan_tiles(1001, 613)  # 2 x 1 windows; cells of 1001/16 x 613/8 pixels, no pixel-aligned edge
    rng = np.random.default_rng(0)
    mass = rng.random(plan.num_crops * L)
    heat, total = keys_to_pixels(mass, plan, G, L, thumbnail_mode="squash")
    patch_mass = mass.reshape(plan.num_crops, L)[:, 1:].sum()
    assert heat.shape == (613, 1001)
    assert total == pytest.approx(patch_mass, rel=1e-12)


# -- attention map through the model ------------------------------------------------------------------------------


def test_attention_map_shape_and_normalisation(tiny_with_gates):
    model, processor = tiny_with_gates
    image = Image.new("RGB", (1000, 600), GREY)
    heat = answer_attention_map(model, processor, image, "What is shown?", "a grey square")
    assert heat.shape == (600, 1000) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0
    assert heat.sum() == pytest.approx(1.0, abs=1e-5)


def test_attention_map_is_over_the_image_as_displayed(tiny, tmp_path):
    """A JPEG stored 600x400 with EXIF orientation 6 (rotate 90) displays as 400x600; the map must match that."""
    model, processor = tiny
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    noise_image(600, 400).save(path, exif=exif)
    heat = answer_attention_map(model, processor, str(path), "What?", "noise")
    assert heat.shape == (600, 400)


def test_recorded_probabilities_are_the_blocks_own_softmax(tiny_with_gates):
    """Independent recomputation: F.layer_norm / F.linear / einsum written here, compared with the recorded
    weights, and weights @ v through to_out must reproduce the block's actual output."""
    model, processor = tiny_with_gates
    with torch.no_grad():
        for block in model.cross_attention_blocks().values():  # peaked attention, so a near-uniform answer would fail
            block.attn.to_q.weight.mul_(30.0)
            block.attn.to_kv.weight[: block.attn.heads * block.attn.head_dim].mul_(10.0)
    seen: dict[int, tuple] = {}

    def capture(idx):
        def hook(module, args, output):
            seen[idx] = (args, output)

        return hook

    blocks = model.cross_attention_blocks()
    handles = [blocks[i].attn.register_forward_hook(capture(i)) for i in blocks]
    try:
        record = answer_cross_attention(model, processor, noise_image(900, 500), "Where?", "left side")
    finally:
        for h in handles:
            h.remove()
    A = len(record.answer_ids)
    for idx, block in blocks.items():
        (x, k, v, xattn), output = seen[idx]
        attn = block.attn
        hq = F.linear(F.layer_norm(x, x.shape[-1:], attn.norm.weight, attn.norm.bias, attn.norm.eps), attn.to_q.weight)
        q = hq.view(1, x.shape[1], attn.heads, attn.head_dim).transpose(1, 2)  # (1, H, T, Dh)
        scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(attn.head_dim)
        if xattn.mask is not None:
            scores = scores.masked_fill(~xattn.mask, float("-inf"))
        probs = scores.softmax(-1)[0, :, -A - 1 : -1]  # (H, A, S): rows predicting the answer tokens
        torch.testing.assert_close(record.probs[idx], probs, atol=1e-6, rtol=1e-5)
        assert probs.max() > 10 / probs.shape[-1], "the test setting should make attention peaked (10x uniform)"
        mixed = torch.einsum("hts,hsd->thd", record.probs[idx], v[0]).reshape(A, -1)  # (A, H*Dh)
        torch.testing.assert_close(attn.to_out(mixed), output[0, -A - 1 : -1], atol=1e-5, rtol=1e-4)
    total = record.key_mass().sum().item()
    assert total == pytest.approx(model.config.cross_attention_heads * A * len(blocks)), "every row sums to 1"


def _steer_attention(model, hot_crop: int, window: bool = True):
    """Make every answer query attend (almost) only to the patches of crop `hot_crop`.

    q = constant 5 in every channel (LayerNorm weight 0, bias 1; to_q all 5/D), k = channel 0 of the vision tokens
    in every channel; channel 0 of the tokens is 5 on the hot crop's patches and 0 elsewhere (plus the window
    position embedding, |.| <= 1). Score gap >= 20 * (5 - 2) = 60 nats: everything else gets < 1e-20 each.
    """
    with torch.no_grad():
        for block in model.cross_attention_blocks().values():
            attn = block.attn
            attn.norm.weight.zero_()
            attn.norm.bias.fill_(1.0)
            attn.to_q.weight.fill_(5.0 / attn.to_q.weight.shape[1])
            inner = attn.heads * attn.head_dim
            attn.to_kv.weight[:inner].zero_()
            attn.to_kv.weight[:inner, 0] = 1.0

    def hook(module, args, tokens):  # tokens (N, L, Dv)
        tokens = tokens.clone()
        tokens[..., 0] = 0.0
        tokens[hot_crop, 1:, 0] = 5.0  # patches only; its CLS token stays cold
        return tokens

    return model.vision_tower.register_forward_hook(hook)


def test_attention_steered_to_one_window_lands_in_its_rectangle(tiny):
    model, processor = tiny
    image = Image.new("RGB", (1400, 920), GREY)  # 2 x 3 windows, cut from the image resized to 1344x896
    plan = plan_tiles(1400, 920)
    assert (plan.rows, plan.cols) == (2, 3)
    handle = _steer_attention(model, hot_crop=1 + 4)  # window 4 = row 1, col 1
    try:
        heat = answer_attention_map(model, processor, image, "Look where?", "here", max_windows=9).astype(np.float64)
    finally:
        handle.remove()
    # Row 1, col 1 of a 2x3 grid over 1400x920 (by hand): x in [1400/3, 2800/3) = [466.67, 933.33), y in [460, 920).
    x0, x1, y0, y1 = 1400 / 3, 2800 / 3, 460, 920
    inside = heat[y0:y1, 467:933]
    assert heat.sum() == pytest.approx(1.0, abs=1e-5)
    assert inside.sum() == pytest.approx((933 - 467) / (x1 - x0), rel=1e-4), "uniform mass over the rectangle"
    np.testing.assert_allclose(inside, inside.mean(), rtol=1e-4)
    edge = heat[y0:y1, 466].sum() + heat[y0:y1, 933].sum()  # the two pixel columns the rectangle cuts
    assert inside.sum() + edge == pytest.approx(1.0, abs=1e-5)
    assert heat[:y0].max() < 1e-9 and heat[:, :466].max() < 1e-9 and heat[:, 934:].max() < 1e-9


def test_thumbnail_only_attention_gives_the_same_map_for_any_window_grid(tiny):
    """All mass on the thumbnail: its geometry does not depend on the windows, so 1x1 and 2x3 plans agree."""
    model, processor = tiny
    image = Image.new("RGB", (1400, 920), GREY)
    handle = _steer_attention(model, hot_crop=0)
    try:
        maps = [answer_attention_map(model, processor, image, "Where?", "all over", max_windows=n) for n in (1, 9, 0)]
    finally:
        handle.remove()
    for heat in maps[1:]:
        np.testing.assert_allclose(heat, maps[0], rtol=1e-4, atol=1e-12)
    # The thumbnail pads 1400x920 to a 1400 square (image at canvas y 240..1160), so the image takes whole patch
    # rows 2-5 and parts of rows 1 and 6; every pixel of the image is still covered by patches of equal mass.
    np.testing.assert_allclose(maps[0], 1 / (1400 * 920), rtol=1e-4)


# -- overlay ------------------------------------------------------------------------------------------------------


def _left_hot_heat(h: int, w: int) -> np.ndarray:
    heat = np.ones((h, w))
    heat[:, : w // 2] = 9.0
    return heat / heat.sum()


def test_overlay_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    image = Image.new("RGB", (300, 200), GREY)
    out = save_attention_overlay(image, _left_hot_heat(200, 300), tmp_path / "map.png", title="Q: where? A: left")
    picture = Image.open(out).convert("RGB")
    assert picture.width > 300 and picture.height >= 200, "image plus a colour bar"
    long_title = "Q: where? A: " + "and then some more " * 200  # a rambling answer must not widen the figure
    wide = Image.open(save_attention_overlay(image, _left_hot_heat(200, 300), tmp_path / "long.png", long_title))
    assert wide.width <= picture.width + 10 and wide.height < picture.height + 60


def test_overlay_without_matplotlib_uses_the_same_colours(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib import colormaps

    from infimm_hd.inference import attention_map

    ramp = np.linspace(0, 1, 101)
    reference = (colormaps["inferno"](ramp)[:, :3] * 255).round()
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # any import of matplotlib now raises ImportError
    fallback = attention_map._colormap(ramp).astype(float)
    assert np.abs(fallback - reference).max() <= 8, "the PIL-only stops approximate inferno"

    image = Image.new("RGB", (300, 200), GREY)
    out = save_attention_overlay(image, _left_hot_heat(200, 300), tmp_path / "map.png")
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert picture.shape[1] > 300, "a legend sits right of the image"
    titled = Image.open(save_attention_overlay(image, _left_hot_heat(200, 300), tmp_path / "t.png", "A: " + "x " * 999))
    assert titled.width == picture.shape[1] and titled.height <= picture.shape[0] + 8 + 18 * 3
    hot, cold = picture[100, 75], picture[100, 225]
    assert hot[0] > cold[0] + 100, f"the hot half must be drawn in the hot colours: {hot} vs {cold}"


@pytest.mark.real_llm
def test_attention_map_of_a_generated_answer_with_smollm2():
    """The real LLM and its own chat template: the generated ids go in as they are, and every kept row is a
    distribution over the image's keys."""
    import infimm_hd
    from infimm_hd.inference.prompts import render_prompt

    model, processor = infimm_hd.build_model("smollm2-135m")
    image, question = noise_image(700, 500), "What colours do you see?"
    inputs = processor(images=[image], text=render_prompt(processor, question), add_special_tokens=False)
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    record = answer_cross_attention(model, processor, image, question, generated.tolist())
    for probs in record.probs.values():  # (H, A, S)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]), atol=1e-5, rtol=0)
    heat = answer_attention_map(model, processor, image, question, generated.tolist())
    assert heat.shape == (500, 700) and heat.min() >= 0 and heat.sum() == pytest.approx(1.0, abs=1e-5)
