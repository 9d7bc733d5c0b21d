"""Model-FLOPs utilisation (MFU) of a stage-4 training step on CPU in bf16, against the measured bf16 matmul peak.

What: stage 4 (instruction tuning) trains the cross-attention blocks and the whole LLM, ViT frozen. The step here is
the `smollm2-135m` preset (SmolLM2-135M: 30 layers, hidden 576, 9 heads / 3 kv heads, FFN 1536, vocab 49,154 tied;
7 blocks of 6 x 64 with FFN mult 1; random ViT of width 192, depth 4, 257 tokens per crop) on 8 conversations of
~256 tokens (SmolLM2's chat template), each with one 896x896 image = 2x2 windows + thumbnail = 5 crops (1,285
keys). Step = forward with labels, backward, AdamW step. Peak = the best of several 4096^3 bf16 `torch.matmul`s
with the same threads, in this run. Target: MFU >= 30%.

Model FLOPs (2 per multiply-add), over the real (unpadded) tokens:
* LLM linears incl. the tied LM head: 6 N T (forward 2NT, backward 4NT: all trained; a frozen weight on the
  gradient path would cost 4NT, input gradients only). Embedding lookups: no matmul.
* causal self-attention, QK^T + AV over the lower triangle: 2 d T (T + 1) per layer and sequence forward, x3 in all.
* cross-attention blocks: to_q, to_out and the FFN 6x their forward FLOPs; QK^T + AV over the image keys x3; to_kv
  over the keys x2 (weight gradient only: the ViT output needs none).
* ViT: forward only (frozen, and no gradient flows into it).
`torch.utils.flop_counter.FlopCounterMode` cross-checks one step; it counts what runs (padding, the full attention
square), so the same analytic sum is also printed counted that way.

The result is the training loop's recipe: fp32 weights, bf16 autocast, `torch.optim.AdamW(fused=True)` and the
`SFTObjective` itself, which drops the padding mask of the loader's right-padded batches (exact: pads follow every
real token) and asks the model for the loss without logits (`skip_logits`: the LM head and the float32
cross-entropy in row chunks over the scored tokens, `infimm_hd.linear_cross_entropy`). Interleaved with it run the
loop's previous objective (logits at the scored positions, `logits_to_keep`, then cross-entropy), the recipe before
that (Hugging Face's loss over all logits, foreach AdamW, dense padding mask), that plus fused AdamW and no mask, and
one candidate change: every `nn.Linear` weight stored in bf16, with fp32 master copies for the trained ones
(autocast kept: the same numbers without the per-forward casts). Each recipe's saved activations (the distinct
storages autograd keeps for backward) are measured once, and the three loss paths' peak RSS growth over one step
in a fresh process each. A profile of one loop step says where the time goes.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_mfu_stage4.py [--quick] [--reps 3] [--no-variants] [--no-memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import unittest.mock
from dataclasses import dataclass

import numpy as np
import repo_path  # noqa: F401
import torch
from bench_stage3_memory import (
    MODEL_KEYS,
    PRESET,
    build_stage,
    cast_frozen_linears,
    conversation,
    forward_loss,
    make_batch,
    measure_peak_rss,
    run_json_child,
    saved_activation_bytes,
    untied_linears,
)
from flags import setup_torch
from machine import machine_line
from timing import BackgroundLoad, interleaved, median, result_line
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

import infimm_hd.modeling
from infimm_hd.objectives import SFTObjective

TARGET = 0.30
WORDS = "the a an image shows red blue green digit corner window left right top small large of with and in on"


def _cpu_sdpa_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)  # FlopCounterMode passes shapes; no causal saving counted


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_SDPA = {  # the CPU flash kernels, which FlopCounterMode does not know: the GPU kernels' formulas
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def instruction_batch(processor, batch_size: int, tokens: int, seed: int = 0) -> dict:
    """`batch_size` conversations of ~`tokens` tokens (a long random-word answer), one 896 px image (2x2) each."""
    from infimm_hd.training.collate import render_length

    rng = np.random.default_rng(seed)
    chats = []
    for _ in range(batch_size):
        words: list[str] = []
        chat = conversation("Describe the image in detail.", "")
        while render_length(processor, chat, 1) < tokens:  # grow the answer 8 words at a time
            words += list(rng.choice(WORDS.split(), 8))
            chat = conversation("Describe the image in detail.", " ".join(words))
        chats.append(chat)
    return make_batch(processor, chats, side=896, max_windows=9, seed=seed)


def model_flops(model, batch: dict, executed: bool = False) -> dict[str, float]:
    """Analytic FLOPs of one step by part. `executed=True` counts as FlopCounterMode does: every padded position, the
    full attention square (no causal saving) and the flash backward's recomputed scores (backward 2.5x, not 2x)."""
    cfg, text = model.config, model.config.text_config
    d, f, layers, vocab = text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.vocab_size
    head = getattr(text, "head_dim", None) or d // text.num_attention_heads
    q_dim, kv_dim = text.num_attention_heads * head, text.num_key_value_heads * head
    lengths = batch["attention_mask"].sum(dim=1).tolist()  # real tokens per sample
    if executed:
        lengths = [batch["input_ids"].shape[1]] * len(lengths)
    tokens = sum(lengths)
    linear = layers * (d * q_dim + 2 * d * kv_dim + q_dim * d + 3 * d * f) + d * vocab  # + tied LM head
    attn = sum(2 * 2 * t * t * q_dim if executed else 2 * q_dim * t * (t + 1) for t in lengths) * layers

    tower = model.vision_tower
    dv, depth, patch, mlp = tower.width, tower.block_index + 1, tower.config.patch_size, tower.config.mlp_ratio
    patches = tower.grid_size**2
    seq = patches + tower.model.num_prefix_tokens  # tokens through the blocks (patches + class token)
    crops = batch["pixel_values"].shape[0]
    vit = crops * (
        2 * patches * 3 * patch * patch * dv  # patch embedding
        + depth * (2 * seq * (4 + 2 * mlp) * dv * dv + 2 * 2 * seq * seq * dv)  # qkv, proj, MLP; QK^T + AV
    )
    grids = batch["image_grids"].tolist()  # (I, 2) windows per image; one image per sample
    if len(grids) != len(lengths):
        raise ValueError(f"model_flops counts one image per sample: {len(grids)} images, {len(lengths)} samples")
    keys = [(1 + rows * cols) * tower.tokens_per_crop for rows, cols in grids]  # thumbnail + windows, all keys
    inner, ff = cfg.cross_attention_heads * cfg.cross_attention_head_dim, round(d * cfg.cross_attention_ff_mult)
    blocks = len(cfg.cross_attention_layers)
    xattn_linear = blocks * 2 * tokens * (2 * d * inner + 2 * d * ff)
    xattn_core = blocks * 2 * 2 * inner * sum(t * k for t, k in zip(lengths, keys, strict=True))
    to_kv = blocks * 2 * sum(keys) * dv * 2 * inner
    core = 3.5 if executed else 3.0  # forward + backward of QK^T and AV
    return {
        "LLM linears (6NT)": 6 * linear * tokens,
        "self-attention core": core * attn,
        "cross-attn linears": 3 * xattn_linear,
        "cross-attn core": core * xattn_core,
        "cross-attn to_kv": 2 * to_kv,
        "ViT forward": vit,
    }


