"""Latency of a follow-up question in an image session versus a fresh call, on a 1344x1344 image (9 windows).

What: a chat about one image asks several questions. A fresh call (`infimm_hd.stream(..., history=...)`, what a
stateless client does) decodes and tiles the image again, runs the ViT over 10 crops, projects every block's
cross-attention k/v and prefills the whole conversation. A session follow-up (`session.chat(...)`) does none of
that: the image was encoded at `open_image`, and the conversation so far sits in the reused text KV cache, so only
the new question's tokens are prefilled before decoding. Target: follow-up latency >= 3x lower.

How: SmolLM2-135M (the real LLM, de-quantised from the shipped GGUF) with a random ViT. By default the ViT has the
paper's size relative to the LLM (`--tower paper-ratio`: EVA02-CLIP-E : Vicuna-13B ~ 0.34; here 24 layers x 384 wide
= 43M parameters, 1,025 tokens per 448 crop, 10,250 keys over 10 crops), in bf16 (AMX matmuls). `--tower preset` uses
the `smollm2-135m` preset's toy ViT instead (4 layers x 192, 2.3M parameters, 257 tokens per crop): at 1/60 of the
LLM it costs about as much as three decoded tokens, so a session saves little there beyond the first token. The
image is a JPEG in memory, so neither side pays for the disk. One first turn is answered in a session (untimed);
each repetition then asks the same follow-up either fresh, with the first turn as history, or in a `fork()` of that
session (the same state every time), interleaved (A B, B A, ...) after a warm-up. Both produce exactly
`--new-tokens` tokens (min = max) and the answers are checked equal. Medians are reported; the per-phase figures come
from the streams' `.timings`, and the speedup is projected to other answer lengths from the measured phases.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_session.py                    # ~3 min on 2 loaded cores
    PYTHONPATH=. .venv/bin/python benchmarks/bench_session.py --quick            # 2 repetitions, ~1.5 min
    PYTHONPATH=. .venv/bin/python benchmarks/bench_session.py --tower preset --dtype fp32
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import repo_path  # noqa: F401
import torch
from flags import DTYPES, setup_torch
from machine import machine_line
from model_builders import num_params
from PIL import Image
from timing import BackgroundLoad, interleaved, median, result_line

import infimm_hd
from infimm_hd import InfiMMHDVisionConfig, from_components
from infimm_hd.image_processing import InfiMMHDImageProcessor
from infimm_hd.presets import load_smollm2
from infimm_hd.processing import InfiMMHDProcessor
from infimm_hd.vision_tower import VisionTower

TARGET = 3.0
FIRST_QUESTION = "What is in this picture?"
FOLLOW_UP = "What colour is the thing in the top left corner?"
# Paper ratio: EVA02-CLIP-E (~4.4B) / Vicuna-13B ~ 0.34 of the LLM's parameters; 1,025 tokens per 448 crop.
PAPER_RATIO_TOWER = dict(patch_size=14, width=384, depth=24, num_heads=6, mlp_ratio=4.0)


def build(tower: str, dtype: torch.dtype):
    """(model, processor): the smollm2-135m preset, or SmolLM2-135M with a paper-ratio ViT."""
    if tower == "preset":
        model, processor = infimm_hd.build_model("smollm2-135m", seed=0)
    else:
        llm, tokenizer = load_smollm2()
        torch.manual_seed(1)
        vision = VisionTower(InfiMMHDVisionConfig(backend="timm", image_size=448, **PAPER_RATIO_TOWER))
        torch.manual_seed(2)
        model = from_components(llm, vision, tokenizer, cross_attention_heads=6, cross_attention_head_dim=64).eval()
        image_processor = InfiMMHDImageProcessor(window_size=448, max_windows=model.config.max_windows_inference)
        processor = InfiMMHDProcessor(image_processor, tokenizer)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # small non-zero gates: the answer depends on the image, the text stays fluent
        for block in model.cross_attention_blocks().values():
            block.attn_gate.copy_(0.05 * torch.randn(block.attn_gate.shape, generator=g))
            block.ff_gate.copy_(0.05 * torch.randn(block.ff_gate.shape, generator=g))
    return model.to(dtype).eval(), processor


def jpeg_1344(seed: int = 0) -> bytes:
    """A 1344x1344 photo-like JPEG (smooth gradients + blocks): 3x3 windows + thumbnail = 10 crops."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(42, 42, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((1344, 1344), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="both sides (default bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=8, help="answer length, both sides (default 8: short VQA)")
    parser.add_argument("--tower", choices=["preset", "paper-ratio"], default="paper-ratio", help="the ViT (see above)")
    args = parser.parse_args()
    setup_torch(args.threads)
    dtype = DTYPES[args.dtype]
    reps = args.reps or (2 if args.quick else 5)
    model, processor = build(args.tower, dtype)
    print(machine_line(dtype))
    tokens_per_crop = model.vision_tower(torch.zeros(1, 3, 448, 448)).shape[1]
    print(
        f"model: SmolLM2-135M ({num_params(model.language_model) / 1e6:.1f}M with blocks) + {args.tower} ViT "
        f"({num_params(model.vision_tower) / 1e6:.1f}M, {tokens_per_crop} tokens per crop); image 1344x1344 JPEG, "
        f"max_windows 9; {args.new_tokens} new tokens per answer; {reps} repetitions"
    )

    image = jpeg_1344()
    kw = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    base = infimm_hd.open_image(model, processor, image, max_windows=9)
    first_answer = base.chat(FIRST_QUESTION, **kw)
    history = list(base.history)
    print(
        f"session opened: image {base.image_s * 1e3:.0f} ms, vision (ViT + k/v) {base.vision_s * 1e3:.0f} ms, "
        f"grid {base.image_grid}; first answer {first_answer!r}"
    )

    timings: dict[str, list] = {"fresh": [], "session": []}
    answers: dict[str, set[str]] = {"fresh": set(), "session": set()}

    def fresh() -> float:
        t0 = time.perf_counter()
        result = infimm_hd.stream(model, processor, image, FOLLOW_UP, history=history, max_windows=9, **kw)
        answers["fresh"].add(result.consume())
        elapsed = time.perf_counter() - t0
        timings["fresh"].append(result.timings)
        return elapsed

    def session() -> float:
        t0 = time.perf_counter()
        result = base.fork().chat_stream(FOLLOW_UP, **kw)
        answers["session"].add(result.consume())
        elapsed = time.perf_counter() - t0
        timings["session"].append(result.timings)
        return elapsed

    with BackgroundLoad() as load:
        results = interleaved({"fresh": fresh, "session": session}, reps=reps, warmup=1)
    same = answers["fresh"] == answers["session"] and len(answers["fresh"]) == 1
    print(f"answers equal: {same} ({sorted(answers['fresh'])!r} vs {sorted(answers['session'])!r})")

    print(
        f"\n{'follow-up':<10} {'latency':>9} {'image':>7} {'vision':>8} {'prefill':>8} {'1st tok':>8} {'decode':>9}"
        f" {'prompt run':>11}"
    )
    for name in ("fresh", "session"):
        ts = timings[name][1:]  # drop the warm-up
        ms = {f: median([getattr(t, f) for t in ts]) * 1e3 for f in ("image_s", "vision_s", "prefill_s")}
        first = median([t.time_to_first_token_s for t in ts]) * 1e3
        rate = median([t.decode_tokens_per_s for t in ts])
        run = f"{ts[0].prompt_tokens - ts[0].reused_prompt_tokens}/{ts[0].prompt_tokens}"
        print(
            f"{name:<10} {median(results[name]) * 1e3:7.0f}ms {ms['image_s']:5.0f}ms {ms['vision_s']:6.0f}ms "
            f"{ms['prefill_s']:6.0f}ms {first:6.0f}ms {rate:5.1f} t/s {run:>11}"
        )
    speedup = median(results["fresh"]) / median(results["session"])
    ttft = median([t.time_to_first_token_s for t in timings["fresh"][1:]]) / median(
        [t.time_to_first_token_s for t in timings["session"][1:]]
    )
    spread = {k: f"{min(v):.2f}..{max(v):.2f} s" for k, v in results.items()}
    print(f"\nlatency spread: fresh {spread['fresh']}, session {spread['session']}")
    print(f"time to first token: {ttft:.1f}x faster in the session")
    # The fixed costs a session removes are paid once per answer, the decode cost per token: project the measured
    # phases to other answer lengths (first token + (n - 1) / decode rate) to show where the ratio goes.
    projected = []
    for n in (1, 8, 32, 128):
        cost = {}
        for name in ("fresh", "session"):
            ts = timings[name][1:]
            first = median([t.time_to_first_token_s for t in ts])
            cost[name] = first + (n - 1) / median([t.decode_tokens_per_s for t in ts])
        projected.append(f"{n} tokens {cost['fresh'] / cost['session']:.1f}x")
    print("projected speedup by answer length: " + ", ".join(projected))
    print(load.line())
    print(result_line("session_followup_speedup", f"{speedup:.1f}x", f">= {TARGET:g}x", speedup >= TARGET))


if __name__ == "__main__":
    main()
