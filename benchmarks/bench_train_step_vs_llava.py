"""One training step (forward + backward) with cross-attention versus LLaVA-style token concatenation.

What: at 1344x1344 (3x3 windows + thumbnail = 10 crops) a LLaVA-style model puts every vision token into the LLM
sequence, so each of its decoder layers runs over text + vision tokens (and attention grows quadratically), while
InfiMM-HD keeps the LLM sequence at the text length and lets a few gated cross-attention blocks read the vision
tokens. Target: our training step >= 5x faster.

Both sides share the same LLM shape (paper proportions scaled to CPU size, see `model_scale.Scale`), the same vision
tokens, a 128-token text (the paper's stage 2/3 LLM sequence length) and a loss on the text tokens only:

* InfiMM-HD: `model(input_ids=..., cross_attention_context=ctx, labels=...)` with the context built directly from
  the vision tokens (`kv_cache=None`, as in training); the cross-attention blocks are trained.
* LLaVA: a linear projector (vision width -> hidden) whose outputs replace the `<image>` token in `inputs_embeds`;
  the projector is trained; the LM head runs on the text positions only (the cheapest fair baseline).

In both the LLM is frozen (stages 2-3), but backward still flows through it: through every layer in LLaVA (the
projector sits at the input), through the layers from the first cross-attention block up in ours. The ViT is left
out of both (its cost is identical in the two designs): the vision tokens are precomputed random tensors of the
right shape, at the paper's count by default (10 x 1025 = 10,250 vision tokens: ~32 s per LLaVA step on a 2-core
CPU, ~2.5 min in all); `--quick` and `--tokens-per-crop 257` (patch 28, 2,570 tokens) scale it down. The analytic
FLOP ratio is printed next to the measured one, also at paper scale.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_train_step_vs_llava.py [--quick] [--tokens-per-crop N] [--reps R]
"""

from __future__ import annotations

import argparse
import time

import repo_path  # noqa: F401
import torch
import torch.nn.functional as F
from flags import DTYPES, add_common_args, setup_torch
from flop_counts import llm_layer_flops, lm_head_flops
from machine import machine_line
from model_builders import build_infimm, build_llm, num_params
from model_scale import PATCH_FOR_TOKENS, Scale, paper_scale, scale_from_args
from timing import BackgroundLoad, interleaved, median, result_line
from torch import nn

from infimm_hd.cross_attention_context import CrossAttentionContext

TARGET = 5.0
CROPS = 10  # 3x3 windows + thumbnail


def attention_core_flops(scale: Scale, tokens: int) -> float:
    """Causal QK^T + AV of one layer over `tokens` (the lower triangle only, as flash-style kernels compute)."""
    return 2 * 2 * scale.hidden * tokens * (tokens + 1) / 2


