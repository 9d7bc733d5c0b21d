"""Analytic costs the benchmarks print beside their measurements: matmul FLOPs (2 per multiply-add) of the decoder
layers, cross-attention blocks and LM head, and the bytes one decode step reads.

Why analytic: a measured ratio is only convincing next to the ratio the shapes predict, at CPU size and at the
paper's size (`model_scale.paper_scale`).
"""

from __future__ import annotations

from model_scale import Scale


def llm_layer_flops(scale: Scale, new: int, past: int = 0, causal: bool = True) -> float:
    """One decoder layer on `new` tokens with `past` cached ones: projections, MLP, and QK^T + AV.

    With `causal` the attention term counts only the unmasked (lower-triangular) scores, which is what a
    flash-style causal kernel computes.
    """
    d, f = scale.hidden, scale.intermediate
    proj = 2 * new * (4 * d * d + 3 * d * f)
    scores = new * past + new * (new + 1) / 2 if causal else new * (past + new)
    return proj + 2 * 2 * scores * d


def xattn_block_flops(scale: Scale, text: int, keys: int, with_kv_projection: bool) -> float:
    """One gated cross-attention block: to_q, (to_kv over the keys), QK^T + AV, to_out, FFN (mult 1)."""
    d, inner, dv = scale.hidden, scale.xattn_inner, scale.vision_width
    flops = 2 * text * d * inner * 2 + 2 * 2 * text * keys * inner + 2 * text * d * d * 2
    if with_kv_projection:
        flops += 2 * keys * dv * 2 * inner
    return flops


def lm_head_flops(scale: Scale, tokens: int) -> float:
    return 2 * tokens * scale.hidden * scale.vocab


def infimm_decode_flops(scale: Scale, context: int, keys: int) -> float:
    """Matmul FLOPs of one InfiMM-HD decode step: every layer on 1 new token over `context` cached ones, every block
    on 1 query over `keys` cached k/v (to_kv is not rerun), the LM head."""
    layers = scale.layers * llm_layer_flops(scale, new=1, past=context)
    blocks = scale.num_xattn * xattn_block_flops(scale, text=1, keys=keys, with_kv_projection=False)
    return layers + blocks + lm_head_flops(scale, 1)


def infimm_decode_bytes(scale: Scale, context: int, keys: int, elt: int) -> float:
    """Bytes one InfiMM-HD decode step must read: the weights it uses, the text KV cache, the cached block k/v.

    On CPU a one-token step is bound by memory traffic rather than arithmetic, so this is the better predictor.
    """
    d, f, inner = scale.hidden, scale.intermediate, scale.xattn_inner
    weights = scale.layers * (4 * d * d + 3 * d * f) + d * scale.vocab
    weights += scale.num_xattn * (2 * d * inner + 2 * d * d)
    caches = scale.layers * 2 * context * d + scale.num_xattn * 2 * keys * inner
    return (weights + caches) * elt