def matmul_peak(size: int = 4096, tries: int = 5) -> float:
    """Best bf16 FLOP/s of a size^3 `torch.matmul` over `tries` (after one untimed)."""
    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@dataclass(frozen=True)
class Recipe:
    """How a step runs. The first is the training loop's (the MFU result); the others are for comparison."""

    name: str
    fused_adamw: bool = False  # torch.optim.AdamW(fused=True): one kernel per step instead of ~10 passes per tensor
    causal_only: bool = False  # no padding mask: exact for right-padded batches (pads follow every real token)
    bf16_linears: bool = False  # nn.Linear weights stored in bf16 (fp32 masters in AdamW), autocast kept
    objective: bool = False  # the loop's SFTObjective: no mask for right padding, chunked LM head + cross-entropy
    scored_logits: bool = False  # the previous objective: no mask, logits only at scored positions, then the loss


RECIPES = (
    Recipe("loop: SFTObjective, fused", fused_adamw=True, objective=True),
    Recipe("previous: scored logits", fused_adamw=True, scored_logits=True),
    Recipe("before: HF loss, AdamW, mask"),
    Recipe("+ fused AdamW, causal mask", fused_adamw=True, causal_only=True),
    Recipe("loop + bf16 Linear weights", fused_adamw=True, objective=True, bf16_linears=True),
)


def scored_logits_loss(model, batch: dict) -> torch.Tensor:
    """The loop's previous objective: logits (bf16 autocast) only at the positions where some row scores a label,
    then float32 cross-entropy over them (mean over the label tokens). That is the model's own `skip_logits` path for
    heads that are not plain linears, so it is taken here with every family treated as such."""
    inputs = {k: batch[k] for k in MODEL_KEYS}
    inputs["attention_mask"] = None  # right padding: exact, as the objective does
    every_head_special = unittest.mock.patch.object(infimm_hd.modeling, "PLAIN_HEAD_FAMILIES", frozenset())
    with every_head_special, torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**inputs, use_cache=False, skip_logits=True).loss


