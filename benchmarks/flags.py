"""The flags the benchmarks share (--quick, --dtype, --threads, --hidden, --layers, --reps, --seed), the torch
setup they ask for, and the decode benchmarks' common start (`decode_setup`).
"""

from __future__ import annotations

import argparse

import torch
from machine import machine_line
from model_scale import Scale, scale_from_args

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


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


def setup_torch(threads: int, seed: int = 0) -> None:
    """Pin the thread count (both sides of every comparison run under the same setting) and seed."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


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
