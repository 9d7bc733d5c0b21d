"""Shared pieces of the benchmarks: CPU-scaled model shapes, model builders, timing helpers and FLOP counts.

Why a shared module: the three benchmarks must compare like with like (the same LLM shape, the same vision key
count, the same dtype and thread count), so the shapes and the measuring protocol live in one place.

Scaling rule. The paper's model is Vicuna-13B (hidden 5120, 40 layers, FFN 13824, 40 heads x 128, vocab 32000)
with a gated cross-attention block before every 4th decoder layer (10 blocks of 12 heads x 64 = 768 inner dim, FFN
mult 1) over EVA02-CLIP-E tokens (width 1792, 1025 tokens per 448 px crop). `Scale` shrinks the widths by the same
factor and keeps the ratios that decide the cost split:

* hidden 1024 (= 5120 / 5), FFN 2752 (13824 / 5, rounded to 64), head dim 128 (8 heads), 16 layers;
* a block before every 4th layer (4 blocks); cross-attention inner dim 768 / 5 ~ 154, rounded up to 3 heads x 64;
* vision width 1792 / 5 ~ 358, rounded to 384; 1025 tokens per crop (patch 14 at 448) unless a benchmark says so;
* vocabulary 2560, chosen so the LM head is the same share of the decoder's matmul work as in Vicuna-13B (1.3 %).

The package's model is assembled here (`build_infimm`, through its public API); each benchmark adds its baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LogitsProcessor, LogitsProcessorList

# Let `python benchmarks/<script>.py` run from a plain checkout too (with the package installed this is a no-op).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# Vicuna-13B + EVA02-CLIP-E + the paper's fusion blocks: the shapes `Scale` is proportional to.
PAPER = {
    "hidden": 5120,
    "layers": 40,
    "intermediate": 13824,
    "heads": 40,
    "vocab": 32000,
    "xattn_heads": 12,
    "xattn_head_dim": 64,
    "xattn_every": 4,
    "vision_width": 1792,
    "tokens_per_crop": 1025,
}


def proportional_vocab(hidden: int, layers: int, intermediate: int, multiple: int = 64) -> int:
    """Vocabulary that gives the LM head the same share of per-token matmul work as Vicuna-13B's (~1.3 %).

    Why: with a tiny byte vocabulary the LM head would vanish, with Vicuna's 32000 at hidden 1024 it would cost as
    much as 2.6 decoder layers; either would skew the ratios the benchmarks report.
    """
    p = PAPER
    share = p["vocab"] / (p["layers"] * (4 * p["hidden"] + 3 * p["intermediate"]))
    vocab = share * layers * (4 * hidden + 3 * intermediate)
    return max(multiple, int(round(vocab / multiple)) * multiple)


VIT_L14 = dict(vision_width=1024, vision_heads=16, vision_depth=24, patch_size=14)  # `Scale` fields of a ViT-L/14


@dataclass(frozen=True)
class Scale:
    """The CPU-sized model: paper proportions at hidden 1024 (see the module docstring for the rule)."""

    hidden: int = 1024
    layers: int = 16
    intermediate: int = 2752
    heads: int = 8
    vocab: int = 2560
    xattn_heads: int = 3
    xattn_head_dim: int = 64
    xattn_every: int = 4
    vision_width: int = 384
    vision_heads: int = 6
    vision_depth: int = 1
    patch_size: int = 14

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def xattn_inner(self) -> int:
        return self.xattn_heads * self.xattn_head_dim

    @property
    def num_xattn(self) -> int:
        return self.layers // self.xattn_every

    @property
    def tokens_per_crop(self) -> int:
        """Vision tokens per 448 px crop: the patch grid plus the class token (1025 at patch 14)."""
        return (448 // self.patch_size) ** 2 + 1

    def describe(self) -> str:
        return (
            f"LLM: Llama hidden {self.hidden}, {self.layers} layers, FFN {self.intermediate}, {self.heads} heads x "
            f"{self.head_dim}, vocab {self.vocab} | fusion: {self.num_xattn} gated cross-attention blocks "
            f"(before every {self.xattn_every}th layer), {self.xattn_heads} heads x {self.xattn_head_dim} = "
            f"{self.xattn_inner} inner (paper 768 at hidden 5120), FFN mult 1 | vision width {self.vision_width}, "
            f"{self.tokens_per_crop} tokens per 448 crop (patch {self.patch_size})"
        )


PATCH_FOR_TOKENS = {1025: 14, 257: 28, 65: 56}  # tokens per 448 crop (class token included) -> patch size


def paper_scale(tokens_per_crop: int = 1025) -> Scale:
    """The paper's own shapes as a `Scale`, for printing analytic ratios at full size beside the measured ones."""
    p = PAPER
    return Scale(
        hidden=p["hidden"],
        layers=p["layers"],
        intermediate=p["intermediate"],
        heads=p["heads"],
        vocab=p["vocab"],
        xattn_heads=p["xattn_heads"],
        xattn_head_dim=p["xattn_head_dim"],
        xattn_every=p["xattn_every"],
        vision_width=p["vision_width"],
        patch_size=PATCH_FOR_TOKENS[tokens_per_crop],
    )


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags every benchmark shares: dtype, threads, model width/depth, repetitions."""
    parser.add_argument(
        "--quick", action="store_true", help="fewer tokens and repetitions, same model (< 1 minute); a smoke run"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of both sides (default bf16)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--hidden", type=int, default=None, help="LLM hidden size (default 1024); widths follow")
    parser.add_argument("--layers", type=int, default=None, help="LLM decoder layers (default 16)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (after warm-up)")
    parser.add_argument("--seed", type=int, default=0)


def scale_from_args(args: argparse.Namespace, **overrides) -> Scale:
    """`Scale` from the command line: --hidden/--layers rescale every derived width by the paper's ratios."""
    hidden = args.hidden or 1024
    layers = args.layers or 16
    intermediate = max(64, int(round(hidden * PAPER["intermediate"] / PAPER["hidden"] / 64)) * 64)
    heads = max(1, hidden // 128)
    inner = hidden * PAPER["xattn_heads"] * PAPER["xattn_head_dim"] / PAPER["hidden"]
    xattn_heads = max(1, -(-int(inner) // 64))  # round up to whole 64-wide heads
    vision_width = max(64, int(round(hidden * PAPER["vision_width"] / PAPER["hidden"] / 64)) * 64)
    fields = dict(
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        heads=heads,
        vocab=proportional_vocab(hidden, layers, intermediate),
        xattn_heads=xattn_heads,
        vision_width=vision_width,
        vision_heads=max(1, vision_width // 64),
    )
    fields.update(overrides)
    return Scale(**fields)


def setup_torch(threads: int, seed: int = 0) -> None:
    """Pin the thread count (both sides of every comparison run under the same setting) and seed."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often just the architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def machine_line(dtype: torch.dtype) -> str:
    """One line describing where the numbers come from."""
    return (
        f"machine: {platform.processor() or platform.machine()} ({cpu_model_name()}, {os.cpu_count()} CPUs, "
        f"AMX-bf16: {'yes' if cpu_has_amx() else 'no'}) | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | dtype {str(dtype).replace('torch.', '')}"
    )


def llama_config(scale: Scale) -> LlamaConfig:
    """The LLM both sides of every comparison share (MHA like Vicuna; random weights, timing only)."""
    return LlamaConfig(
        vocab_size=scale.vocab,
        hidden_size=scale.hidden,
        intermediate_size=scale.intermediate,
        num_hidden_layers=scale.layers,
        num_attention_heads=scale.heads,
        num_key_value_heads=scale.heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_llm(scale: Scale, dtype: torch.dtype, seed: int = 0):
    """A random Llama causal LM of the benchmark shape, in `dtype`, in eval mode."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(llama_config(scale)).to(dtype).eval()


def build_infimm(scale: Scale, dtype: torch.dtype, seed: int = 0, vision_depth: int | None = None):
    """InfiMM-HD at `scale`: random Llama + a small timm ViT + gated cross-attention, via the package's API.

    The ViT is kept shallow (its cost is outside every timed region); its width sets the cross-attention key width.
    The gates are set to 0.5 (instead of the zero init) so the vision keys actually change the text stream.
    """
    from infimm_hd import InfiMMHDVisionConfig, from_components
    from infimm_hd.byte_tokenizer import byte_level_tokenizer
    from infimm_hd.vision_tower import VisionTower

    tokenizer = byte_level_tokenizer()
    llm = build_llm(scale, torch.float32, seed)
    torch.manual_seed(seed + 1)
    tower = VisionTower(
        InfiMMHDVisionConfig(
            backend="timm",
            image_size=448,
            patch_size=scale.patch_size,
            width=scale.vision_width,
            depth=vision_depth or scale.vision_depth,
            num_heads=scale.vision_heads,
            mlp_ratio=4.0,
        )
    )
    torch.manual_seed(seed + 2)
    model = from_components(
        llm,
        tower,
        tokenizer,
        cross_attention_heads=scale.xattn_heads,
        cross_attention_head_dim=scale.xattn_head_dim,
        cross_attention_ff_mult=1.0,
        cross_attention_every_n_layers=scale.xattn_every,
        max_windows_inference=16,
    )
    with torch.no_grad():
        for block in model.cross_attention_blocks().values():
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
    model.generation_config.pad_token_id = 0
    return model.to(dtype).eval(), tokenizer


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- timing --------------------------------------------------------------------------------------------------------
def _machine_busy_seconds() -> float | None:
    """CPU-seconds all processes have spent busy since boot (from /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class BackgroundLoad:
    """Measures how much CPU *other* processes used while the block ran.

    Why: on a 2-core machine a single busy neighbour preempts one of the two OpenMP threads, and every parallel
    region then waits a scheduler time slice; one-token matmuls go from ~0.2 ms to several ms. Interleaving keeps
    the ratios roughly fair, but the absolute figures are meaningless then, so every benchmark reports this.
    """

    def __enter__(self) -> BackgroundLoad:
        self.busy0, self.own0, self.wall0 = _machine_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy1 = _machine_busy_seconds()
        self.wall = time.perf_counter() - self.wall0
        own = time.process_time() - self.own0
        self.other_cores = (
            None if busy1 is None or self.busy0 is None else max(0.0, busy1 - self.busy0 - own) / self.wall
        )

    def line(self) -> str:
        if self.other_cores is None:
            return "background load: unknown (no /proc/stat)"
        note = "" if self.other_cores < 0.1 else "  WARNING: the machine was shared; absolute times are unreliable"
        return f"background load: other processes used {self.other_cores:.2f} cores on average during timing{note}"


class StepClock(LogitsProcessor):
    """A no-op logits processor that timestamps every generation step.

    `generate` calls it once per new token, right after that token's forward pass, so the gaps between the stamps
    are whole decode steps (forward + token selection + bookkeeping) and the prefill is excluded: the first stamp
    comes after the prefill forward. Both sides of a comparison go through the same `generate` loop.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.stamps.append(time.perf_counter())
        return scores

    def per_token(self) -> float:
        """Mean seconds per decode step over the n - 1 steps after the prefill."""
        if len(self.stamps) < 2:
            raise RuntimeError("need at least 2 generated tokens to time decoding")
        return (self.stamps[-1] - self.stamps[0]) / (len(self.stamps) - 1)


def timed_generate(
    generate: Callable[..., torch.Tensor], new_tokens: int, clock: StepClock | None = None, **kwargs
) -> float:
    """Greedy `generate(...)` of exactly `new_tokens` tokens with a KV cache; returns seconds per decode step.

    `clock`: a `StepClock` (subclass) to stamp the steps, e.g. one that synchronises a GPU first; a fresh one if None.
    """
    clock = StepClock() if clock is None else clock
    out = generate(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        logits_processor=LogitsProcessorList([clock]),
        **kwargs,
    )
    if len(clock.stamps) != new_tokens:
        raise RuntimeError(f"expected {new_tokens} generation steps, timed {len(clock.stamps)} (output {out.shape})")
    return clock.per_token()


def interleaved(runs: dict[str, Callable[[], float]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every variant `warmup` times untimed, then `reps` times interleaved (ABC, CBA, ABC, ...).

    Why interleaved and alternating: background load and clock drift then hit every variant alike, so the ratios
    stay fair even when the absolute times wander. Each run returns its own measured seconds.
    """
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            results[name].append(runs[name]())
    return results


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """min..max of a list of seconds, in ms, for judging noise."""
    return f"{min(xs) * 1e3:.2f}..{max(xs) * 1e3:.2f} ms"


def result_line(name: str, value: str, target: str, passed: bool) -> str:
    """The one-line summary each benchmark ends with (reporting only: benchmarks never fail the process)."""
    return f"RESULT {name}: {value} (target {target})  {'PASS' if passed else 'FAIL'}"


# -- analytic matmul FLOPs (2 per multiply-add) --------------------------------------------------------------------
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


def decode_setup(description: str) -> tuple[argparse.Namespace, torch.dtype, Scale, int, int]:
    """The decode benchmarks' shared start: flags, threads/seed, dtype, model scale, tokens and repetitions.

    Prints the machine and model lines so every run's output says what was measured.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per run (default 64)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="text tokens in the prompt (default 32)")
    args = parser.parse_args()
    setup_torch(args.threads, args.seed)
    dtype = DTYPES[args.dtype]
    scale = scale_from_args(args)
    print(machine_line(dtype))
    print(scale.describe())
    return args, dtype, scale, args.new_tokens or (16 if args.quick else 64), args.reps or (3 if args.quick else 7)
