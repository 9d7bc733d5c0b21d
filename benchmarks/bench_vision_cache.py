"""Server request time for a resent hi-res image: the vision-token cache (`serving/vision_cache.py`) on vs off.

What: the time of one chat request whose image the server has seen before (an OpenAI-style client resends the
conversation, image included, every turn), through the server's own generation path (`RequestBatcher._generate`:
collate, vision, prefill, `max_tokens` greedy tokens), with the cache on (the image's tower tokens are reused) and
off (the tower runs again). The model is the benchmarks' CPU-sized LLM (`model_scale.Scale`: hidden 1024, 16 layers)
with a random ViT-L/14 at 448 px (width 1024, depth 24, 1025 tokens per crop, 303M parameters: the size of
CLIP-L / EVA02-L towers; the paper's EVA02-CLIP-E is 4.4B) and a 1344x1344 image (3x3 windows + thumbnail =
10 crops). bf16, 2 threads; requests alternate between the two settings (A B, B A, ...), medians reported.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_vision_cache.py            # ~2 min
    PYTHONPATH=. .venv/bin/python benchmarks/bench_vision_cache.py --quick    # ViT depth 4, ~30 s

Report only: the script never exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import time

import numpy as np
import repo_path  # noqa: F401
import torch
from machine import machine_line
from model_builders import build_infimm
from model_scale import VIT_L14, Scale
from PIL import Image
from timing import BackgroundLoad, interleaved, median, result_line, spread

from infimm_hd.image_processing import InfiMMHDImageProcessor
from infimm_hd.serving.batcher import BatchConfig, Finished, Job, PreparedRequest, RequestBatcher
from infimm_hd.serving.vision_cache import image_key


class _Processor:
    """What the batcher needs of a processor: the tokenizer (for the pad id and the streamed text)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def request(tokenizer, image_token_id: int, image: bytes, max_tokens: int) -> PreparedRequest:
    """One prepared chat request about `image` (as `serving.prepare` builds it), 10 crops."""
    vision = InfiMMHDImageProcessor()(image, return_tensors="pt")
    ids = [image_token_id, *tokenizer("What is in this picture? Answer briefly.")["input_ids"]]
    return PreparedRequest(
        input_ids=torch.tensor(ids),
        pixel_values=vision["pixel_values"],
        image_grids=vision["image_grids"],
        max_new_tokens=max_tokens,
        image_keys=(image_key(image),),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ViT depth 4, 3 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed requests per setting (default 5; quick 3)")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)
    scale = dataclasses.replace(Scale(), **VIT_L14)
    if args.quick:
        scale = dataclasses.replace(scale, vision_depth=4)
    model, tokenizer = build_infimm(scale, torch.bfloat16, vision_depth=scale.vision_depth)
    vit_params = sum(p.numel() for p in model.vision_tower.parameters())
    print(machine_line(torch.bfloat16) + f", {args.threads} threads")
    print(scale.describe() + f" | ViT depth {scale.vision_depth}: {vit_params / 1e6:.0f}M parameters")

    pixels = np.random.default_rng(0).integers(0, 256, (1344, 1344, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    prepared = request(tokenizer, model.config.image_token_id, buffer.getvalue(), args.max_tokens)
    print(f"request: 1344x1344 image, {prepared.pixel_values.shape[0]} crops, {prepared.input_ids.numel()} prompt "
          f"tokens, {args.max_tokens} new tokens")  # fmt: skip

    processor = _Processor(tokenizer)
    batchers = {
        "cache on": RequestBatcher(model, processor, BatchConfig(max_batch_size=1)),
        "cache off": RequestBatcher(model, processor, BatchConfig(max_batch_size=1, vision_cache_mb=0)),
    }
    loop = asyncio.new_event_loop()
    texts: dict[str, str] = {}

    def run(name: str) -> float:
        job = Job(prepared, loop)
        start = time.perf_counter()
        batchers[name]._generate([job])  # the server's generation thread's own call
        elapsed = time.perf_counter() - start
        loop.run_until_complete(asyncio.sleep(0))  # deliver the events the worker scheduled on the loop
        events = []
        while not job.events.empty():
            events.append(job.events.get_nowait())
        final = events[-1] if events else None
        if not isinstance(final, Finished):
            raise RuntimeError(f"{name}: the request did not finish: {final!r}")
        texts[name] = f"{final.text!r} ({final.completion_tokens} tokens, {final.finish_reason})"
        return elapsed

    for name in batchers:  # the first sight of the image (a miss) for the cache, plus warm-up
        run(name)
    with BackgroundLoad() as load:
        times = interleaved({name: (lambda n=name: run(n)) for name in batchers}, reps=reps, warmup=0)
    cache = batchers["cache on"].vision_cache
    for name, samples in times.items():
        print(f"  {name:9s}  {median(samples):7.3f} s per request   {spread(samples)}")
    print(f"cache: {len(cache)} image, {cache.cached_bytes / 2**20:.1f} MiB, {cache.hits} hits, {cache.misses} miss")
    print(load.line())
    if texts["cache on"] != texts["cache off"]:
        print(f"WARNING: the answers differ: {texts['cache on']} vs {texts['cache off']}")
    else:
        print(f"same answer with and without the cache: {texts['cache on']}")
    ratio = median(times["cache off"]) / median(times["cache on"])
    print(result_line("resent_image_request_speedup_with_vision_cache", f"{ratio:.2f}x", "report only", True))


if __name__ == "__main__":
    main()
