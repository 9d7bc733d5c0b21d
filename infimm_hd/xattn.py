"""The gated cross-attention block (paper structure) and the wrapper that puts it before a decoder layer.

Shape legend
    B   text rows           T   text tokens in this call        D   LLM hidden size
    Bc  context rows (images are stored once per prompt; B = Bc * r when generate() expands a prompt r times)
    S   vision keys per context row                             Dv  vision width
    H   cross-attention heads                                   Dh  head dim (paper 12 x 64)

Block (paper / official code):
    x = x + has_media * tanh(attn_gate) * to_out(attn(to_q(LN(x)), to_kv(media)))
    x = x + has_media * tanh(ff_gate)   * FFN(x)            FFN = LN -> Linear -> GELU -> Linear
LayerNorm only on the text stream, no biases in the projections, per-channel gates initialised at zero so the block
is the identity at initialisation. `has_media` zeroes both terms for tokens with no image to look at.

Sub-module names mirror the official checkpoint (`attn.norm`, `attn.to_q`, `attn.to_kv`, `attn.to_out`, `ff.0/1/3`,
`attn_gate`, `ff_gate`) so converting it is a key rename.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .cross_attention_context import CrossAttentionInputs
from .varlen_attention import segmented_cross_attention


@dataclass(frozen=True)
class CrossAttentionBlockConfig:
    text_dim: int
    vision_dim: int
    heads: int = 12
    head_dim: int = 64
    ff_mult: float = 1.0
    norm_eps: float = 1e-5

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def ff_dim(self) -> int:
        return int(round(self.text_dim * self.ff_mult))


class MaskedCrossAttention(nn.Module):
    """Text queries attend to vision keys/values under a media mask; scaled_dot_product_attention does the work."""

    def __init__(self, cfg: CrossAttentionBlockConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.norm = nn.LayerNorm(cfg.text_dim, eps=cfg.norm_eps)
        self.to_q = nn.Linear(cfg.text_dim, cfg.inner_dim, bias=False)
        self.to_kv = nn.Linear(cfg.vision_dim, 2 * cfg.inner_dim, bias=False)
        self.to_out = nn.Linear(cfg.inner_dim, cfg.text_dim, bias=False)

    def project_kv(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """media (Bc, S, Dv) -> k, v each (Bc, H, S, Dh). Done once per prompt when generating."""
        k, v = self.to_kv(media.to(self.to_kv.weight.dtype)).chunk(2, dim=-1)
        split = "b s (h d) -> b h s d"
        # Contiguous copies (once per prompt): CPU SDPA decodes ~1.9x slower over the strided views of the chunk.
        return rearrange(k, split, h=self.heads).contiguous(), rearrange(v, split, h=self.heads).contiguous()

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, xattn: CrossAttentionInputs) -> torch.Tensor:
        """x (B, T, D), k/v (Bc, H, S, Dh) -> (B, T, D), masked by `xattn` (dense mask or varlen segments)."""
        B, T, _ = x.shape
        q = self.to_q(self.norm(x)).to(k.dtype)
        if xattn.segments is not None:  # FlashAttention varlen: one dense attention per (row, image) segment
            q = rearrange(q, "b t (h d) -> b h t d", h=self.heads)
            out = segmented_cross_attention(q, k, v, xattn.segments, xattn.varlen_kernel)
            return self.to_out(rearrange(out, "b h t d -> b t (h d)").to(x.dtype))
        r = B // k.shape[0]  # prompt copies per context row (num_return_sequences / beams); rows are contiguous
        q = rearrange(q, "(bc r) t (h d) -> bc h (r t) d", r=r, h=self.heads)
        mask = None if xattn.mask is None else rearrange(xattn.mask, "(bc r) one t s -> bc one (r t) s", r=r)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (Bc, H, r*T, Dh)
        out = rearrange(out, "bc h (r t) d -> (bc r) t (h d)", r=r, t=T).to(x.dtype)
        return self.to_out(out)


class GatedCrossAttentionBlock(GradientCheckpointingLayer):
    """Gated cross-attention + gated FFN, inserted before a decoder layer. Checkpointed as its own unit."""

    def __init__(self, cfg: CrossAttentionBlockConfig):
        super().__init__()
        self.attn = MaskedCrossAttention(cfg)
        self.attn_gate = nn.Parameter(torch.zeros(cfg.text_dim))
        self.ff = nn.Sequential(
            nn.LayerNorm(cfg.text_dim, eps=cfg.norm_eps),
            nn.Linear(cfg.text_dim, cfg.ff_dim, bias=False),
            nn.GELU(),
            nn.Linear(cfg.ff_dim, cfg.text_dim, bias=False),
        )
        self.ff_gate = nn.Parameter(torch.zeros(cfg.text_dim))

    def forward(self, x: torch.Tensor, xattn: CrossAttentionInputs, layer_idx: int) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). Keys come from the per-call `xattn` inputs, never from state on this module."""
        k, v = xattn.context.key_values(layer_idx, self.attn.project_kv)
        attn_out = torch.tanh(self.attn_gate) * self.attn(x, k, v, xattn)
        if xattn.row_has_media is not None:
            attn_out = attn_out * xattn.row_has_media.to(x.dtype)  # (B, T, 1): zero for tokens with no image
        x = x + attn_out
        ff_out = torch.tanh(self.ff_gate) * self.ff(x)
        if xattn.ffn_rows is not None:
            ff_out = ff_out * xattn.ffn_rows.to(x.dtype)
        return x + ff_out


class CrossAttentionDecoderLayer(nn.Module):
    """An explicit wrapper: gated cross-attention first, then the LLM's own, unchanged decoder layer.

    The wrapped layer keeps its class, its weights and its call signature; this module only adds the block in front
    (the official code's order: cross-attention sits before decoder layers 3, 7, ...). The vision inputs arrive as
    the `cross_attention` keyword that `InfiMMHDForConditionalGeneration.forward` passes through the LLM; the LLM's
    own kwargs pass through untouched. With no vision inputs the block is skipped and the layer is exactly the LLM's.
    """

    def __init__(self, decoder_layer: nn.Module, cross_attn: GatedCrossAttentionBlock, layer_idx: int):
        super().__init__()
        self.cross_attn = cross_attn
        self.decoder_layer = decoder_layer
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args, cross_attention: CrossAttentionInputs | None = None, **kw):
        if cross_attention is not None:
            hidden_states = self.cross_attn(hidden_states, cross_attention, self.layer_idx)
        return self.decoder_layer(hidden_states, *args, **kw)
