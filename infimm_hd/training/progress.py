"""What a run reports, on the main process only: a progress bar (or plain lines), `train_log.jsonl`, TensorBoard and,
optionally, Weights & Biases.

The bar is tqdm's when tqdm is installed and stderr is a terminal; in batch jobs (stderr to a file) plain lines read
better than carriage-return bars. `train_log.jsonl` always gets one JSON object per logged step and per event (start,
resume, checkpoint, end): the machine-readable record that the tests and later analysis read.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

LOG_FILE = "train_log.jsonl"


class ProgressLogger:
    """Per-step metrics in, rates / ETA / sinks out. Disabled (a no-op) on every process but the main one.

    `step(...)` is called once per optimizer step with the step's global sample and token counts; every `log_every`
    steps (and at the last step) it turns them into samples/s and tokens/s over the window and writes everywhere.
    """

    def __init__(
        self,
        output_dir: Path,
        max_steps: int,
        start_step: int,
        *,
        enabled: bool,
        log_every: int,
        tensorboard: bool,
        wandb: bool,
        wandb_project: str,
        config: dict[str, Any],
    ) -> None:
        self.enabled, self.max_steps, self.start_step, self.log_every = enabled, max_steps, start_step, log_every
        self.started = self.window_start = time.perf_counter()
        self.window_samples = self.window_tokens = 0
        self.bar = self.writer = self.wandb = None
        if not enabled:
            return
        self.log_path = Path(output_dir) / LOG_FILE
        if _use_tqdm():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", dynamic_ncols=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

            # purge_step drops the points a killed run logged after its last checkpoint, so curves never fold back.
            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as err:
                raise ImportError("TrainConfig.wandb=True needs `pip install wandb`") from err
            self.wandb = wandb_module.init(project=wandb_project, dir=str(output_dir), config=config, resume="allow")

    def print(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def event(self, name: str, **fields: Any) -> None:
        """A run event (start, resume, checkpoint, end) into the JSONL log."""
        if self.enabled:
            self._append({"event": name, **fields})

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        """Values measured at `step` outside the step's own metrics (periodic evaluation scores): one JSONL record
        `{"step": step, ...}` and the same TensorBoard / W&B series, next to the loss."""
        if not self.enabled or not metrics:
            return
        self._append({"step": step, **metrics})
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        self.print(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))

    def step(self, step: int, metrics: dict[str, float], samples: int, tokens: int) -> None:
        """Record optimizer step `step` (1-based count of updates done) with its global sample / token counts."""
        if not self.enabled:
            return
        self.window_samples += samples
        self.window_tokens += tokens
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every and step != self.max_steps:
            return
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        per_step = (now - self.started) / max(step - self.start_step, 1)
        metrics = dict(metrics)
        metrics["samples_per_s"] = self.window_samples / elapsed
        metrics["tokens_per_s"] = self.window_tokens / elapsed
        eta = datetime.timedelta(seconds=round(per_step * (self.max_steps - step)))
        self.window_start, self.window_samples, self.window_tokens = now, 0, 0

        self._append({"step": step, **metrics, "eta_s": eta.total_seconds()})
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", refresh=False)
        else:
            print(
                f"step {step}/{self.max_steps} | loss {metrics['loss']:.4f} | lr {metrics['lr']:.3e} | grad norm "
                f"{metrics['grad_norm']:.3f} | {metrics['samples_per_s']:.1f} samples/s | "
                f"{metrics['tokens_per_s']:.0f} tokens/s | eta {eta}",
                flush=True,
            )

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _use_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return sys.stderr.isatty()


def read_log(output_dir: str | Path) -> list[dict[str, Any]]:
    """The records of `train_log.jsonl` (all runs that wrote to this output_dir, in order)."""
    path = Path(output_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
