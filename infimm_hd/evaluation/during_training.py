"""A benchmark scored every N training steps on a held-out subset: `BenchmarkDuringTraining`, the loop's
`periodic_eval`.

Each evaluation writes a complete runner folder (`OUTPUT/evals/step-XXXXXXXX/<benchmark>/`: predictions, summary),
so a curve point can be inspected sample by sample, and returns `eval/<benchmark>/<key>` scores the loop logs
beside the loss (train_log.jsonl, TensorBoard, W&B). The same protocol as `infimm-hd eval`, on the first `limit`
samples, so the last point equals a standalone eval of the final model with `--limit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .benchmark import Benchmark, get_benchmark
from .runner import EvalSettings, Ranks, evaluate_benchmark


@dataclass
class BenchmarkDuringTraining:
    """benchmark/data: as for `infimm-hd eval`. every: steps between evaluations (and at the last step). limit:
    held-out samples per evaluation. output_dir: the run's output folder."""

    benchmark: str
    data: str | Path
    processor: Any
    output_dir: str | Path
    every: int
    limit: int = 64
    batch_size: int = 8
    max_windows: int | None = None
    _spec: Benchmark = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"evaluation every {self.every} steps: give a positive number of steps")
        self._spec = get_benchmark(self.benchmark)  # an unknown name fails before training starts
        if not Path(self.data).exists():
            raise FileNotFoundError(f"the evaluation data {self.data} (for {self.benchmark}) does not exist")

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        folder = Path(self.output_dir) / "evals" / f"step-{step:08d}" / self.benchmark
        settings = EvalSettings(self.batch_size, self.max_windows, self.limit, None, progress=False)
        summary = evaluate_benchmark(model, self.processor, self._spec, self.data, folder, settings, Ranks(0, 1))
        return {f"eval/{self.benchmark}/{k}": float(v) for k, v in summary["scores"].items()}
