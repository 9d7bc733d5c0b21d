"""Configs: one small typed config per component, composed into `InfiMMHDConfig`.

* `InfiMMHDVisionConfig` describes the ViT tower (open_clip or timm, named or explicit architecture).
* `InfiMMHDConfig` holds the vision config, the LLM's own config (any `AutoConfig` model type) and the fusion
  settings (where the gated cross-attention blocks sit, their size, the masking rule, the tiling budget, tokens).

Both are `transformers.PreTrainedConfig` dataclasses, so `save_pretrained`/`from_pretrained`/`to_json_string`
round-trip them exactly. The cross-attention layer indices are stored explicitly (as Mllama does), never re-derived
at load time, so a checkpoint always describes its own layout.
"""

from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


def every_nth_layer(num_layers: int, n: int = 4) -> list[int]:
    """Decoder-layer indices that get a gated cross-attention block: the paper's `(i + 1) % n == 0` rule.

    >>> every_nth_layer(40)
    [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]
    >>> every_nth_layer(30)
    [3, 7, 11, 15, 19, 23, 27]
    """
    if n < 1:
        raise ValueError(f"cross-attention interval must be >= 1, got {n}")
    return [i for i in range(num_layers) if (i + 1) % n == 0]


@strict
class InfiMMHDVisionConfig(PreTrainedConfig):
    """The vision tower: which library builds it and which tokens it hands to cross-attention.

    `model_name` names an open_clip model (e.g. `"EVA02-E-14"`, the paper's EVA02-CLIP-E) or a timm model
    (e.g. `"eva02_large_patch14_clip_224"`); when it is `None` the explicit architecture fields build the tower, which
    is how tests and the embedded default run without downloads, and how a converted official checkpoint describes
    its tower without depending on a registry name:

    * `architecture="vit"`: a plain ViT (timm `VisionTransformer`, or open_clip's own with `backend="open_clip"`);
      `qkv_bias` gives it one fused q/k/v bias.
    * `architecture="eva"` (timm only): timm's `Eva`, the layout of the EVA-CLIP towers. Its fused `qkv` has no bias
      tensor of its own; `qkv_bias=True` adds the separate `q_bias` and `v_bias` (the key bias is fixed at zero),
      exactly as in the official InfiMM-HD checkpoint. Learned absolute position embedding with a class token, GELU
      MLP (`fc1`/`fc2`), no rotary embedding.

    `block_norm` is where each transformer block normalises: `"pre"` (`x + attn(norm1(x))`, the usual ViT) or
    `"post"` (`x + norm1(attn(x))`, EVA-CLIP-E's "postnorm" blocks; the timm `ResPostBlock` for `"vit"`).

    `feature_layer` indexes the transformer blocks (-1 = last block, -2 = penultimate). `post_norm` is unrelated to
    `block_norm`: it says whether the tower's *final* norm (timm `norm`, open_clip `ln_post`) is applied to the
    returned tokens. The official code takes them before that norm (`post_norm=False`), so the final norm is pruned.
    `keep_cls` keeps the class token among the keys. The architecture fields other than `image_size`, `patch_size`
    and `width` are ignored when `model_name` is set.
    """

    model_type = "infimm_hd_vision"
    base_config_key = "vision_config"

    backend: Literal["timm", "open_clip"] = "timm"
    model_name: str | None = None
    architecture: Literal["vit", "eva"] = "vit"
    block_norm: Literal["pre", "post"] = "pre"
    qkv_bias: bool = True
    image_size: int = 448
    patch_size: int = 14
    width: int = 1792
    depth: int = 64
    num_heads: int = 16
    mlp_ratio: float = 8.571428571428571
    feature_layer: int = -1
    keep_cls: bool = True
    post_norm: bool = False
    layer_norm_eps: float = 1e-6

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_crop(self) -> int:
        """Cross-attention keys contributed by one 448 crop (1025 for EVA at 448/14 with CLS)."""
        return self.grid_size**2 + int(self.keep_cls)

    def validate_architecture(self) -> None:
        """Reject explicit architectures that cannot be built, before any module is allocated."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.model_name is not None:
            return
        if self.architecture not in ("vit", "eva") or self.block_norm not in ("pre", "post"):
            raise ValueError(
                f"unknown vision architecture={self.architecture!r} / block_norm={self.block_norm!r}; expected "
                "architecture 'vit' or 'eva' and block_norm 'pre' or 'post'"
            )
        if self.width % self.num_heads:
            raise ValueError(f"vision width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.backend == "open_clip" and (self.architecture, self.block_norm, self.qkv_bias) != ("vit", "pre", True):
            raise ValueError(
                "the explicit open_clip tower is a pre-norm ViT with q/k/v biases; use backend='timm' for "
                f"architecture={self.architecture!r}, block_norm={self.block_norm!r}, qkv_bias={self.qkv_bias}"
            )


@strict
class InfiMMHDConfig(PreTrainedConfig):
    """The whole model: vision tower + LLM + gated cross-attention fusion.

    Fusion defaults are the paper's: a block before every 4th decoder layer (0-indexed 3, 7, ...), 12 heads x 64,
    FFN multiplier 1, each text token attending only to the latest preceding `<image>`, 448 px windows, at most
    9 windows in training. Text before a sample's first `<image>` gets nothing from the blocks (so it is unaffected
    by an image that follows it); `ffn_before_first_image=True` reproduces the official code instead, whose per-sample
    flag runs the gated FFN on every token of a sample that has an image (set for converted official checkpoints).
    `cross_attention_implementation="flash_attention_2"` runs the blocks through
    FlashAttention's varlen kernel (optional `flash-attn` package, CUDA); the default is PyTorch SDPA.
    `cross_attention_layers=None` is filled from the LLM's depth at construction and then
    stored explicitly.
    """

    model_type = "infimm_hd"
    sub_configs_defaults = {
        "vision_config": InfiMMHDVisionConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None

    cross_attention_layers: list[int] | None = None
    cross_attention_every_n_layers: int = 4
    cross_attention_heads: int = 12
    cross_attention_head_dim: int = 64
    cross_attention_ff_mult: float = 1.0
    only_attend_immediate_media: bool = True
    ffn_before_first_image: bool = False
    cross_attention_implementation: Literal["sdpa", "flash_attention_2"] = "sdpa"

    window_size: int = 448
    max_windows_train: int = 9
    max_windows_inference: int = 16
    thumbnail_mode: Literal["pad", "squash"] = "pad"

    image_token_id: int | None = None
    end_of_chunk_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        num_layers = self.text_config.num_hidden_layers
        if self.cross_attention_layers is None:
            self.cross_attention_layers = every_nth_layer(num_layers, self.cross_attention_every_n_layers)
        self.cross_attention_layers = sorted(int(i) for i in self.cross_attention_layers)
        bad = [i for i in self.cross_attention_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"cross_attention_layers {bad} are outside the LLM's {num_layers} decoder layers")
        if len(set(self.cross_attention_layers)) != len(self.cross_attention_layers):
            raise ValueError(f"cross_attention_layers has duplicates: {self.cross_attention_layers}")
        if self.cross_attention_implementation == "flash_attention_2" and not self.only_attend_immediate_media:
            raise ValueError("cross_attention_implementation='flash_attention_2' needs only_attend_immediate_media")
        if self.max_windows_train < 1 or self.max_windows_inference < 1:
            raise ValueError("max_windows_train and max_windows_inference must be >= 1")
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.vision_config.validate_architecture()

    @property
    def max_windows(self) -> int:
        """The hard cap the model enforces: the larger of the training and inference budgets."""
        return max(self.max_windows_train, self.max_windows_inference)

    def get_text_config(self, *args, **kwargs) -> PreTrainedConfig:
        return self.text_config
