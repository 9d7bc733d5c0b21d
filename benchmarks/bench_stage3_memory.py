"""Stage-3 training step with and without gradient checkpointing: samples/s and peak memory at 1344x1344.

What: stage 3 trains the ViT and the cross-attention blocks (LLM frozen) on high-resolution images, each one a
448 px thumbnail + 3x3 windows = 10 crops through the ViT. Checkpointing (the LLM's decoder layers and the blocks
through transformers' switch, the ViT blocks through timm's) trades recomputation for memory; this prints both sides.

Model: the `smollm2-135m` preset (the real SmolLM2-135M: 30 layers, hidden 576, 7 blocks of 6 x 64; its small random
ViT: patch 28, width 192, depth 4, 257 tokens per crop = 2,570 keys per image). Batch: 8 VQA conversations (one
1344x1344 image each, ~45 tokens, right-padded as the loader does). Step: forward with labels under bf16 autocast
(fp32 weights, as the training loop), backward, AdamW step.

A third variant, informational, is a proposed library change: no checkpointing, with the frozen `nn.Linear` weights
(the LLM's, here) stored in bf16. Under bf16 autocast this is bit-identical (autocast rounds them to bf16 anyway),
but autocast no longer makes a bf16 copy of every frozen weight each forward, which autograd keeps for the input
gradient until backward.

* samples/s: every variant in this process (checkpointing toggled on the same model, the bf16 variant on a copy),
  interleaved steps (A B C, C B A, ...), medians.
* peak memory: a fresh subprocess per variant, run in turn; each loads the same model and batch, runs one warm-up
  step (grads and AdamW state allocated), resets the peak RSS (/proc/self/clear_refs) and reports how far one more
  step raised it above the RSS before that step. glibc's mmap threshold is pinned at 64 KB there so freed tensors go
  back to the OS and RSS follows the live tensors (otherwise the heap keeps what the warm-up step freed).
* saved activations: the bytes autograd holds between forward and backward, summed over the distinct storages that
  `torch.autograd.graph.saved_tensors_hooks` sees (parameters excluded): deterministic, and what checkpointing drops.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_stage3_memory.py [--quick] [--batch-size 8] [--reps 3]

Also the stage builder and train step that `bench_loader_vs_step.py` and `bench_mfu_stage4.py` import.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import repo_path  # noqa: F401
import torch
from flags import setup_torch
from machine import machine_line
from PIL import Image
from timing import BackgroundLoad, interleaved, median
from torch import nn

PRESET = "smollm2-135m"
SIDE = 1344  # 3x3 windows of 448 + thumbnail = 10 crops
VARIANTS = ("no checkpointing", "checkpointing", "frozen weights bf16")


# -- pieces shared with the other training benchmarks --------------------------------------------------------------
def trains(name: str, stage: int) -> bool:
    """Whether parameter `name` trains in `stage` (3: ViT + cross-attention; 4: cross-attention + LLM incl. its
    token embeddings)."""
    if stage == 3:
        return name.startswith("vision_tower.") or ".cross_attn." in name
    if stage == 4:
        return not name.startswith("vision_tower.")
    raise ValueError(f"stage must be 3 or 4, got {stage}")


def build_stage(stage: int, preset: str = PRESET, seed: int = 0):
    """(model in train mode with the stage's parameters trainable, processor)."""
    import infimm_hd

    model, processor = infimm_hd.build_model(preset, seed=seed)
    for name, param in model.named_parameters():
        param.requires_grad_(trains(name, stage))
    return model.train(), processor


def random_image(side: int, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def conversation(question: str, answer: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def make_batch(processor, chats: list[list[dict[str, Any]]], side: int, max_windows: int, seed: int = 0) -> dict:
    """One image per conversation -> a right-padded training batch, exactly as the streaming loader collates it."""
    from infimm_hd.training.collate import collate, encode_sample

    rng = np.random.default_rng(seed)
    samples = [encode_sample(processor, chat, [random_image(side, rng)], max_windows) for chat in chats]
    return collate(samples, processor.tokenizer.pad_token_id)


def vqa_batch(processor, batch_size: int, side: int = SIDE, seed: int = 0) -> dict:
    """`batch_size` short VQA conversations (the synthetic set's digit question), one `side` px image each."""
    chat = conversation("What digit is in the top-left corner?", "7")
    return make_batch(processor, [chat] * batch_size, side, max_windows=9, seed=seed)


MODEL_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_grids", "image_sample_index")


def forward_loss(model, batch: dict) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**{k: batch[k] for k in MODEL_KEYS}, use_cache=False).loss


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """Forward with labels (bf16 autocast), backward, optimizer step; returns its seconds."""
    start = time.perf_counter()
    forward_loss(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def adamw(model) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)


def set_checkpointing(model, enable: bool) -> None:
    """Activation checkpointing on the LLM layers and cross-attention blocks (transformers) and the ViT blocks (timm),
    non-reentrant as in `training.loop.enable_gradient_checkpointing`.

    transformers' switch also hooks the token embeddings so their output requires grad, and its `disable` leaves that
    hook in place; it is removed here so that "off" is the plain model again.
    """
    if enable:
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
        model.disable_input_require_grads()
    model.vision_tower.set_grad_checkpointing(enable)


def untied_linears(model) -> list[nn.Linear]:
    """Every `nn.Linear` except one whose weight is the token embedding (a tied LM head: its lookup must stay fp32)."""
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    return [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in embeddings]


def cast_frozen_linears(model) -> int:
    """Store every frozen untied `nn.Linear` in bf16; returns how many. Exact under bf16 autocast, which would round
    these weights to bf16 in every forward anyway."""
    frozen = [m for m in untied_linears(model) if not m.weight.requires_grad]
    for module in frozen:
        module.to(torch.bfloat16)
    return len(frozen)


def prepare(model, variant: str):
    """Put a fresh fp32 model in `variant`'s state (see `VARIANTS`)."""
    set_checkpointing(model, variant == "checkpointing")
    if variant == "frozen weights bf16":
        cast_frozen_linears(model)
    return model


# -- memory ---------------------------------------------------------------------------------------------------------
def saved_activation_bytes(model, batch: dict, loss_fn: Callable[..., torch.Tensor] | None = None) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward in one forward (then backward);
    `loss_fn(model, batch)` runs the forward (default: the model's own loss under bf16 autocast)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:  # all saved storages are alive until backward: pointers do not repeat
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = (loss_fn or forward_loss)(model, batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure_peak_rss(step: Callable[[], float]) -> dict[str, float]:
    """Run `step` (returning its seconds) with the process's peak RSS reset to its current RSS just before:
    {"before_mb", "peak_mb", "seconds"}. Linux only (/proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    before = _status_kb("VmRSS")
    seconds = step()
    return {"before_mb": before / 1024, "peak_mb": _status_kb("VmHWM") / 1024, "seconds": seconds}


def run_json_child(args: list[str], script: str = __file__) -> dict[str, float]:
    """Run `script` with `args` in a fresh Python process and return the JSON its last stdout line holds. glibc is
    told to return freed memory, so a peak measured there is the step's own."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(state: str, variant: str, threads: int) -> None:
    """Subprocess: load (model, batch), warm up, then report the RSS peak growth of one step as JSON."""
    setup_torch(threads)
    model, batch = torch.load(state, weights_only=False)
    prepare(model, variant)
    optimizer = adamw(model)
    train_step(model, optimizer, batch)  # grads + AdamW state exist from here on, as in training
    print(json.dumps(measure_peak_rss(lambda: train_step(model, optimizer, batch))))


def run_child(state: str, variant: str, threads: int) -> dict[str, float]:
    return run_json_child(["--child", variant, "--state", state, "--threads", str(threads)])


# -- main -----------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 rep, one memory subprocess each (~1 min)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step (default 8)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per variant (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default=PRESET, help=f"model preset (default {PRESET})")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.state, args.child, args.threads)
        return
    setup_torch(args.threads)
    batch_size = args.batch_size or (2 if args.quick else 8)
    reps = args.reps or (1 if args.quick else 3)
    mem_reps = 1 if args.quick else 2
    print(machine_line(torch.bfloat16).replace("dtype bfloat16", "bf16 autocast, fp32 weights"))

    print(f"building {args.preset} (stage 3: ViT + cross-attention trainable, LLM frozen) ...", flush=True)
    model, processor = build_stage(3, args.preset)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    batch = vqa_batch(processor, batch_size)
    crops, tokens = batch["pixel_values"].shape[0], model.vision_tower.tokens_per_crop
    print(
        f"params {total / 1e6:.1f}M, trainable {trainable / 1e6:.2f}M | batch {batch_size} x {SIDE}x{SIDE} images: "
        f"{crops} crops x {tokens} ViT tokens, text {tuple(batch['input_ids'].shape)}"
    )
    with tempfile.TemporaryDirectory() as tmp:  # the fp32 model, saved before any variant touches it
        state = str(Path(tmp) / "state.pt")
        torch.save((model, batch), state)
        models = {v: model for v in VARIANTS[:2]} | {VARIANTS[2]: prepare(copy.deepcopy(model), VARIANTS[2])}
        with torch.no_grad():
            losses = {v: forward_loss(prepare(models[v], v), batch).item() for v in (VARIANTS[0], VARIANTS[2])}
        print(f"loss, fp32 vs bf16 frozen weights: {losses[VARIANTS[0]]:.6f} vs {losses[VARIANTS[2]]:.6f}")

        saved = {v: saved_activation_bytes(prepare(models[v], v), batch) / 2**20 for v in VARIANTS}
        print("saved activations: " + ", ".join(f"{v} {mb:.0f} MB" for v, mb in saved.items()))

        optimizers = {v: adamw(models[v]) for v in (VARIANTS[0], VARIANTS[2])}
        optimizers[VARIANTS[1]] = optimizers[VARIANTS[0]]  # the same model, checkpointing toggled

        def runner(variant: str):
            return lambda: train_step(prepare(models[variant], variant), optimizers[variant], batch)

        print(f"timing: {reps} interleaved steps per variant after 1 warm-up each ...", flush=True)
        with BackgroundLoad() as load:
            times = interleaved({v: runner(v) for v in VARIANTS}, reps=reps, warmup=1)
        print(load.line())

        print(f"memory: a fresh subprocess per variant, {mem_reps} each, in turn ...", flush=True)
        memory: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for rep in range(mem_reps):
            for variant in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
                memory[variant].append(run_child(state, variant, args.threads))

    print(f"{'variant':<22} {'s/step':>7} {'samples/s':>10} {'peak RSS growth':>16} {'peak RSS':>9} {'saved act.':>11}")
    rate, growth = {}, {}
    for v in VARIANTS:
        rate[v] = batch_size / median(times[v])
        growth[v] = median([m["peak_mb"] - m["before_mb"] for m in memory[v]])
        peak = median([m["peak_mb"] for m in memory[v]])
        print(
            f"{v:<22} {median(times[v]):>7.2f} {rate[v]:>10.2f} {growth[v]:>13.0f} MB {peak:>6.0f} MB "
            f"{saved[v]:>8.0f} MB"
        )
    base = VARIANTS[0]
    for v in VARIANTS[1:]:
        print(
            f"{v} vs {base}: samples/s x{rate[v] / rate[base]:.2f}; peak RSS growth {growth[base]:.0f} -> "
            f"{growth[v]:.0f} MB ({(1 - growth[v] / growth[base]) * 100:.0f}% less); saved activations "
            f"{saved[base]:.0f} -> {saved[v]:.0f} MB ({(1 - saved[v] / saved[base]) * 100:.0f}% less)"
        )
    ckpt = VARIANTS[1]
    less = {"growth": 1 - growth[ckpt] / growth[base], "saved": 1 - saved[ckpt] / saved[base]}
    print(
        f"RESULT stage3_checkpointing: samples/s x{rate[ckpt] / rate[base]:.2f}, peak RSS growth "
        f"-{less['growth'] * 100:.0f}%, saved activations -{less['saved'] * 100:.0f}% (no target: informational)"
    )


if __name__ == "__main__":
    main()