class Step:
    """One training step of a recipe; `run()` returns its seconds and records (forward, backward, optimizer).

    `bf16_linears`: autocast rounds every fp32 Linear weight to bf16 in each forward (and keeps the copy for the
    backward); storing them in bf16 instead gives the same numbers without the casts. Trained ones get fp32 master
    copies that AdamW steps, rounded back into the bf16 weights after each step; the tied embedding/LM head stays
    fp32 (its lookup feeds the fp32 residual stream).
    """

    def __init__(self, model, recipe: Recipe):
        self.model, self.recipe, self.phases = model, recipe, []
        self.bf16, self.master = [], []
        if recipe.bf16_linears:
            cast_frozen_linears(model)
            for p in (p for m in untied_linears(model) for p in m.parameters() if p.requires_grad):
                self.master.append(p.detach().clone())
                self.bf16.append(p)
                p.data = p.data.to(torch.bfloat16)
        in_bf16 = {id(p) for p in self.bf16}
        fp32 = [p for p in model.parameters() if p.requires_grad and id(p) not in in_bf16]
        self.optimizer = torch.optim.AdamW(fp32 + self.master, lr=1e-5, weight_decay=0.0, fused=recipe.fused_adamw)

    def loss(self, batch: dict) -> torch.Tensor:
        if self.recipe.objective:  # exactly what the training loop runs (mean over the label tokens, as HF's)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = SFTObjective().loss(self.model, batch, step=0)
            return out.loss_sum / out.num_tokens
        if self.recipe.scored_logits:
            return scored_logits_loss(self.model, batch)
        inputs = {k: batch[k] for k in MODEL_KEYS}
        if self.recipe.causal_only:
            inputs["attention_mask"] = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(**inputs, use_cache=False).loss

    def run(self, batch: dict) -> float:
        t0 = time.perf_counter()
        loss = self.loss(batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        for p, m in zip(self.bf16, self.master, strict=True):
            m.grad, p.grad = p.grad.float(), None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.bf16:
            with torch.no_grad():
                torch._foreach_copy_(self.bf16, self.master)  # round the updated masters into the bf16 weights
        t3 = time.perf_counter()
        self.phases.append((t1 - t0, t2 - t1, t3 - t2))
        return t3 - t0


def memory_child(recipe_name: str, preset: str, batch_size: int, tokens: int, threads: int) -> None:
    """Subprocess: build the stage-4 model and batch, run one warm-up step of the recipe (grads and AdamW state
    exist from then on, as in training), then report the peak RSS growth of one more step as JSON."""
    setup_torch(threads)
    model, processor = build_stage(4, preset)
    batch = instruction_batch(processor, batch_size, tokens)
    step = Step(model, next(r for r in RECIPES if r.name == recipe_name))
    step.run(batch)
    print(json.dumps(measure_peak_rss(lambda: step.run(batch))))


def peak_rss_growth(recipe_name: str, args: argparse.Namespace, batch_size: int) -> float:
    """MB of peak RSS growth of one step of `recipe_name`, in a fresh process."""
    child_args = ["--memory-child", recipe_name, "--preset", args.preset, "--batch-size", str(batch_size)]
    child_args += ["--tokens", str(args.tokens), "--threads", str(args.threads)]
    report = run_json_child(child_args, script=__file__)
    return report["peak_mb"] - report["before_mb"]


def profile_step(step: Step, batch: dict, rows: int) -> None:
    """Forward + backward of one step under torch.profiler (the optimizer has its own column above): the top ops by
    self time, and the time split into a few kinds."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step.loss(batch).backward()
    step.model.zero_grad(set_to_none=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))
    vocab = step.model.config.text_config.vocab_size
    sdpa = "aten::_scaled_dot_product_flash_attention_for_cpu"

    def kind(event) -> str:
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            return "matmuls"
        if event.key in (sdpa, sdpa + "_backward"):
            return "attention kernels (fwd + bwd)"
        if any(isinstance(shape, list) and vocab in shape for shape in event.input_shapes):
            return "other ops on the (B, T, vocab) logits"
        return "dtype casts (copy_)" if event.key == "aten::copy_" else "everything else"

    split: dict[str, float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        split[kind(event)] = split.get(kind(event), 0.0) + event.self_cpu_time_total
    total = sum(split.values())
    print("forward + backward time: " + ", ".join(f"{k} {v / total * 100:.0f}%" for k, v in split.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 rep, no variants, no profile (~30 s)")
    parser.add_argument("--batch-size", type=int, default=None, help="conversations per step (default 8)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per conversation (default 256)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per recipe (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default=PRESET, help=f"model preset (default {PRESET})")
    parser.add_argument("--no-variants", action="store_true", help="time the baseline recipe only")
    parser.add_argument("--profile-rows", type=int, default=15, help="profiler table rows (0: no profile)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-recipe peak RSS subprocesses")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch_size = args.batch_size or (2 if args.quick else 8)
    if args.memory_child:
        memory_child(args.memory_child, args.preset, batch_size, args.tokens, args.threads)
        return
    setup_torch(args.threads)
    reps = args.reps or (1 if args.quick else 3)
    print(machine_line(torch.bfloat16))

    print(f"building {args.preset} (stage 4: cross-attention + LLM trainable, ViT frozen) ...", flush=True)
    model, processor = build_stage(4, args.preset)
    batch = instruction_batch(processor, batch_size, args.tokens)
    real = int(batch["attention_mask"].sum())
    print(
        f"batch: {batch_size} conversations, text {tuple(batch['input_ids'].shape)} ({real} real tokens), "
        f"{batch['pixel_values'].shape[0]} crops; trainable "
        f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.1f}M params"
    )

    recipes = RECIPES[:1] if args.quick or args.no_variants else RECIPES
    steps = {r.name: Step(model if i == 0 else copy.deepcopy(model), r) for i, r in enumerate(recipes)}
    with torch.no_grad():
        losses = [f"{step.loss(batch).item():.4f}" for step in steps.values()]
    print("loss per recipe (same batch, same weights): " + ", ".join(losses))
    saved = {
        name: saved_activation_bytes(step.model, batch, lambda _model, b, step=step: step.loss(b))
        for name, step in steps.items()
    }

    print("FlopCounterMode on one baseline step (forward + backward) ...", flush=True)
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        forward_loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    counted = counter.get_total_flops()

    print(f"timing: {reps} interleaved steps per recipe after 1 warm-up each; bf16 matmul peak around them ...")
    peaks = [matmul_peak()]
    with BackgroundLoad() as load:
        times = interleaved({r: (lambda s=s: s.run(batch)) for r, s in steps.items()}, reps=reps, warmup=1)
    peaks.append(matmul_peak())
    print(load.line())
    peak = max(peaks)

    parts = model_flops(model, batch)
    flops = sum(parts.values())
    executed = sum(model_flops(model, batch, executed=True).values())
    print(
        f"model FLOPs per step: {flops / 1e12:.3f} T = " + ", ".join(f"{k} {v / 1e9:.0f} G" for k, v in parts.items())
    )
    print(
        f"FlopCounterMode: {counted / 1e12:.3f} T vs analytic counted as executed (padding, full attention "
        f"square) {executed / 1e12:.3f} T ({counted / executed:.3f}x)"
    )
    threads = torch.get_num_threads()
    print(f"bf16 matmul peak: {peak / 1e12:.3f} TFLOP/s (4096^3, best of 5 before + 5 after, {threads} threads)")
    print(f"{'recipe':<28} {'s/step':>7} {'fwd':>6} {'bwd':>6} {'optim':>6} {'TFLOP/s':>8} {'MFU':>6} {'saved MB':>9}")
    for recipe, ts in times.items():
        phases = [median(p) for p in zip(*steps[recipe].phases[1:], strict=True)]  # the first was the warm-up
        seconds = median(ts)
        print(
            f"{recipe:<28} {seconds:>7.2f} {phases[0]:>6.2f} {phases[1]:>6.2f} {phases[2]:>6.2f} "
            f"{flops / seconds / 1e12:>8.3f} {flops / seconds / peak * 100:>5.1f}% {saved[recipe] / 2**20:>9,.0f}"
        )
    base = recipes[0].name
    mfu = flops / median(times[base]) / peak
    if args.profile_rows and not args.quick:
        print(f"profile of one '{base}' step:")
        profile_step(steps[base], batch, args.profile_rows)
    if not (args.quick or args.no_memory):
        print("peak RSS growth of one step (after a warm-up step), a fresh process per recipe:")
        for recipe in recipes[:3]:  # the three loss paths: chunked, scored logits, HF loss over all logits
            print(f"  {recipe.name:<28} {peak_rss_growth(recipe.name, args, batch_size):>7,.0f} MB", flush=True)
    print(result_line("mfu_stage4_bf16", f"{mfu * 100:.1f}%", f">= {TARGET * 100:.0f}%", mfu >= TARGET))


if __name__ == "__main__":
    main()
