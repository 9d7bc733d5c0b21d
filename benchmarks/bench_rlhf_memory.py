"""Peak memory of one direct-RLHF step: the reference by swapping a snapshot of the trainable tensors (what the `rlhf`
objective does) versus a full deep-copied reference model.

What: one RLOO step of `infimm_hd.objectives.RLHFObjective` (k=4 samples of 16 new tokens for each of 2 prompts, one
448 px image each; ViT once per prompt; the no-grad reference pass; the graded forward + backward; an AdamW step),
with the reference held either as `SwappedReference` (a copy of the trainable tensors only) or as a deep copy of the
whole model. Two trainable sets: cross-attention only (the case the swap is for: the LLM and ViT are frozen, so the
snapshot is a few MB) and stage 4's (cross-attention + the whole LLM: the snapshot is most of the model, so the swap
saves only the frozen ViT).

How: a fresh subprocess per (variant, trainable set), run in turn; each builds the model, creates the reference, runs
one warm-up step (grads and AdamW state allocated), resets the peak RSS (/proc/self/clear_refs) and reports the peak of
one more step. Reported: the process's peak RSS over that step (model + reference + optimizer + activations) and the
reference's own bytes. glibc's mmap threshold is pinned at 64 KB so freed tensors go back to the OS.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_rlhf_memory.py [--preset smollm2-135m|tiny] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from contextlib import contextmanager

import repo_path  # noqa: F401
import torch
from bench_stage3_memory import _status_kb, conversation, make_batch, measure_peak_rss, run_json_child
from flags import setup_torch
from machine import machine_line

PRESET = "smollm2-135m"
VARIANTS = ("swap", "deepcopy")
SETS = ("cross-attention only", "stage 4")


class DeepCopyReference:
    """The baseline: a frozen deep copy of the whole starting model, used as the reference module."""

    def __init__(self, model: torch.nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def num_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        yield self.model


def trains(name: str, trainable: str) -> bool:
    if ".cross_attn." in name:
        return True
    return trainable == "stage 4" and not name.startswith("vision_tower.")


def child(preset: str, variant: str, trainable: str, threads: int) -> None:
    """Subprocess: build, set up the reference, warm up, report the peak RSS of one RLHF step as JSON."""
    import infimm_hd
    from infimm_hd.objectives import build_objective

    setup_torch(threads)
    model, processor = infimm_hd.build_model(preset)
    model.set_window_size(448)
    processor.image_processor.window_size = 448
    for name, param in model.named_parameters():
        param.requires_grad_(trains(name, trainable))
    model.train()
    chats = [conversation("What digit is in the top-left corner?", "7")] * 2
    batch = make_batch(processor, chats, side=448, max_windows=1)
    objective = build_objective(
        "rlhf", run={"tokenizer": processor.tokenizer}, algorithm="rloo", k=4, max_new_tokens=16
    )
    model_rss = _status_kb("VmRSS")
    objective.setup(model)
    if variant == "deepcopy":
        objective.reference = DeepCopyReference(model)
    reference_bytes = objective.reference.num_bytes()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = objective.loss(model, batch, 0)
        out.loss_sum.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()
    peak = measure_peak_rss(step)  # before_mb, peak_mb, seconds
    trainable_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20
    total_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(json.dumps({
        "model_rss_mb": model_rss / 1024, **peak,
        "reference_mb": reference_bytes / 2**20, "trainable_mb": trainable_mb, "params_mb": total_mb,
    }))  # fmt: skip


def run_child(preset: str, variant: str, trainable: str, threads: int) -> dict[str, float]:
    args = ["--child", variant, "--set", trainable, "--preset", preset, "--threads", str(threads)]
    return run_json_child(args, script=__file__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=PRESET, help=f"model preset (default {PRESET}; tiny for a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--set", choices=SETS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.preset, args.child, args.set, args.threads)
        return
    setup_torch(args.threads)
    print(machine_line(torch.bfloat16).replace("dtype bfloat16", "bf16 autocast, fp32 weights"))
    print(f"{args.preset}: one RLOO step (2 prompts x k=4, 16 new tokens, 448 px images), a subprocess each ...")
    results = {}
    for trainable in SETS:
        for variant in VARIANTS:
            results[trainable, variant] = r = run_child(args.preset, variant, trainable, args.threads)
            print(f"  {trainable:<21} {variant:<9} peak RSS {r['peak_mb']:7.0f} MB | reference {r['reference_mb']:6.0f}"
                  f" MB | trainable {r['trainable_mb']:5.0f} of {r['params_mb']:.0f} MB | step {r['seconds']:.1f} s",
                  flush=True)  # fmt: skip
    ratios, ok = {}, True
    for trainable in SETS:
        swap, full = results[trainable, "swap"], results[trainable, "deepcopy"]
        ratios[trainable] = swap["peak_mb"] / full["peak_mb"]
        saved, expected = full["peak_mb"] - swap["peak_mb"], full["reference_mb"] - swap["reference_mb"]
        print(f"{trainable}: peak {full['peak_mb']:.0f} -> {swap['peak_mb']:.0f} MB (x{ratios[trainable]:.2f}); "
              f"saved {saved:.0f} MB of the {expected:.0f} MB the two references differ by")  # fmt: skip
        ok &= saved >= 0.8 * expected  # the swap saves (nearly) everything the snapshot leaves out
    print(
        f"RESULT rlhf_reference_memory: peak RSS swap / deep copy = {ratios[SETS[0]]:.2f} (cross-attention only), "
        f"{ratios[SETS[1]]:.2f} (stage 4) (target: saves >= 80% of the frozen weights' bytes)  "
        + ("PASS" if ok else "FAIL")
    )


if __name__ == "__main__":
    main()