def train_step_flops(scale: Scale, text: int, vision: int, design: str) -> tuple[float, float]:
    """(forward, backward) matmul FLOPs of one step with the LLM frozen.

    Backward rules: a frozen linear costs 1x its forward (input gradient only), a trained one 2x (input + weight),
    a linear whose input needs no gradient and whose weight is trained 1x; the attention core costs 2x its forward.
    A layer that no gradient has to cross costs nothing.
    """
    d, inner, dv = scale.hidden, scale.xattn_inner, scale.vision_width
    if design == "llava":
        tokens = text + vision
        proj = 2 * vision * dv * d
        layer = llm_layer_flops(scale, new=tokens)
        core = attention_core_flops(scale, tokens)
        fwd = proj + scale.layers * layer + lm_head_flops(scale, text)
        bwd = proj + scale.layers * ((layer - core) + 2 * core) + lm_head_flops(scale, text)
        return fwd, bwd
    first_block = scale.xattn_every - 1
    layer = llm_layer_flops(scale, new=text)
    core = attention_core_flops(scale, text)
    to_kv = 2 * vision * dv * 2 * inner
    block_linear = 2 * text * d * inner * 2 + 2 * text * d * d * 2  # to_q, to_out, FFN (mult 1)
    block_core = 2 * 2 * text * vision * inner
    fwd = scale.layers * layer + scale.num_xattn * (to_kv + block_linear + block_core) + lm_head_flops(scale, text)
    layers_crossed = scale.layers - first_block
    bwd = layers_crossed * ((layer - core) + 2 * core) + lm_head_flops(scale, text)
    bwd += scale.num_xattn * (to_kv + 2 * block_linear + 2 * block_core)
    return fwd, bwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument(
        "--tokens-per-crop",
        type=int,
        choices=sorted(PATCH_FOR_TOKENS),
        default=None,
        help="vision tokens per 448 crop: 1025 (default, as the paper), 257 (--quick), 65",
    )
    parser.add_argument("--text-tokens", type=int, default=128, help="text length (paper stage 2/3: 128)")
    args = parser.parse_args()
    setup_torch(args.threads, args.seed)
    dtype = DTYPES[args.dtype]
    per_crop = args.tokens_per_crop or (257 if args.quick else 1025)
    reps = args.reps or (1 if args.quick else 3)
    scale = scale_from_args(args, patch_size=PATCH_FOR_TOKENS[per_crop])
    vision_tokens = CROPS * scale.tokens_per_crop
    text_len = args.text_tokens
    print(machine_line(dtype))
    print(scale.describe())
    print(
        f"image 1344x1344 = {CROPS} crops x {scale.tokens_per_crop} tokens = {vision_tokens} vision tokens "
        f"(paper: 10 x 1025 = 10250); text {text_len} tokens; ViT excluded from both (identical cost)"
    )

    # InfiMM-HD: the package's model; LLM (and ViT) frozen, cross-attention blocks trained.
    ours, tokenizer = build_infimm(scale, dtype, args.seed)
    ours.train().requires_grad_(False)
    for block in ours.cross_attention_blocks().values():
        block.requires_grad_(True)
    # LLaVA: the same LLM shape, a trained linear projector, LLM frozen.
    llava = build_llm(scale, dtype, args.seed).train().requires_grad_(False)
    projector = nn.Linear(scale.vision_width, scale.hidden).to(dtype)
    trained = {
        "InfiMM-HD": [p for p in ours.parameters() if p.requires_grad],
        "LLaVA": list(projector.parameters()),
    }
    print(
        f"trained params: InfiMM-HD cross-attention blocks {sum(p.numel() for p in trained['InfiMM-HD']) / 1e6:.2f}M, "
        f"LLaVA projector {sum(p.numel() for p in trained['LLaVA']) / 1e6:.2f}M; frozen LLM "
        f"{num_params(llava) / 1e6:.1f}M"
    )

    gen = torch.Generator().manual_seed(args.seed)
    vision = torch.randn(1, vision_tokens, scale.vision_width, generator=gen).to(dtype)  # precomputed ViT output
    text = torch.randint(3, 256, (1, text_len - 2), generator=gen)
    bos = torch.tensor([[tokenizer.bos_token_id]])
    ours_ids = torch.cat([bos, torch.tensor([[ours.config.image_token_id]]), text], dim=1)  # (1, text_len)
    ours_labels = ours_ids.clone()
    ours_labels[:, 1] = -100  # no loss on the <image> token; loss on the other text_len - 1 tokens
    llava_text = torch.cat([bos, text], dim=1)  # the <image> token is replaced by the vision tokens

    def step_ours() -> float:
        for p in trained["InfiMM-HD"]:
            p.grad = None
        start = time.perf_counter()
        context = CrossAttentionContext(
            media=vision,
            key_media_index=torch.ones(1, vision_tokens, dtype=torch.long),
            media_seen=torch.zeros(1, dtype=torch.long),
            kv_cache=None,
        )
        loss = ours(input_ids=ours_ids, cross_attention_context=context, labels=ours_labels, use_cache=False).loss
        loss.backward()
        return time.perf_counter() - start

    def step_llava() -> float:
        for p in trained["LLaVA"]:
            p.grad = None
        start = time.perf_counter()
        embeds = llava.get_input_embeddings()(llava_text)  # (1, text_len - 1, D)
        inputs = torch.cat([embeds[:, :1], projector(vision), embeds[:, 1:]], dim=1)  # BOS, image, text
        hidden = llava.model(inputs_embeds=inputs, use_cache=False).last_hidden_state
        text_hidden = torch.cat([hidden[:, :1], hidden[:, 1 + vision_tokens :]], dim=1)  # (1, text_len - 1, D)
        logits = llava.lm_head(text_hidden[:, :-1]).float()
        loss = F.cross_entropy(logits.flatten(0, 1), llava_text[:, 1:].flatten())
        loss.backward()
        return time.perf_counter() - start

    print(f"{reps} interleaved reps after 1 warm-up each (timed: forward + backward; no optimizer step)")
    with BackgroundLoad() as load:
        times = interleaved({"InfiMM-HD": step_ours, "LLaVA": step_llava}, reps=reps, warmup=1)
    print(load.line())
    assert all(p.grad is not None for p in trained["InfiMM-HD"] + trained["LLaVA"]), "a trained parameter got no grad"

    analytic = {  # LLaVA's sequence: the text without its <image> token, plus the vision tokens
        "InfiMM-HD": train_step_flops(scale, text_len, vision_tokens, "ours"),
        "LLaVA": train_step_flops(scale, text_len - 1, vision_tokens, "llava"),
    }
    print(f"{'design':<10} {'LLM seq':>8} {'s/step':>8} {'(min..max s)':>16} {'TFLOP fwd+bwd':>14} {'TFLOP/s':>8}")
    seq = {"InfiMM-HD": text_len, "LLaVA": text_len - 1 + vision_tokens}
    for name, ts in times.items():
        total = sum(analytic[name]) / 1e12
        print(
            f"{name:<10} {seq[name]:>8} {median(ts):>8.3f} {f'{min(ts):.3f}..{max(ts):.3f}':>16} {total:>14.3f} "
            f"{total / median(ts):>8.2f}"
        )
    speedup = median(times["LLaVA"]) / median(times["InfiMM-HD"])
    flop_ratio = sum(analytic["LLaVA"]) / sum(analytic["InfiMM-HD"])
    paper = paper_scale()
    paper_ratio = sum(train_step_flops(paper, text_len - 1, 10 * 1025, "llava")) / sum(
        train_step_flops(paper, text_len, 10 * 1025, "ours")
    )
    print(f"speed-up ours vs LLaVA: measured {speedup:.2f}x, analytic FLOPs {flop_ratio:.2f}x at this size")
    print(
        f"analytic FLOP ratio at paper scale (Vicuna-13B, 10 x 1025 vision tokens, text {text_len}): {paper_ratio:.1f}x"
    )
    print(result_line("train_step_speedup_vs_llava", f"{speedup:.2f}x", f">= {TARGET:.0f}x", speedup >= TARGET))


if __name__ == "__main__":
    main()
