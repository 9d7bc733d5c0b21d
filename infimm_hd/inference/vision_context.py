"""Encode images once: the ViT and every cross-attention block's k/v, computed eagerly and then reused.

Why eagerly: `model.generate(pixel_values=...)` projects each block's k/v lazily during the prefill, which mixes
vision work into the "prefill" time and, for a session, would leave the raw vision tokens alive. Here the context
leaves this module with every block's (k, v) cached and the raw tokens freed, so later calls (fresh or session)
only read it, and the timings separate vision from language work.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..cross_attention_context import CrossAttentionContext


@torch.no_grad()
def encode_context(
    model, input_ids: torch.Tensor, pixel_values: torch.Tensor, image_grids: torch.Tensor
) -> CrossAttentionContext:
    """Vision context of a batch of prompts with every block's k/v filled; `media_seen` starts at 0.

    input_ids (B, T) say which prompt each image belongs to (one `<image>` token per image);
    pixel_values (N, 3, S, S) and image_grids (I, 2) as the processor returns them.
    """
    device = model.device
    context = model.encode_media(input_ids.to(device), pixel_values.to(device), image_grids.to(device), cache_kv=True)
    for layer_idx, block in model.cross_attention_blocks().items():
        context.key_values(layer_idx, block.attn.project_kv)  # (Bc, H, S, Dh) each, stored in context.kv_cache
    return replace(context, media=None)


def context_after(context: CrossAttentionContext, media_seen: int | torch.Tensor) -> CrossAttentionContext:
    """The same vision context for text rows that already consumed `media_seen` `<image>` tokens (a cached prefix).

    Only the bookkeeping changes; the cached k/v are shared, never copied.
    """
    seen = torch.as_tensor(media_seen, dtype=context.media_seen.dtype, device=context.media_seen.device)
    return replace(context, media_seen=seen.expand_as(context.media_seen).clone())
