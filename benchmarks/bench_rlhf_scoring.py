"""Peak memory and time of RLHF's graded pass: log-probs through the full logits vs chunked from the hidden states.

What: the `rlhf` objective scores every sampled response token twice per micro-batch, under the policy (with gradient)
and under the reference (without). The logits path materialises the (B, R, V) logits, their float32 copy, the
log-softmax temporaries and a float32 gradient of the same size; `logprobs_of_last` (`infimm_hd/linear_logprobs.py`)
computes log-probs and entropies in row chunks from the hidden states. Both give the same values and gradients
(tests/test_linear_logprobs.py, tests/test_rlhf.py); this measures what that saves.

Setup: SmolLM2-135M's shapes (hidden 576, 30 layers, FFN 1536, 9 heads, vocabulary 49152; random weights) inside
InfiMM-HD, text-only rollouts of B=32 responses x (64 prompt + 128 response) tokens, float32 (`--bf16`: float32
weights under bf16 autocast, the training loop's mixed precision; only where the CPU has native bf16 matmuls,
AVX512-BF16 or AMX: on AVX2 alone torch emulates them ~10-100x slower than float32). One graded step = forward +
backward of a surrogate sum_t A_t * logp_t with random advantages, plus the entropy. Each variant runs in a fresh
process (one warm-up step, then the peak RSS growth of one more step, via /proc/self/clear_refs), the two alternated
`--reps` times; medians.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_rlhf_scoring.py [--vocab 151936] [--responses 32] [--reps 3] [--bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import repo_path  # noqa: F401
import torch
from bench_stage3_memory import measure_peak_rss, run_json_child
from flags import setup_torch
from machine import cpu_model_name
from model_builders import build_infimm
from model_scale import Scale
from timing import median

from infimm_hd.objectives import rl_math
from infimm_hd.objectives.rollout import Rollout, position_ids_from

PROMPT, RESPONSE = 64, 128
VARIANTS = ("logits", "chunked")


def make_rollout(responses: int, vocab: int) -> Rollout:
    """A text-only rollout of random tokens: every response full length (the worst case for memory)."""
    g = torch.Generator().manual_seed(0)
    sequences = torch.randint(3, vocab, (responses, PROMPT + RESPONSE), generator=g)
    attention = torch.ones_like(sequences)
    mask = torch.ones(responses, RESPONSE, dtype=torch.bool)
    return Rollout(
        sequences, attention, position_ids_from(attention), PROMPT, sequences[:, PROMPT:], mask, mask[:, -1], None, 1
    )


def graded_step(model, rollout: Rollout, variant: str, advantages: torch.Tensor, bf16: bool) -> float:
    """Forward + backward of the surrogate; returns seconds."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if variant == "logits":  # what the objective did before `logprobs_of_last`
            logits = model(**rollout.model_inputs()).logits[:, :-1]  # (B, R, V)
            logp = rl_math.logprobs_of(logits, rollout.response)
            with torch.no_grad():
                entropy = rl_math.entropy_from_logits(logits.detach())
        else:
            out = model(**rollout.scoring_inputs(1.0))
            logp, entropy = out.token_logprobs, out.token_entropy
    loss = -(advantages * logp).sum() + 0.0 * entropy.sum()
    loss.backward()
    model.zero_grad(set_to_none=False)
    return time.perf_counter() - start


def child(variant: str, responses: int, vocab: int, bf16: bool) -> None:
    """Subprocess: build the model, one warm-up step, then print the peak RSS growth and time of one step as JSON."""
    setup_torch(2)
    scale = Scale(hidden=576, layers=30, intermediate=1536, heads=9, vocab=vocab)
    model, _ = build_infimm(scale, torch.float32)
    model.train()
    rollout = make_rollout(responses, vocab)
    advantages = torch.randn(responses, RESPONSE, generator=torch.Generator().manual_seed(1))
    graded_step(model, rollout, variant, advantages, bf16)  # gradients exist from here on, as in training
    print(json.dumps(measure_peak_rss(lambda: graded_step(model, rollout, variant, advantages, bf16))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=49152, help="vocabulary size (SmolLM2 49152; Qwen2 151936)")
    parser.add_argument("--responses", type=int, default=32, help="responses per micro-batch (B)")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per variant, alternated")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (needs native bf16 matmuls to be fast)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.responses, args.vocab, args.bf16)
        return
    print(
        f"machine: {cpu_model_name()}, torch {torch.__version__}, 2 threads, {'bf16 autocast' if args.bf16 else 'fp32'}"
    )
    print(
        f"graded pass: {args.responses} responses x ({PROMPT} prompt + {RESPONSE} response) tokens, vocab {args.vocab}"
    )
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.reps):
        for variant in VARIANTS:
            argv = ["--child", variant, "--responses", str(args.responses), "--vocab", str(args.vocab)]
            argv += ["--bf16"] if args.bf16 else []
            results[variant].append(run_json_child(argv, script=__file__))
    growth = {v: median([r["peak_mb"] - r["before_mb"] for r in rs]) for v, rs in results.items()}
    seconds = {v: median([r["seconds"] for r in rs]) for v, rs in results.items()}
    logits_mb = args.responses * RESPONSE * args.vocab * 4 / 2**20
    print(f"(one float32 (B, R, V) tensor: {logits_mb:,.0f} MB)")
    for variant in VARIANTS:
        print(f"  {variant:8s} peak RSS growth {growth[variant]:8,.0f} MB   step {seconds[variant]:6.2f} s")
    print(
        f"chunked vs logits: {growth['logits'] / max(growth['chunked'], 1):.1f}x less peak memory, "
        f"{seconds['logits'] / seconds['chunked']:.2f}x the speed"
    )


if __name__ == "__main__":
    sys.exit(main())
