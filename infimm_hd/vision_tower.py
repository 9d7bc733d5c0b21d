"""The ViT vision tower: builds a timm or open_clip ViT and hands its patch tokens to the cross-attention layers.

InfiMM-HD feeds the *per-token* output of one transformer block of EVA02-CLIP-E (the last one by default) to the
gated cross-attention layers, taken before the tower's final norm. This module wraps the two libraries that ship
such towers behind one interface:

* timm ViTs and EVA/EVA02 models (EVA02 uses rotary position embeddings, so blocks are run through timm's own
  `forward_intermediates` rather than re-implemented here);
* open_clip models: EVA02 towers in open_clip are timm trunks (`visual.trunk`), which are unwrapped and handled as
  timm models; OpenAI-style towers are open_clip's own `VisionTransformer`.

Without a model name, the config's explicit fields build a timm ViT or a timm `Eva` (EVA-CLIP layout, pre- or
post-norm blocks); the latter is how converted official InfiMM-HD checkpoints describe their EVA-CLIP-E tower.

Nothing is downloaded: named models are built with random weights (`pretrained=False` / `pretrained=None`), and
pretrained weights come in either through `load_state_dict` or by passing an already-loaded module as `model=`.

Blocks after `feature_layer`, the final norm (unless `post_norm`) and the pooling/projection head are pruned at
construction: they would never run, so keeping them would only cost memory and leave parameters without gradients
(which distributed data parallel rejects). Load full pretrained checkpoints before wrapping (via `model=`).

Non-persistent buffers (EVA's zero key bias, rotary tables) are in no state dict, and meta-device loaders such as
transformers' `from_pretrained` refill them with uninitialised memory; `forward` recomputes any buffer that was
replaced since the tower last initialised it (`init_non_persistent_buffers`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from infimm_hd.configuration import InfiMMHDVisionConfig

_TIMM = "timm"
_OPEN_CLIP = "open_clip"


def _as_int(size: int | tuple[int, ...] | list[int]) -> int:
    """A square size as one int; the towers here are only ever square, so a non-square size is an error."""
    if isinstance(size, int):
        return size
    sizes = {int(s) for s in size}
    if len(sizes) != 1:
        raise ValueError(f"only square vision towers are supported, got size {tuple(size)}")
    return sizes.pop()


def _build_timm(config: InfiMMHDVisionConfig) -> nn.Module:
    """A timm tower at `config.image_size`: a named model, or the explicit `architecture` (ViT or EVA) from the fields.

    The explicit EVA is timm's `Eva` in the EVA-CLIP layout (see `InfiMMHDVisionConfig`): fused `qkv` weight with
    separate `q_bias`/`v_bias` (zero key bias), absolute position embedding with a class token, GELU `fc1`/`fc2` MLP,
    no rotary embedding, no layer scale, and `EvaBlockPostNorm` blocks when `block_norm="post"`. Its parameter names
    are the official EVA-CLIP ones, so an official state dict loads onto it by prefix alone.
    """
    import timm
    from timm.layers import LayerNorm
    from timm.models.eva import Eva
    from timm.models.vision_transformer import Block, ResPostBlock, VisionTransformer

    if config.model_name is not None:
        return timm.create_model(config.model_name, pretrained=False, img_size=config.image_size, num_classes=0)
    shape = dict(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.width,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        class_token=True,
        num_classes=0,
        global_pool="token",
    )
    if config.architecture == "eva":
        return Eva(
            **shape,
            qkv_fused=True,
            use_abs_pos_emb=True,
            use_rot_pos_emb=False,
            use_post_norm=config.block_norm == "post",
            norm_layer=partial(LayerNorm, eps=config.layer_norm_eps),
        )
    return VisionTransformer(
        **shape,
        norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
        block_fn=ResPostBlock if config.block_norm == "post" else Block,
    )


def _build_open_clip(config: InfiMMHDVisionConfig) -> nn.Module:
    """An open_clip vision tower: `.visual` of a named model, or open_clip's own ViT from the explicit fields.

    Named models are built at their native size; `VisionTower` resamples them to `config.image_size` afterwards.
    """
    import open_clip
    from open_clip.transformer import LayerNorm, VisionTransformer

    if config.model_name is not None:
        # open_clip moves the model to `device` at the end; under `with torch.device("meta")` that must be meta too.
        model = open_clip.create_model(config.model_name, pretrained=None, device=torch.get_default_device())
        return model.visual
    return VisionTransformer(
        image_size=config.image_size,
        patch_size=config.patch_size,
        width=config.width,
        layers=config.depth,
        heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        output_dim=config.width,
        norm_layer=partial(LayerNorm, eps=config.layer_norm_eps),
    )


def _flavor(model: nn.Module) -> str:
    """Which forward API `model` speaks: timm's ViT/EVA family or open_clip's own VisionTransformer."""
    from open_clip.transformer import VisionTransformer as OpenClipViT

    if isinstance(model, OpenClipViT):
        return _OPEN_CLIP
    if hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "forward_intermediates"):
        return _TIMM
    raise ValueError(
        f"{type(model).__name__} is not a supported ViT: expected a timm ViT/EVA model (with patch_embed, blocks and "
        "forward_intermediates) or an open_clip VisionTransformer"
    )


class VisionTower(nn.Module):
    """A frozen-by-default ViT that maps square crops to the token sequence the cross-attention layers attend to.

    `forward` returns the output of block `config.feature_layer` (before the final norm unless `config.post_norm`),
    class token first when `config.keep_cls`, so each crop contributes `tokens_per_crop` keys of size `width`.

    `config` is kept by reference: `set_image_size` updates `config.image_size`, so a config saved after stage 2's
    224 -> 448 switch describes the resampled position embedding. Pass `model=` to wrap an already-built tower
    (e.g. `open_clip.create_model(name, pretrained=path).visual` or a timm `Eva`); `config.backend` and
    `config.model_name` are then ignored, but `patch_size` and `width` must match the module.
    """

    def __init__(self, config: InfiMMHDVisionConfig, *, model: nn.Module | None = None) -> None:
        super().__init__()
        config.validate_architecture()
        if model is None:
            if config.backend == _TIMM:
                model = _build_timm(config)
            elif config.backend == _OPEN_CLIP:
                model = _build_open_clip(config)
            else:
                raise ValueError(f"unknown vision backend {config.backend!r}; expected 'timm' or 'open_clip'")
        if hasattr(model, "trunk") and not hasattr(model, "patch_embed"):
            model = model.trunk  # open_clip's TimmModel adapter (e.g. EVA02-*): the timm trunk carries the blocks
        self.flavor = _flavor(model)
        self.config = config
        self.model = model

        name = config.model_name or "the explicit architecture"
        if self.flavor == _TIMM:
            self.width = int(model.embed_dim)
            patch_size = _as_int(model.patch_embed.patch_size)
            depth = len(model.blocks)
            has_cls = getattr(model, "cls_token", None) is not None
        else:
            self.width = int(model.conv1.out_channels)
            patch_size = _as_int(model.patch_size)
            depth = len(model.transformer.resblocks)
            has_cls = True
        if patch_size != config.patch_size:
            raise ValueError(f"{name} has patch size {patch_size} but the config says patch_size={config.patch_size}")
        if self.width != config.width:
            raise ValueError(
                f"{name} has width {self.width} but the config says width={config.width}; set vision_config.width "
                "so the cross-attention layers are sized for the tower's tokens"
            )
        if config.keep_cls and not has_cls:
            raise ValueError(f"keep_cls=True but {name} has no class token")
        if not -depth <= config.feature_layer < depth:
            raise ValueError(f"feature_layer {config.feature_layer} is out of range for a {depth}-block tower")
        self.depth = depth
        self.block_index = config.feature_layer % depth  # absolute index of the block whose output is returned

        # Keep only what forward runs: blocks[: block_index + 1], the final norm if post_norm, no pooling/head.
        model.prune_intermediate_layers(indices=[self.block_index], prune_norm=not config.post_norm, prune_head=True)
        if self.flavor == _OPEN_CLIP:
            model.attn_pool = None  # attentional poolers (CoCa-style towers) only feed the pooled embedding
            if hasattr(model, "attn_pool_contrastive"):
                model.attn_pool_contrastive = None

        if self._current_image_size() != config.image_size:
            self.set_image_size(config.image_size)
        self.init_non_persistent_buffers()
        self.freeze(True)

    @property
    def image_size(self) -> int:
        """Side of the square crops the tower accepts (pixels)."""
        return self.config.image_size

    @property
    def grid_size(self) -> int:
        """Patches per side of a crop."""
        return self.config.grid_size

    @property
    def tokens_per_crop(self) -> int:
        """Tokens `forward` returns per crop: grid_size**2 patch tokens, plus the class token when keep_cls."""
        return self.config.tokens_per_crop

    def _current_image_size(self) -> int:
        """The input size the wrapped module is currently built for (its position embedding's resolution)."""
        if self.flavor == _TIMM:
            return _as_int(self.model.patch_embed.img_size)
        return _as_int(self.model.image_size)

    def set_image_size(self, image_size: int) -> None:
        """Change the input resolution in place by bicubically resampling the learned absolute position embedding.

        Used between training stages (224 -> 448). The class token's embedding is carried over unchanged; timm
        models also update their rotary embedding grid (EVA02). `config.image_size` is updated to match.
        """
        if image_size <= 0 or image_size % self.config.patch_size:
            raise ValueError(f"image_size {image_size} is not a positive multiple of patch {self.config.patch_size}")
        if self.flavor == _TIMM:
            self.model.set_input_size(img_size=(image_size, image_size))
        else:
            from timm.layers import resample_abs_pos_embed

            model = self.model
            grid = image_size // self.config.patch_size
            pos = model.positional_embedding  # (1 + old_grid**2, D), class token first
            new_pos = resample_abs_pos_embed(
                pos.unsqueeze(0), new_size=[grid, grid], old_size=list(model.grid_size), num_prefix_tokens=1
            ).squeeze(0)  # (1 + grid**2, D)
            model.positional_embedding = nn.Parameter(new_pos, requires_grad=pos.requires_grad)
            model.image_size = (image_size, image_size)
            model.grid_size = (grid, grid)
        self.config.image_size = image_size

    def _buffer_owners(self) -> list[tuple[nn.Module, str]]:
        """(module, name) of every non-persistent buffer whose module can recompute it (`init_non_persistent_buffers`).

        These are derived values (EVA's zero key bias, rotary tables), absent from every state dict.
        """
        owners = []
        for module in self.model.modules():
            if callable(getattr(module, "init_non_persistent_buffers", None)):
                owners += [(module, name) for name in module._non_persistent_buffers_set if name in module._buffers]
        return owners

    def init_non_persistent_buffers(self) -> None:
        """Recompute the wrapped model's non-persistent buffers in place and mark them as valid.

        Loaders that build on the meta device (transformers' `from_pretrained`, `load_state_dict(assign=True)`)
        re-create such buffers with `torch.empty_like`, i.e. garbage: for EVA towers that would be a random key bias.
        `forward` calls this again whenever it finds an unmarked buffer (a fresh one from a loader, a device move or
        a dtype cast), so the tower is right however it was built or loaded.
        """
        with torch.no_grad():
            for module in self.model.modules():
                init = getattr(module, "init_non_persistent_buffers", None)
                if callable(init):
                    init()
        for module, name in self._buffer_owners():
            buffer = module._buffers[name]
            if buffer is not None:
                buffer._infimm_hd_valid = True

    def _ensure_buffers(self) -> None:
        """Re-initialise the non-persistent buffers if any was replaced since the last initialisation."""
        for module, name in self._buffer_owners():
            buffer = module._buffers[name]
            if buffer is not None and not getattr(buffer, "_infimm_hd_valid", False):
                self.init_non_persistent_buffers()
                return

    def freeze(self, frozen: bool = True) -> None:
        """Set `requires_grad = not frozen` on every parameter (idempotent); stages 1 and 4 keep the tower frozen."""
        for param in self.parameters():
            param.requires_grad_(not frozen)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward instead of storing activations (for training the 4.4B tower at 448)."""
        self.model.set_grad_checkpointing(enable)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Crops (N, 3, S, S) with S == image_size -> tokens (N, tokens_per_crop, width) from block feature_layer."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (N, 3, H, W), got shape {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height != self.image_size or width != self.image_size:
            raise ValueError(
                f"pixel_values are {height}x{width} but the vision tower expects {self.image_size}x{self.image_size}; "
                "resample with VisionTower.set_image_size"
            )
        self._ensure_buffers()
        dtype = next(self.model.parameters()).dtype
        pixel_values = pixel_values.to(dtype)  # (N, 3, S, S)
        keep_cls = self.config.keep_cls
        if self.flavor == _TIMM:
            (out,) = self.model.forward_intermediates(
                pixel_values,
                indices=[self.block_index],
                return_prefix_tokens=keep_cls,
                norm=self.config.post_norm,
                stop_early=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
            if not keep_cls:
                return out  # (N, grid**2, D)
            patches, prefix = out  # (N, grid**2, D), (N, num_prefix_tokens, D): class token first, then registers
        else:
            out = self.model.forward_intermediates(
                pixel_values,
                indices=[self.block_index],
                stop_early=True,
                normalize_intermediates=self.config.post_norm,
                intermediates_only=True,
                output_fmt="NLC",
                output_extra_tokens=keep_cls,
            )
            patches = out["image_intermediates"][0]  # (N, grid**2, D)
            if not keep_cls:
                return patches
            prefix = out["image_intermediates_prefix"][0]  # (N, 1, D)
        return torch.cat([prefix[:, :1], patches], dim=1)  # (N, 1 + grid**2, D)
