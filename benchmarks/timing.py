"""How the benchmarks time and summarise: interleaved repetitions, decode-step clocks, the background-load check,
and the statistics and RESULT line they print.

Why one protocol for all: a ratio is only fair when both sides are warmed up, interleaved (A B, B A, ...) and timed
the same way, and only trustworthy when the run says how loaded the machine was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from machine import machine_busy_seconds
from transformers import LogitsProcessor, LogitsProcessorList


class BackgroundLoad:
    """Measures how much CPU *other* processes used while the block ran.

    Why: on a 2-core machine a single busy neighbour preempts one of the two OpenMP threads, and every parallel
    region then waits a scheduler time slice; one-token matmuls go from ~0.2 ms to several ms. Interleaving keeps
    the ratios roughly fair, but the absolute figures are meaningless then, so every benchmark reports this.
    """

    def __enter__(self) -> BackgroundLoad:
        self.busy0, self.own0, self.wall0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy1 = machine_busy_seconds()
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
