"""Decode cost per generated token with 10 crops versus 2 (and 1) crops, same model, same prompt.

What: InfiMM-HD's claim is that high resolution is cheap at generation time, because the vision tokens sit in
cross-attention keys (projected once per prompt and cached) instead of the LLM sequence. A 1344 px image (3x3
windows + thumbnail = 10 crops, 10,250 keys) should then decode almost as fast as a 448 px one (1x1 + thumbnail =
2 crops, 2,050 keys). Target: per-token decode time ratio 10 crops / 2 crops <= 1.10.

How: one model at paper proportions scaled to CPU size (`model_scale.Scale`), one prompt. The 2- and 10-crop variants
go through `model.generate(pixel_values=..., image_grids=...)` (the user path); the 1-crop variant (1,025 keys, the
thumbnail alone, which the processor never produces) hands `generate` a `CrossAttentionContext` built from the first
crop's tokens. Only decode steps are timed (a logits-processor clock, prefill excluded), the variants are
interleaved over several repetitions after a warm-up, and the median per-token time is reported.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_decode_crops.py [--quick] [--new-tokens N] [--reps R]
"""

from __future__ import annotations

import repo_path  # noqa: F401
import torch
from flags import decode_setup
from flop_counts import infimm_decode_bytes, infimm_decode_flops
from model_builders import build_infimm
from model_scale import Scale, paper_scale
from timing import BackgroundLoad, interleaved, median, result_line, spread, timed_generate

from infimm_hd.cross_attention_context import CrossAttentionContext

TARGET = 1.10


def main() -> None:
    args, dtype, scale, new_tokens, reps = decode_setup(__doc__)

    model, tokenizer = build_infimm(scale, dtype, args.seed)
    image_id = model.config.image_token_id
    text = tokenizer("Describe this image in detail, including every small object you can see.")["input_ids"]
    text = (text * args.prompt_tokens)[: args.prompt_tokens - 2]
    input_ids = torch.tensor([[tokenizer.bos_token_id, image_id, *text]])
    attention_mask = torch.ones_like(input_ids)
    prompt_len = input_ids.shape[1]

    gen = torch.Generator().manual_seed(args.seed)
    crops = {10: (3, 3), 2: (1, 1)}
    pixels = {n: torch.randn(n, 3, 448, 448, generator=gen, dtype=dtype) for n in crops}
    grids = {n: torch.tensor([grid]) for n, grid in crops.items()}

    # The 1-crop context: the thumbnail's tokens as they come out of encode_media (window embedding of a thumbnail
    # is zero), packed as a single image's keys.
    per_crop = scale.tokens_per_crop
    with torch.no_grad():
        media_2 = model.encode_media(input_ids, pixels[2], grids[2]).media  # (1, 2 * per_crop, Dv)
    media_1 = media_2[:, :per_crop].contiguous()

    def run_crops(n: int) -> float:
        return timed_generate(
            model.generate,
            new_tokens,
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixels[n],
            image_grids=grids[n],
        )

    def run_one_crop() -> float:
        context = CrossAttentionContext(
            media=media_1,
            key_media_index=torch.ones(1, per_crop, dtype=torch.long),
            media_seen=torch.zeros(1, dtype=torch.long),
            kv_cache={},
        )
        return timed_generate(
            model.generate,
            new_tokens,
            input_ids=input_ids,
            attention_mask=attention_mask,
            cross_attention_context=context,
        )

    runs = {"10 crops": lambda: run_crops(10), "2 crops": lambda: run_crops(2), "1 crop": run_one_crop}
    keys = {"10 crops": 10 * per_crop, "2 crops": 2 * per_crop, "1 crop": per_crop}
    print(f"prompt {prompt_len} tokens, {new_tokens} new tokens per run, {reps} interleaved reps after 1 warm-up")
    with torch.inference_mode(), BackgroundLoad() as load:
        times = interleaved(runs, reps=reps, warmup=1)
    print(load.line())

    context = prompt_len + new_tokens // 2  # average text KV length over the decode steps
    elt = torch.finfo(dtype).bits // 8
    print(f"{'variant':<10} {'keys':>7} {'ms/token':>9} {'(min..max)':>20} {'GFLOP/token':>12} {'MB/token':>9}")
    for name, ts in times.items():
        flops = infimm_decode_flops(scale, context, keys[name]) / 1e9
        mbytes = infimm_decode_bytes(scale, context, keys[name], elt) / 1e6
        print(f"{name:<10} {keys[name]:>7} {median(ts) * 1e3:>9.2f} {spread(ts):>20} {flops:>12.3f} {mbytes:>9.1f}")

    def analytic(s: Scale, many: int, few: int) -> str:
        flops = infimm_decode_flops(s, context, many) / infimm_decode_flops(s, context, few)
        nbytes = infimm_decode_bytes(s, context, many, elt) / infimm_decode_bytes(s, context, few, elt)
        return f"analytic FLOPs {flops:.3f}, bytes {nbytes:.3f}"

    ratio_2 = median(times["10 crops"]) / median(times["2 crops"])
    ratio_1 = median(times["10 crops"]) / median(times["1 crop"])
    print(f"ratio 10 crops / 2 crops: measured {ratio_2:.3f}; {analytic(scale, keys['10 crops'], keys['2 crops'])}")
    print(f"ratio 10 crops / 1 crop:  measured {ratio_1:.3f}; {analytic(scale, keys['10 crops'], keys['1 crop'])}")
    paper = analytic(paper_scale(), 10 * 1025, 2 * 1025)
    print(f"ratio 10 crops / 2 crops at paper scale (Vicuna-13B, 10 blocks of 12 x 64, 1025 tokens/crop): {paper}")
    print(result_line("decode_time_10_vs_2_crops", f"{ratio_2:.3f}x per token", f"<= {TARGET:.2f}x", ratio_2 <= TARGET))


if __name__ == "__main__":
    main()
