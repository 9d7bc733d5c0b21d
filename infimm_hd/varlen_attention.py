"""Cross-attention as variable-length segments, for `flash_attn_varlen_func` on GPUs.

Shape legend
    B   text rows     T   text tokens     Bc  context rows (B = Bc * r)     S   keys per context row
    H   heads         Dh  head dim        Nq  text tokens that see an image  Nk  keys gathered for them

With `only_attend_immediate_media`, every text token attends to exactly one image, and the tokens that attend to
image m of a row are one contiguous run (text time only grows along the sequence); that image's keys are one
contiguous run of its context row too. So the masked attention is a set of independent dense attentions, one per
(row, image) pair: exactly what FlashAttention's varlen kernel computes without any mask tensor. SDPA with a boolean
mask (the default path) cannot use the flash kernel and materialises a (B, 1, T, S) mask; this path needs neither.

`flash_attn` is optional; `varlen_attention_reference` runs the same segments with plain SDPA so the packing logic
is tested on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class VarlenSegments:
    """Index plan of one forward call (shared by every cross-attention block).

    Attributes:
        q_index: (Nq,) flat indices into the (B * T) text tokens that attend to an image, segment by segment.
        k_index: (Nk,) flat indices into the (Bc * S) keys, the keys of each segment's image, segment by segment.
        cu_q, cu_k: (num_segments + 1,) int32 cumulative segment lengths (FlashAttention's `cu_seqlens`).
        max_q, max_k: longest segments.
    """

    q_index: torch.Tensor
    k_index: torch.Tensor
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    max_q: int
    max_k: int


def varlen_segments(times: torch.Tensor, key_media_index: torch.Tensor, rows_per_context: int = 1) -> VarlenSegments:
    """Build the segments from text times (B, T) and the key media index (Bc, S) of the context rows."""
    B, T = times.shape
    S = key_media_index.shape[1]
    device = times.device
    flat_times = times.reshape(-1)
    q_index = (flat_times > 0).nonzero().flatten()  # row-major = sorted by (row, image)
    row = q_index // T
    seg_key = row * (int(times.max().clamp(min=0)) + 1) + flat_times[q_index]
    _, q_counts = torch.unique_consecutive(seg_key, return_counts=True)
    starts = torch.cumsum(q_counts, 0) - q_counts
    seg_row = row[starts]
    seg_media = flat_times[q_index][starts]

    k_parts, k_counts = [], []
    for r_, m in zip(seg_row.tolist(), seg_media.tolist(), strict=True):
        c = r_ // rows_per_context
        keys = (key_media_index[c] == m).nonzero().flatten()
        if keys.numel() == 0:
            raise ValueError(f"text row {r_} attends to image {m}, which has no keys")
        k_parts.append(keys + c * S)
        k_counts.append(keys.numel())
    k_index = torch.cat(k_parts) if k_parts else torch.zeros(0, dtype=torch.long, device=device)
    k_counts_t = torch.tensor(k_counts, dtype=torch.int32, device=device)
    zero = torch.zeros(1, dtype=torch.int32, device=device)
    return VarlenSegments(
        q_index=q_index,
        k_index=k_index,
        cu_q=torch.cat([zero, torch.cumsum(q_counts, 0).to(torch.int32)]),
        cu_k=torch.cat([zero, torch.cumsum(k_counts_t, 0).to(torch.int32)]),
        max_q=int(q_counts.max()) if q_counts.numel() else 0,
        max_k=max(k_counts, default=0),
    )


def varlen_attention_reference(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False):
    """`flash_attn_varlen_func`'s contract on (total, H, Dh) tensors, computed per segment with SDPA (CPU tests)."""
    out = torch.empty_like(q)
    for i in range(len(cu_q) - 1):
        qs, qe, ks, ke = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        seg = F.scaled_dot_product_attention(
            q[qs:qe].transpose(0, 1), k[ks:ke].transpose(0, 1), v[ks:ke].transpose(0, 1), scale=softmax_scale
        )
        out[qs:qe] = seg.transpose(0, 1)
    return out


def flash_varlen_kernel():
    """`flash_attn.flash_attn_varlen_func`, or a clear error saying how to get it."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise ImportError(
            "cross_attention_implementation='flash_attention_2' needs the flash-attn package "
            "(pip install 'infimm-hd[flash]') and a CUDA GPU; use 'sdpa' otherwise"
        ) from err
    return flash_attn_varlen_func


def segmented_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: VarlenSegments, kernel=None
) -> torch.Tensor:
    """q (B, H, T, Dh), k/v (Bc, H, S, Dh) -> (B, H, T, Dh); tokens without an image get zeros."""
    B, H, T, Dh = q.shape
    kernel = kernel or flash_varlen_kernel()
    q_flat = q.transpose(1, 2).reshape(B * T, H, Dh)[segments.q_index]  # (Nq, H, Dh)
    k_flat = k.transpose(1, 2).reshape(-1, H, Dh)[segments.k_index]  # (Nk, H, Dh)
    v_flat = v.transpose(1, 2).reshape(-1, H, Dh)[segments.k_index]
    out = kernel(
        q_flat,
        k_flat,
        v_flat,
        segments.cu_q,
        segments.cu_k,
        segments.max_q,
        segments.max_k,
        softmax_scale=Dh**-0.5,
        causal=False,
    )
    full = q.new_zeros(B * T, H, Dh)
    full[segments.q_index] = out.to(full.dtype)
    return full.reshape(B, T, H, Dh).transpose(1, 2)
