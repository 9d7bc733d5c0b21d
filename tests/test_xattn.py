"""The gated cross-attention block against an independent einsum re-implementation of the official formula."""

from __future__ import annotations

import torch

from infimm_hd.cross_attention_context import CrossAttentionContext, CrossAttentionInputs
from infimm_hd.media_mask import cross_attention_mask, text_time
from infimm_hd.xattn import CrossAttentionBlockConfig, GatedCrossAttentionBlock

IMG = 9


def official_reference(block, x, media, times, key_media):
    """Flamingo/InfiMM-style block written with einsum and an explicit masked softmax (max-subtracted)."""
    a = block.attn
    h = a.heads
    q = a.to_q(a.norm(x))
    k, v = a.to_kv(media).chunk(2, dim=-1)
    B, T, _ = q.shape
    q = q.view(B, T, h, -1).transpose(1, 2) * a.head_dim**-0.5
    k = k.view(B, -1, h, a.head_dim).transpose(1, 2)
    v = v.view(B, -1, h, a.head_dim).transpose(1, 2)
    sim = torch.einsum("bhid,bhjd->bhij", q, k)
    allowed = (key_media[:, None, None, :] == times[:, None, :, None]) & (times[:, None, :, None] > 0)
    sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    attn = sim.softmax(dim=-1)
    attn = attn.masked_fill(~allowed.any(-1, keepdim=True), 0.0)  # text before any image gets nothing
    out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(B, T, -1)
    has = (times > 0)[..., None].float()
    x = x + has * a.to_out(out) * block.attn_gate.tanh()
    x = x + has * block.ff(x) * block.ff_gate.tanh()
    return x


def make_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = CrossAttentionBlockConfig(text_dim=24, vision_dim=12, heads=3, head_dim=8)
    torch.manual_seed(seed)
    block = GatedCrossAttentionBlock(cfg)
    ids = torch.tensor([[1, 2, IMG, 3, 4, IMG, 5, 6], [1, 1, 1, 1, 1, 1, 1, 1], [IMG, 3, 3, 3, 3, 3, 3, 3]])
    # keys: sample 0 has images of 5 and 3 keys, sample 1 none (all padding), sample 2 one image of 4 keys
    key_media = torch.tensor([[1] * 5 + [2] * 3, [0] * 8, [1] * 4 + [0] * 4])
    media = torch.randn(3, 8, 12, generator=g)
    x = torch.randn(3, 8, 24, generator=g)
    return block, ids, key_media, media, x


def run_block(block, ids, key_media, media, x):
    times = text_time(ids, IMG)
    mask, row = cross_attention_mask(times, key_media)
    ctx = CrossAttentionContext(media=media, key_media_index=key_media, media_seen=torch.zeros(3, dtype=torch.long))
    return block(x, CrossAttentionInputs(ctx, mask, row, ffn_rows=row), layer_idx=0)


def test_zero_gates_are_exact_identity():
    block, ids, key_media, media, x = make_case()
    assert torch.equal(run_block(block, ids, key_media, media, x), x)


def test_matches_official_formula_with_nonzero_gates():
    block, ids, key_media, media, x = make_case()
    with torch.no_grad():
        block.attn_gate.normal_()
        block.ff_gate.normal_()
    ours = run_block(block, ids, key_media, media, x)
    ref = official_reference(block, x, media, text_time(ids, IMG), key_media)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # Tokens with no image (before the first <image>, or a sample without images) are untouched, attention and FFN.
    assert torch.equal(ours[0, :2], x[0, :2])
    assert torch.equal(ours[1], x[1])
    assert not torch.allclose(ours[0, 2:], x[0, 2:])


def test_padding_keys_are_ignored():
    block, ids, key_media, media, x = make_case()
    with torch.no_grad():
        block.attn_gate.normal_()
    media2 = media.clone()
    media2[2, 4:] = 1e3  # padding keys of sample 2
    assert torch.equal(run_block(block, ids, key_media, media, x), run_block(block, ids, key_media, media2, x))


def test_expanded_context_shares_keys_across_copies():
    block, ids, key_media, media, x = make_case()
    with torch.no_grad():
        block.attn_gate.normal_()
    single = run_block(block, ids, key_media, media, x)
    r = 3
    ctx = CrossAttentionContext(media, key_media, torch.zeros(3, dtype=torch.long)).expanded(r)
    ids_r, x_r = ids.repeat_interleave(r, 0), x.repeat_interleave(r, 0)
    mask, row = cross_attention_mask(text_time(ids_r, IMG), ctx.key_media_index_per_row())
    out = block(x_r, CrossAttentionInputs(ctx, mask, row, ffn_rows=row), layer_idx=0)
    assert torch.allclose(out, single.repeat_interleave(r, 0), atol=1e-6)


def test_varlen_segments_path_matches_the_masked_sdpa_path(monkeypatch):
    """The FlashAttention varlen packing, run with an SDPA stand-in for the kernel, equals the dense-mask path."""
    from conftest import make_image, randomize_gates

    import infimm_hd
    import infimm_hd.modeling as modeling
    from infimm_hd.varlen_attention import varlen_attention_reference

    model, processor = infimm_hd.build_model("tiny")
    randomize_gates(model)
    prompts = ["a <image> b <image> c", "<image> only one", "no image at all"]
    inputs = processor(text=prompts, images=[[make_image(1, 0), make_image(4, 1)], [make_image(9, 2)], []])
    with torch.no_grad():
        dense = model(**inputs).logits
        monkeypatch.setattr(modeling, "flash_varlen_kernel", lambda: varlen_attention_reference)
        model.config.cross_attention_implementation = "flash_attention_2"
        packed = model(**inputs).logits
        gen_packed = model.generate(
            **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, num_return_sequences=2, num_beams=2
        )
        model.config.cross_attention_implementation = "sdpa"
        gen_dense = model.generate(
            **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, num_return_sequences=2, num_beams=2
        )
    assert torch.allclose(dense, packed, atol=1e-5), (dense - packed).abs().max()
    assert torch.equal(gen_dense, gen_packed)
