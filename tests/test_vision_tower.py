"""VisionTower against independent expectations: manual forward passes through the libraries' own submodules,
resampling of an analytically known position embedding, freezing, and meta-device builds of the paper's tower."""

from __future__ import annotations

import pytest
import torch
from timm.models.eva import Eva

from infimm_hd.configuration import InfiMMHDVisionConfig
from infimm_hd.vision_tower import VisionTower

TINY = {"width": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 4.0, "image_size": 56, "patch_size": 14}


def tiny_config(**overrides) -> InfiMMHDVisionConfig:
    return InfiMMHDVisionConfig(**{**TINY, **overrides})


def pixels(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))  # (N, 3, S, S)


def manual_timm(model: torch.nn.Module, x: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Patch embed, class token, position embedding, then the first `num_blocks` blocks; no final norm."""
    tokens = model.patch_embed(x)  # (N, grid**2, D)
    cls = model.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
    tokens = torch.cat([cls, tokens], dim=1) + model.pos_embed  # (N, 1 + grid**2, D)
    tokens = model.norm_pre(tokens)
    for block in model.blocks[:num_blocks]:
        tokens = block(tokens)
    return tokens


def manual_open_clip(model: torch.nn.Module, x: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """conv1 patches, class embedding, positional embedding, ln_pre, then the first `num_blocks` resblocks."""
    tokens = model.conv1(x).flatten(2).transpose(1, 2)  # (N, grid**2, D)
    cls = model.class_embedding.expand(x.shape[0], 1, -1)  # (N, 1, D)
    tokens = torch.cat([cls, tokens], dim=1) + model.positional_embedding  # (N, 1 + grid**2, D)
    tokens = model.ln_pre(tokens)
    batch_first = model.transformer.batch_first
    tokens = tokens if batch_first else tokens.transpose(0, 1)
    for block in model.transformer.resblocks[:num_blocks]:
        tokens = block(tokens)
    return tokens if batch_first else tokens.transpose(0, 1)


MANUAL = {"timm": manual_timm, "open_clip": manual_open_clip}


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
@pytest.mark.parametrize("keep_cls", [True, False])
def test_explicit_tower_shapes(backend: str, keep_cls: bool) -> None:
    tower = VisionTower(tiny_config(backend=backend, keep_cls=keep_cls))
    out = tower(pixels(2, 56))
    grid = 56 // 14
    assert out.shape == (2, grid**2 + int(keep_cls), 32)
    assert tower.tokens_per_crop == grid**2 + int(keep_cls)
    assert tower.width == 32


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
@pytest.mark.parametrize("feature_layer", [-1, -2, 0])
@pytest.mark.parametrize("keep_cls", [True, False])
def test_tokens_match_manual_forward(backend: str, feature_layer: int, keep_cls: bool) -> None:
    """Block `feature_layer` of an unpruned reference tower, without its final norm, equals VisionTower's tokens."""
    reference = VisionTower(tiny_config(backend=backend, feature_layer=-1))
    tower = VisionTower(tiny_config(backend=backend, feature_layer=feature_layer, keep_cls=keep_cls))
    incompatible = tower.model.load_state_dict(reference.model.state_dict(), strict=False)
    assert not incompatible.missing_keys  # the pruned tower is a prefix of the full one
    num_blocks = {-1: 3, -2: 2, 0: 1}[feature_layer]
    assert tower.block_index == num_blocks - 1

    x = pixels(2, 56)
    with torch.no_grad():
        expected = MANUAL[backend](reference.model, x, num_blocks)  # (N, 1 + grid**2, D)
        got = tower(x)
    if not keep_cls:
        expected = expected[:, 1:]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_post_norm_applies_final_norm(backend: str) -> None:
    torch.manual_seed(0)
    plain = VisionTower(tiny_config(backend=backend))
    normed = VisionTower(tiny_config(backend=backend, post_norm=True))
    normed.model.load_state_dict(plain.model.state_dict(), strict=False)
    final_norm = normed.model.norm if backend == "timm" else normed.model.ln_post
    x = pixels(1, 56)
    with torch.no_grad():
        assert (normed(x) - final_norm(plain(x))).abs().max() < 1e-5


def tiny_eva(img_size: int) -> Eva:
    """EVA02-style: rotary position embeddings, SwiGLU MLP, absolute position embedding and a class token."""
    return Eva(
        img_size=img_size,
        patch_size=14,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(2, 2),
        num_classes=0,
    )


def test_eva02_style_tower() -> None:
    config = tiny_config(depth=2, feature_layer=-2)
    tower = VisionTower(config, model=tiny_eva(56))
    assert len(tower.model.blocks) == 1
    out = tower(pixels(2, 56))
    assert out.shape == (2, 17, 32)
    assert torch.isfinite(out).all()


def test_eva02_style_tower_resamples_rope_and_pos_embed() -> None:
    config = tiny_config(depth=2, image_size=56)
    tower = VisionTower(config, model=tiny_eva(28))  # built for 28 px, resampled to the config's 56 px
    assert tower.model.pos_embed.shape == (1, 17, 32)
    assert tower(pixels(1, 56)).shape == (1, 17, 32)


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_set_image_size_resamples_position_embedding(backend: str) -> None:
    config = tiny_config(backend=backend, image_size=28)
    tower = VisionTower(config)
    assert tower.tokens_per_crop == 5
    cls_before = pos_embedding(tower)[0].clone()

    tower.set_image_size(56)
    assert config.image_size == 56 and tower.image_size == 56  # the shared config follows the tower
    assert tower.tokens_per_crop == 17
    assert tower(pixels(2, 56)).shape == (2, 17, 32)
    assert torch.equal(pos_embedding(tower)[0], cls_before)
    assert not pos_embedding(tower).requires_grad  # the frozen state survives the new Parameter
    with pytest.raises(ValueError, match="28x28"):
        tower(pixels(1, 28))

    tower.set_image_size(112)  # a second resize starts from the bookkeeping the first one left behind
    assert tower(pixels(1, 112)).shape == (1, 65, 32)
    assert pos_embedding(tower).shape == (65, 32)


def pos_embedding(tower: VisionTower) -> torch.Tensor:
    """The tower's learned absolute position embedding as (1 + grid**2, D), class token first."""
    if tower.flavor == "timm":
        return tower.model.pos_embed[0]
    return tower.model.positional_embedding


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_resampling_preserves_a_linear_position_embedding(backend: str) -> None:
    """A position embedding linear in (row, col) stays linear: bicubic interpolation reproduces linear functions.

    Bicubic resampling with half-pixel centres maps new index i to old coordinate (i + 0.5) * old / new - 0.5;
    where all four taps are inside the old grid, the value is exactly the linear function at that coordinate.
    """
    old, new = 8, 16
    tower = VisionTower(tiny_config(backend=backend, image_size=old * 14))
    width = tower.width
    slope_row, slope_col, offset = torch.randn(3, width, generator=torch.Generator().manual_seed(1))
    rows, cols = torch.meshgrid(torch.arange(old), torch.arange(old), indexing="ij")
    linear = rows.reshape(-1, 1) * slope_row + cols.reshape(-1, 1) * slope_col + offset  # (old**2, D)
    cls = torch.randn(1, width)
    with torch.no_grad():
        pos_embedding(tower).copy_(torch.cat([cls, linear]))

    tower.set_image_size(new * 14)
    resampled = pos_embedding(tower).detach()
    assert resampled.shape == (1 + new**2, width)
    assert torch.equal(resampled[0], cls[0])

    coord = (torch.arange(new) + 0.5) * old / new - 0.5  # new index -> old grid coordinate
    expected = coord.view(-1, 1, 1) * slope_row + coord.view(1, -1, 1) * slope_col + offset  # (new, new, D)
    got = resampled[1:].view(new, new, width)
    interior = (coord >= 1) & (coord <= old - 2)
    assert interior.sum() >= new // 2
    assert (got[interior][:, interior] - expected[interior][:, interior]).abs().max() < 1e-4
    # Near the border the replicate-padded taps bend it only slightly.
    assert (got - expected).abs().max() < 0.5 * (slope_row.abs() + slope_col.abs()).max()


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_freeze_is_default_and_idempotent(backend: str) -> None:
    tower = VisionTower(tiny_config(backend=backend))
    params = list(tower.parameters())
    assert params and not any(p.requires_grad for p in params)

    tower.freeze(False)
    tower.freeze(False)
    assert all(p.requires_grad for p in tower.parameters())
    tower(pixels(2, 56)).square().mean().backward()
    missing = [name for name, p in tower.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing  # pruning left no parameter outside the computation

    tower.freeze(True)
    tower.freeze()
    assert not any(p.requires_grad for p in tower.parameters())


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_grad_checkpointing_keeps_outputs_and_gradients(backend: str) -> None:
    tower = VisionTower(tiny_config(backend=backend))
    tower.freeze(False)
    x = pixels(2, 56)
    expected = tower(x)
    tower.set_grad_checkpointing(True)
    got = tower(x)
    got.sum().backward()
    assert (got - expected).abs().max() < 1e-6
    assert all(p.grad is not None for p in tower.parameters())


@pytest.mark.parametrize("backend", ["timm", "open_clip"])
def test_wrong_input_size_names_both_sizes(backend: str) -> None:
    tower = VisionTower(tiny_config(backend=backend))
    with pytest.raises(ValueError, match=r"42x42.*56x56.*set_image_size"):
        tower(pixels(1, 42))


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="feature_layer"):
        VisionTower(tiny_config(feature_layer=-4))
    with pytest.raises(ValueError, match="width"):
        VisionTower(tiny_config(depth=2), model=Eva(img_size=56, patch_size=14, embed_dim=64, depth=1, num_classes=0))
    with pytest.raises(ValueError, match="multiple"):
        VisionTower(tiny_config()).set_image_size(50)


def test_open_clip_eva02_e_builds_on_meta() -> None:
    """The paper's EVA02-CLIP-E tower (open_clip `EVA02-E-14`): ~4.4B parameters, 448 px -> 1025 tokens of 1792."""
    config = InfiMMHDVisionConfig(backend="open_clip", model_name="EVA02-E-14", feature_layer=-1)
    with torch.device("meta"):
        tower = VisionTower(config)
        out = tower(torch.empty(1, 3, 448, 448))
    num_params = sum(p.numel() for p in tower.parameters())
    assert 4.2e9 < num_params < 4.6e9
    assert tower.flavor == "timm" and tower.depth == 64 and tower.width == 1792
    assert out.shape == (1, 1025, 1792)


@pytest.mark.parametrize(
    ("name", "width"),
    [("vit_small_patch14_dinov2", 384), ("eva02_tiny_patch14_224", 192), ("vit_small_patch14_reg4_dinov2", 384)],
)
def test_named_timm_models_build_on_meta(name: str, width: int) -> None:
    config = InfiMMHDVisionConfig(backend="timm", model_name=name, width=width, feature_layer=-2)
    with torch.device("meta"):
        tower = VisionTower(config)
        out = tower(torch.empty(2, 3, 448, 448))
    assert tower.width == width
    assert out.shape == (2, 1025, width)  # class token kept, register tokens dropped


def test_named_model_width_mismatch_is_explained() -> None:
    config = InfiMMHDVisionConfig(backend="timm", model_name="eva02_tiny_patch14_224")  # width defaults to 1792
    with torch.device("meta"), pytest.raises(ValueError, match="width 192"):
        VisionTower(config)


def test_named_eva02_runs_on_cpu() -> None:
    """A real named EVA02 (rotary embeddings) at a small resolution, end to end on CPU."""
    config = InfiMMHDVisionConfig(backend="timm", model_name="eva02_tiny_patch14_224", width=192, image_size=56)
    tower = VisionTower(config)
    assert tower(pixels(1, 56)).shape == (1, 17, 192)
