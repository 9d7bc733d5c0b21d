"""Per-call vision state handed to the cross-attention blocks, kept out of the modules themselves.

Shape legend
    Bc  context rows (one per prompt)    B   text rows (= Bc * rows_per_context)
    S   vision keys per context row      Dv  vision width     H, Dh  cross-attention heads, head dim
    T   text tokens in this call

The official code (and OpenFlamingo) stores visual features on the decoder layers between calls and recomputes the
key/value projections at every decoded token. Here the vision tokens live in a `CrossAttentionContext` that
`forward` returns and `generate` carries from step to step like the text KV cache: the ViT runs once per prompt, each
block's `to_kv` runs once per prompt (at prefill) when `kv_cache` is enabled, and decode steps read the cached k/v.
Prompts expanded for sampling or beams (`num_return_sequences`, RLOO's k samples) share one context row: the
attention folds the copies into the query length instead of copying k/v.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .varlen_attention import VarlenSegments

# A block's key/value projection: media (Bc, S, Dv) -> k, v each (Bc, H, S, Dh). Passed in rather than the block
# itself, so the context (read by the blocks) does not import the blocks.
ProjectKV = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CrossAttentionContext:
    """Vision keys of a batch of prompts plus the media bookkeeping needed to continue decoding.

    Attributes:
        media: (Bc, S, Dv) crop tokens of every image of each prompt (window position embeddings added), padded;
            `None` once every block has cached its k/v.
        key_media_index: (Bc, S) 1-based image number (within the prompt) of each key; 0 marks padding.
        media_seen: (B,) `<image>` tokens consumed by earlier calls, so decode steps keep the last image.
        rows_per_context: text rows per context row (B = Bc * rows_per_context, copies contiguous).
        kv_cache: layer index -> (k, v) each (Bc, H, S, Dh); `None` disables caching (training).
    """

    media: torch.Tensor | None
    key_media_index: torch.Tensor
    media_seen: torch.Tensor
    rows_per_context: int = 1
    kv_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = field(default=None)

    def key_values(self, layer_idx: int, project_kv: ProjectKV) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) for one block: from the cache when present, else `project_kv(media)` now (cached if enabled)."""
        if self.kv_cache is not None and layer_idx in self.kv_cache:
            return self.kv_cache[layer_idx]
        if self.media is None:
            raise RuntimeError(f"cross-attention layer {layer_idx} has no cached k/v and the vision tokens were freed")
        kv = project_kv(self.media)
        if self.kv_cache is not None:
            self.kv_cache[layer_idx] = kv
        return kv

    def key_media_index_per_row(self) -> torch.Tensor:
        """(B, S): the key media index repeated for every text row that shares a context row."""
        if self.rows_per_context == 1:
            return self.key_media_index
        return self.key_media_index.repeat_interleave(self.rows_per_context, dim=0)

    def advanced(self, new_media: torch.Tensor, num_cached_layers: int | None = None) -> CrossAttentionContext:
        """The context after a call that consumed `new_media` (B,) more `<image>` tokens.

        When every one of `num_cached_layers` blocks has cached its k/v, the raw vision tokens are dropped.
        """
        media = self.media
        if self.kv_cache is not None and num_cached_layers is not None and len(self.kv_cache) >= num_cached_layers:
            media = None
        return replace(self, media=media, media_seen=self.media_seen + new_media.to(self.media_seen.device))

    def expanded(self, copies: int) -> CrossAttentionContext:
        """Each text row repeated `copies` times (generate's `repeat_interleave`); k/v stay shared."""
        return replace(
            self,
            media_seen=self.media_seen.repeat_interleave(copies, dim=0),
            rows_per_context=self.rows_per_context * copies,
        )


@dataclass
class CrossAttentionInputs:
    """What one forward call hands every cross-attention block (built once per call, not per layer).

    Attributes:
        context: the vision keys.
        mask: (B, 1, T, S) bool, True where a token may attend to a key (see `media_mask.cross_attention_mask`);
            None when every token may attend to every key, and on the varlen (FlashAttention) path.
        row_has_media: (B, T, 1) bool, False for tokens with no image to look at (their block output is zero);
            None when every token has one.
        ffn_rows: (B, T, 1) or (B, 1, 1) bool, the tokens the gated FFN applies to; None when all. Equal to
            `row_has_media` unless `config.ffn_before_first_image` (official per-sample behaviour).
        segments, varlen_kernel: the varlen path's index plan and kernel (`varlen_attention`), else None.
    """

    context: CrossAttentionContext
    mask: torch.Tensor | None
    row_has_media: torch.Tensor | None
    ffn_rows: torch.Tensor | None = None
    segments: VarlenSegments | None = None
    varlen_kernel: Callable | None = None
