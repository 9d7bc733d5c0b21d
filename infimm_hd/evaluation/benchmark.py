"""`Benchmark`: what makes a public benchmark itself (its files, its prompt, its metric, its summary), and the
registry `infimm-hd eval --benchmark NAME` looks names up in.

A benchmark is data, not a class hierarchy: five functions and a few constants, so each `benchmarks/<name>.py`
reads top to bottom as "how this benchmark is published, asked and scored", with nothing inherited to look up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .samples import EvalSample

# The LLaVA-1.5 / lmms-eval short-answer instruction, appended after the question of open-ended VQA benchmarks.
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
# The lmms-eval instruction after the options of letter-answer benchmarks (ScienceQA, MMBench, MMMU).
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."

Content = list[dict[str, Any]]  # a user message's content parts: {"type": "image"} (filled in order) / "text"


def image_then_text(sample: EvalSample, text: str) -> Content:
    """The LLaVA layout every single-image benchmark here uses: the image(s), then the text."""
    return [{"type": "image"} for _ in sample.images] + [{"type": "text", "text": text}]


def mean_by(records: Sequence[dict[str, Any]], score: str, group: str | None = None) -> dict[str, float]:
    """Mean of `record["scores"][score]` overall (key `score`) and, with `group`, per `record["meta"][group]` value
    (keys `"{score}/{value}"`), in percent as the papers report them."""
    values = [r["scores"][score] for r in records]
    out = {score: 100.0 * sum(values) / len(values)} if values else {score: float("nan")}
    if group is not None:
        groups: dict[str, list[float]] = defaultdict(list)
        for r in records:
            groups[str(r["meta"].get(group))].append(r["scores"][score])
        out |= {f"{score}/{g}": 100.0 * sum(v) / len(v) for g, v in sorted(groups.items())}
    return out


def grouped_means(records: Sequence[dict[str, Any]], score: str, groups: Sequence[str]) -> dict[str, float]:
    """`mean_by` overall and per value of each `meta` field in `groups`, keyed `"{score}/{group}/{value}"`."""
    out = mean_by(records, score)
    for group in groups:
        by_value = mean_by(records, score, group)
        out |= {f"{score}/{group}/{key.split('/', 1)[1]}": v for key, v in by_value.items() if key != score}
    return out


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    name: the `--benchmark` name.
    metric: the headline key of the summary (the number a paper's table shows).
    load: the published files (a file or folder; see `layouts`) -> samples, in the benchmark's order; raises
        `BenchmarkDataError` naming the file and field when the layout is wrong or an image is missing.
    prompt: a sample -> the user message's content parts (question, options, the benchmark's instruction).
    score: (sample, the model's answer) -> per-sample scores, JSON numbers, e.g. {"vqa_accuracy": 0.6}.
    summarize: the scored records (dicts with "scores" and "meta") -> the summary (headline key included).
    layouts: the published layouts `load` reads, for `--help` and error messages.
    max_new_tokens: generation budget per answer.
    instruction: the prompt suffix, recorded in the results file.
    """

    name: str
    metric: str
    load: Callable[[Path], list[EvalSample]]
    prompt: Callable[[EvalSample], Content]
    score: Callable[[EvalSample, str], dict[str, float]]
    summarize: Callable[[Sequence[dict[str, Any]]], dict[str, float]]
    layouts: str
    max_new_tokens: int = 16
    instruction: str = SHORT_ANSWER
    paper: str = ""  # where the InfiMM-HD paper reports it, e.g. "Table 2 (val)"
    extra: dict[str, Any] = field(default_factory=dict)


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    if benchmark.name in BENCHMARKS:
        raise ValueError(f"benchmark {benchmark.name!r} is registered twice")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark `name`, or a ValueError listing the known names."""
    from . import benchmarks  # noqa: F401  (registers every benchmark module)

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[name]
