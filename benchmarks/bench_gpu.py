"""GPU figures in one run: the bf16 matmul peak, stage-4 training MFU of a ~1.3B model, and decode cost vs crops.

What, on one CUDA device (estimated 1-2 minutes on an H200, a third of it building the random model on the CPU;
not yet measured there):

1. Peak: the mean time of 10 bf16 8192^3 `torch.matmul`s after 3 warm-ups (CUDA events), before and after the
   training part; the larger of the two means is the MFU denominator.
2. Stage-4 MFU: a random Llama LLM with SmolLM2-1.7B widths (hidden 2048, FFN 8192, 32 heads x 64, vocab 49,152) but
   16 layers (1.28B with its untied head), 4 gated cross-attention blocks of 12 x 64 (the paper's, FFN mult 1), and a
   random ViT-L/14 at 448 (width 1024, depth 24: 303M, 1025 tokens per crop), built through the package's API
   (`model_builders.build_infimm` -> `from_components`). Batch: 8 samples x up to 1,536 tokens (80-100% real, right
   padded, the first 32 tokens unscored), one image each with 2x2, 2x3, 3x3, 3x2 windows (5, 7, 10, 7 crops). The step
   is the training loop's: fp32 master weights, bf16 autocast, `SFTObjective` (chunked LM head + cross-entropy, no
   logits), backward, gradient clipping, `optim.build_optimizer`'s fused AdamW; LLM + blocks + embeddings trained,
   ViT frozen. Model FLOPs are counted by `bench_mfu_stage4.model_flops` (keys per sample from its crops), over the
   real tokens; `torch.utils.flop_counter.FlopCounterMode` cross-checks one step against
   the same formula counted as executed (padding, full attention squares). MFU is reported against the measured peak
   (target >= 30%, as `bench_mfu_stage4`) and against the nominal dense bf16 peak of an H100/H200 SXM (989 TFLOP/s).
3. Decode: greedy `generate` (KV cache, 64 tokens, bf16 weights) of the same model with a 1344 px image (3x3 windows +
   thumbnail = 10 crops, 10,250 keys) versus a 448 px one (2 crops, 2,050 keys), interleaved, medians; steps timed
   after a device synchronisation (prefill excluded). Target: 10 / 2 crops <= 1.10x (as `bench_decode_crops`).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_gpu.py                          # CUDA, full size
    PYTHONPATH=. .venv/bin/python benchmarks/bench_gpu.py --quick --device cpu     # tiny shapes, a smoke run (< 1 min)

Report only: a missed target prints FAIL in its RESULT line and the script still exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import repo_path  # noqa: F401
import torch
from bench_mfu_stage4 import CPU_SDPA, model_flops
from flop_counts import infimm_decode_bytes, infimm_decode_flops
from machine import machine_line
from model_builders import build_infimm, num_params
from model_scale import VIT_L14, Scale
from timing import BackgroundLoad, StepClock, interleaved, median, result_line, spread, timed_generate

from infimm_hd.objectives import SFTObjective
from infimm_hd.training.optim import build_optimizer
from infimm_hd.training.trainable import TrainableSpec, apply_trainable

MFU_TARGET = 0.30
DECODE_TARGET = 1.10
NOMINAL_BF16 = 989e12  # H100 / H200 SXM dense bf16 (the spec sheet's 1,979 is with 2:4 sparsity)
STAGE4 = TrainableSpec(cross_attention=True, language_model=True, embeddings=True)  # ViT frozen
GRIDS = ((2, 2), (2, 3), (3, 3), (3, 2))  # windows per image: 5, 7, 10, 7 crops with the thumbnail
PROMPT_TOKENS = 32  # unscored start of every sample (BOS, <image>, the question)
FIRST_TEXT_ID = 300  # random text ids start above the byte tokenizer's specials (<image> is 259, <|endofchunk|> 260)

# SmolLM2-1.7B widths at 16 layers + ViT-L/14 at 448; the quick shapes keep every part but make it tiny.
FULL = Scale(
    hidden=2048,
    layers=16,
    intermediate=8192,
    heads=32,
    vocab=49152,
    xattn_heads=12,
    xattn_head_dim=64,
    **VIT_L14,
)
QUICK = Scale(
    hidden=128,
    layers=4,
    intermediate=384,
    heads=4,
    vocab=512,
    xattn_heads=2,
    xattn_head_dim=32,
    vision_width=64,
    vision_heads=2,
    vision_depth=2,
    patch_size=56,
)


def flops_text(flops: float) -> str:
    """FLOPs in T (or G for the quick shapes)."""
    return f"{flops / 1e12:.2f} T" if flops >= 1e11 else f"{flops / 1e9:.3f} G"


def rate_text(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e13 else f"{flops_per_s / 1e12:.3f} TFLOP/s"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_line(device: torch.device) -> str:
    if device.type != "cuda":
        return machine_line(torch.bfloat16)
    import transformers

    props = torch.cuda.get_device_properties(device)
    return (
        f"machine: {props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB) | torch "
        f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}) | transformers "
        f"{transformers.__version__} | dtype bfloat16"
    )


def matmul_peak(device: torch.device, size: int, reps: int = 10, warmup: int = 3) -> float:
    """bf16 FLOP/s of a size^3 `torch.matmul`: the mean of `reps` after `warmup` (CUDA events on a GPU)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    out = torch.empty(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / reps
    else:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        seconds = (time.perf_counter() - t0) / reps
    return 2 * size**3 / seconds


def training_batch(model, batch_size: int, tokens: int, seed: int = 0) -> dict:
    """A right-padded stage-4 batch as the loader collates it: random text of 80-100% of `tokens` per sample, BOS
    and `<image>` first, the first `PROMPT_TOKENS` unscored; one image per sample, windows cycling through GRIDS."""
    g = torch.Generator().manual_seed(seed)
    vocab, image_id = model.config.text_config.vocab_size, model.config.image_token_id
    ids = torch.zeros(batch_size, tokens, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i in range(batch_size):
        length = int(torch.randint(int(0.8 * tokens), tokens + 1, (), generator=g))
        row = torch.randint(FIRST_TEXT_ID, vocab, (length,), generator=g)
        row[0], row[1] = 1, image_id  # BOS, then the image
        ids[i, :length], mask[i, :length] = row, 1
        labels[i, PROMPT_TOKENS:length] = row[PROMPT_TOKENS:]
    grids = torch.tensor([GRIDS[i % len(GRIDS)] for i in range(batch_size)])  # (I, 2)
    crops = int((1 + grids.prod(dim=1)).sum())
    size = model.config.window_size
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": torch.randn(crops, 3, size, size, generator=g),  # (N, 3, S, S)
        "image_grids": grids,
        "image_sample_index": torch.arange(batch_size),
        "num_tokens": int((labels[:, 1:] != -100).sum()),
        "num_samples": batch_size,
    }


class TrainStep:
    """The training loop's step written out: bf16 autocast forward (`SFTObjective`), backward, clip, fused AdamW."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, 1e-5, 0.1, (0.9, 0.95), 1e-8)
        self.phases: list[tuple[float, float, float]] = []

    def loss(self, batch: dict) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = SFTObjective().loss(self.model, batch, step=0)
        return out.loss_sum / out.num_tokens

    def run(self, batch: dict) -> float:
        synchronize(self.device)
        t0 = time.perf_counter()
        loss = self.loss(batch)
        synchronize(self.device)
        t1 = time.perf_counter()
        loss.backward()
        synchronize(self.device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        t3 = time.perf_counter()
        self.phases.append((t1 - t0, t2 - t1, t3 - t2))
        return t3 - t0


class SyncedClock(StepClock):
    """`timing.StepClock` that waits for the device before each stamp, so a stamp marks a finished decode step."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        synchronize(self.device)
        return super().__call__(input_ids, scores)


def train_part(model, scale: Scale, device: torch.device, args: argparse.Namespace) -> tuple[float, float]:
    """Stage-4 step timing and FLOPs; returns (model FLOPs per step, median seconds per step)."""
    apply_trainable(model, STAGE4)
    model.train()
    batch = training_batch(model, args.batch_size, args.tokens, args.seed)
    real = int(batch["attention_mask"].sum())
    print(
        f"batch: {args.batch_size} samples, text {tuple(batch['input_ids'].shape)} ({real} real tokens, "
        f"{batch['num_tokens']} scored), {batch['pixel_values'].shape[0]} crops "
        f"({'/'.join(str(1 + r * c) for r, c in batch['image_grids'].tolist())} per image, "
        f"{scale.tokens_per_crop} tokens each); trainable "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e9:.3f}B params",
        flush=True,
    )
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    step = TrainStep(model, device)
    warmup, reps = (1, 1) if args.quick else (2, args.reps)
    print(f"timing: {warmup} warm-up + {reps} timed stage-4 steps ...", flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with BackgroundLoad() as load:
        times = [step.run(batch) for _ in range(warmup + reps)][warmup:]
    print(load.line())
    phases = [median(p) for p in zip(*step.phases[warmup:], strict=True)]
    memory = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else ""
    seconds = median(times)
    print(
        f"step: {seconds:.3f} s median ({spread(times)}): forward {phases[0]:.3f}, backward {phases[1]:.3f}, "
        f"clip + AdamW {phases[2]:.3f} s; {real / seconds:,.0f} real tokens/s{memory}"
    )

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        step.loss(batch).backward()
    model.zero_grad(set_to_none=True)
    parts = model_flops(model, batch)
    flops = sum(parts.values())
    executed = sum(model_flops(model, batch, executed=True).values())
    counted = counter.get_total_flops()
    print(f"model FLOPs per step: {flops_text(flops)} = " + ", ".join(f"{k} {flops_text(v)}" for k, v in parts.items()))
    print(
        f"FlopCounterMode (forward + backward, no optimizer): {flops_text(counted)} vs the same formula counted as "
        f"executed (padding, full attention squares) {flops_text(executed)} ({counted / executed:.3f}x)"
    )
    del step
    return flops, seconds


def decode_part(model, scale: Scale, device: torch.device, args: argparse.Namespace, tokenizer) -> float:
    """Per-token decode time with a 10-crop vs a 2-crop image; returns the ratio."""
    model.requires_grad_(False)
    model.to(torch.bfloat16).eval()
    text = tokenizer("Describe this image in detail, including every small object you can see.")["input_ids"]
    text = (text * args.prompt_tokens)[: args.prompt_tokens - 2]
    input_ids = torch.tensor([[tokenizer.bos_token_id, model.config.image_token_id, *text]], device=device)
    attention_mask = torch.ones_like(input_ids)
    g = torch.Generator().manual_seed(args.seed)
    size = model.config.window_size
    crops = {10: (3, 3), 2: (1, 1)}
    pixels = {n: torch.randn(n, 3, size, size, generator=g).to(device, torch.bfloat16) for n in crops}
    grids = {n: torch.tensor([grid], device=device) for n, grid in crops.items()}

    def run(n: int) -> float:
        return timed_generate(
            model.generate,
            args.new_tokens,
            clock=SyncedClock(device),
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixels[n],
            image_grids=grids[n],
        )

    reps = 2 if args.quick else args.reps
    print(f"decode: prompt {input_ids.shape[1]} tokens, {args.new_tokens} new, {reps} interleaved reps after 1 warm-up")
    with torch.inference_mode(), BackgroundLoad() as load:
        times = interleaved({"10 crops": lambda: run(10), "2 crops": lambda: run(2)}, reps=reps, warmup=1)
    print(load.line() + " (decode steps are launched from the CPU: a busy CPU slows them on a GPU too)")
    context = input_ids.shape[1] + args.new_tokens // 2
    keys = {"10 crops": 10 * scale.tokens_per_crop, "2 crops": 2 * scale.tokens_per_crop}
    print(f"{'variant':<10} {'keys':>7} {'ms/token':>9} {'(min..max)':>20} {'tokens/s':>9} {'GFLOP/token':>12}")
    for name, ts in times.items():
        gflop = infimm_decode_flops(scale, context, keys[name]) / 1e9
        ms, per_s = median(ts) * 1e3, 1 / median(ts)
        print(f"{name:<10} {keys[name]:>7} {ms:>9.2f} {spread(ts):>20} {per_s:>9.1f} {gflop:>12.2f}")
    flops = infimm_decode_flops(scale, context, keys["10 crops"]) / infimm_decode_flops(scale, context, keys["2 crops"])
    nbytes = infimm_decode_bytes(scale, context, keys["10 crops"], 2) / infimm_decode_bytes(
        scale, context, keys["2 crops"], 2
    )
    ratio = median(times["10 crops"]) / median(times["2 crops"])
    print(f"ratio 10 crops / 2 crops: measured {ratio:.3f}; analytic FLOPs {flops:.3f}, bytes {nbytes:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 1 timed step, 8 tokens (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step (default 8; quick 2)")
    parser.add_argument("--tokens", type=int, default=None, help="padded tokens per sample (default 1536; quick 96)")
    parser.add_argument("--layers", type=int, default=None, help="LLM decoder layers (default 16)")
    parser.add_argument("--reps", type=int, default=5, help="timed training steps and decode repetitions")
    parser.add_argument("--new-tokens", type=int, default=None, help="decoded tokens per run (default 64; quick 8)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="decode prompt length (default 32)")
    parser.add_argument("--matmul-size", type=int, default=None, help="peak matmul size (default 8192; quick 1024)")
    parser.add_argument("--nominal-tflops", type=float, default=NOMINAL_BF16 / 1e12, help="dense bf16 spec peak")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False); use --device cpu --quick for a smoke run")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = QUICK if args.quick else FULL
    if args.layers:
        scale = dataclasses.replace(scale, layers=args.layers)
    args.batch_size = args.batch_size or (2 if args.quick else 8)
    args.tokens = args.tokens or (96 if args.quick else 1536)
    args.new_tokens = args.new_tokens or (8 if args.quick else 64)
    size = args.matmul_size or (1024 if args.quick else 8192)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # (set_device refuses a bare "cuda": no index)
    torch.manual_seed(args.seed)
    print(device_line(device))
    print(scale.describe() + f" | ViT depth {scale.vision_depth}, {scale.vision_heads} heads")

    peaks = [matmul_peak(device, size)]
    print(f"bf16 matmul peak: {rate_text(peaks[0])} ({size}^3, mean of 10 after 3 warm-ups)", flush=True)

    t0 = time.perf_counter()
    model, tokenizer = build_infimm(scale, torch.float32, args.seed, vision_depth=scale.vision_depth)
    model.to(device)
    llm = num_params(model.language_model) - sum(num_params(b) for b in model.cross_attention_blocks().values())
    print(
        f"built in {time.perf_counter() - t0:.0f} s: {num_params(model) / 1e9:.3f}B params = LLM {llm / 1e9:.3f}B + "
        f"{len(model.cross_attention_blocks())} blocks "
        f"{sum(num_params(b) for b in model.cross_attention_blocks().values()) / 1e6:.1f}M + ViT "
        f"{num_params(model.vision_tower) / 1e6:.1f}M",
        flush=True,
    )

    flops, seconds = train_part(model, scale, device, args)
    peaks.append(matmul_peak(device, size))
    peak = max(peaks)
    print(f"bf16 matmul peak after training: {rate_text(peaks[1])}; MFU uses {rate_text(peak)}")
    mfu = flops / seconds / peak
    nominal = flops / seconds / (args.nominal_tflops * 1e12)
    print(
        f"stage-4 step: {rate_text(flops / seconds)} achieved = MFU {mfu * 100:.1f}% of the measured peak, "
        f"{nominal * 100:.1f}% of the nominal {args.nominal_tflops:.0f} TFLOP/s"
        + ("" if device.type == "cuda" else " (an H100/H200 figure: meaningless on CPU)"),
        flush=True,
    )
    ratio = decode_part(model, scale, device, args, tokenizer)

    print(result_line("bf16_matmul_peak", rate_text(peak), "report only", True))
    print(result_line("mfu_stage4_bf16_gpu", f"{mfu * 100:.1f}%", f">= {MFU_TARGET * 100:.0f}%", mfu >= MFU_TARGET))
    print(result_line("mfu_stage4_bf16_gpu_vs_nominal", f"{nominal * 100:.1f}%", "report only", True))
    print(
        result_line(
            "decode_time_10_vs_2_crops_gpu",
            f"{ratio:.3f}x per token",
            f"<= {DECODE_TARGET:.2f}x",
            ratio <= DECODE_TARGET,
        )
    )


if __name__ == "__main__":
    main()
