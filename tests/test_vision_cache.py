"""The server's vision-token cache: cached tokens are the tower's own, a resent image skips the tower, and the
budget holds. The HTTP path (a resent image answered identically, counted as a hit) is in tests/test_server.py."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

from infimm_hd.serving.vision_cache import VisionTokenCache, image_key


@pytest.fixture
def model_and_crops(tiny_with_gates):
    model, processor = tiny_with_gates
    model.eval()
    pictures = [make_image(1, seed=1), make_image(4, seed=2), make_image(1, seed=3)]  # 2, 5 and 2 crops
    vision = processor.image_processor(pictures, return_tensors="pt")
    calls = []
    model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return model, processor, pictures, vision["pixel_values"], vision["image_grids"], calls


def split(pixel_values, image_grids, indices):
    """pixel_values and image_grids of the images at `indices`, in that order."""
    crops = (1 + image_grids.prod(dim=1)).tolist()
    parts = torch.split(pixel_values, crops)
    return torch.cat([parts[i] for i in indices]), image_grids[indices]


def test_cached_tokens_are_the_towers_and_a_resent_image_skips_it(model_and_crops):
    model, _, _, pixel_values, grids, calls = model_and_crops
    with torch.no_grad():
        expected = model.vision_tower(pixel_values)  # (9, L, Dv)
    calls.clear()
    cache = VisionTokenCache(max_bytes=1 << 30)
    keys = ["a", "b", "c"]
    assert torch.equal(cache.tokens(model, keys, pixel_values, grids), expected)
    assert calls == [9] and (cache.hits, cache.misses) == (0, 3)
    # b again, then a new image d (the crops of image 0 under another key), a repeated within the batch:
    again_pixels, again_grids = split(pixel_values, grids, [1, 0, 0])
    got = cache.tokens(model, ["b", "d", "d"], again_pixels, again_grids)
    assert calls == [9, 2]  # only d's 2 crops ran through the tower, once
    assert torch.equal(got, torch.cat([expected[2:7], expected[0:2], expected[0:2]]))
    assert (cache.hits, cache.misses) == (2, 4) and len(cache) == 4


def test_budget_drops_least_recently_used_and_skips_oversized(model_and_crops):
    model, _, _, pixel_values, grids, calls = model_and_crops
    cache = VisionTokenCache(max_bytes=1 << 30)
    one, one_grid = split(pixel_values, grids, [0])
    size = cache.tokens(model, ["x"], one, one_grid).numel() * 4  # float32 tokens of a 2-crop image
    small = VisionTokenCache(max_bytes=2 * size)
    for key in ("p", "q"):
        small.tokens(model, [key], one, one_grid)
    small.tokens(model, ["p"], one, one_grid)  # p is now the most recent
    small.tokens(model, ["r"], one, one_grid)  # evicts q
    assert small.cached_bytes == 2 * size and len(small) == 2
    calls.clear()
    small.tokens(model, ["p", "r"], *split(pixel_values, grids, [0, 2]))
    assert calls == []  # both kept
    small.tokens(model, ["q"], one, one_grid)
    assert calls == [2]  # q was dropped
    big_pixels, big_grid = split(pixel_values, grids, [1])  # 5 crops: over the 4-crop budget
    tokens = small.tokens(model, ["big"], big_pixels, big_grid)
    assert tokens.shape[0] == 5 and "big" not in small._tokens and small.cached_bytes <= 2 * size
    with pytest.raises(ValueError, match="2 image keys for 1 images"):
        small.tokens(model, ["p", "q"], one, one_grid)
    with pytest.raises(ValueError, match="max_bytes"):
        VisionTokenCache(0)


def test_context_from_vision_tokens_equals_the_one_from_pixels(model_and_crops):
    model, processor, pictures, pixel_values, grids, _ = model_and_crops
    prompts = ["<image>one", "two <image> and <image>"]
    inputs = processor(text=prompts, images=[[pictures[0]], pictures[1:]], return_tensors="pt")
    ids = inputs["input_ids"]
    with torch.no_grad():
        from_pixels = model.encode_media(ids, inputs["pixel_values"], inputs["image_grids"])
        tokens = model.vision_tower(inputs["pixel_values"])
        from_tokens = model.encode_media(ids, None, inputs["image_grids"], vision_tokens=tokens)
        assert torch.equal(from_tokens.media, from_pixels.media)
        assert torch.equal(from_tokens.key_media_index, from_pixels.key_media_index)
        with pytest.raises(ValueError, match="exactly one of pixel_values and vision_tokens"):
            model.encode_media(ids, inputs["pixel_values"], inputs["image_grids"], vision_tokens=tokens)
        with pytest.raises(ValueError, match="vision_tokens holds 8 crops"):
            model.encode_media(ids, None, inputs["image_grids"], vision_tokens=tokens[1:])


def test_image_key_is_the_bytes_digest():
    assert image_key(b"abc") == image_key(b"abc") != image_key(b"abd")
    assert image_key(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # SHA-256 of nothing
