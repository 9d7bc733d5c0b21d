"""Loss curves as PNG, drawn from a run's `train_log.jsonl` (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from .progress import read_log


def plot_loss(output_dir: str | Path, title: str = "", filename: str = "loss.png") -> Path | None:
    """Plot the logged loss (and learning rate, on a second axis) of the run in `output_dir`; returns the PNG path,
    or None when nothing was logged. A resumed run's records continue the same curve (they carry the step)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    points = {r["step"]: r for r in read_log(output_dir) if "loss" in r and "step" in r}  # a resume may re-log a step
    if not points:
        return None
    steps = sorted(points)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, [points[s]["loss"] for s in steps], marker="o", markersize=2, label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (per label token)")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [points[s]["lr"] for s in steps], color="tab:orange", alpha=0.6, label="learning rate")
    lr_ax.set_ylabel("learning rate")
    ax.set_title(title or Path(output_dir).name)
    fig.tight_layout()
    path = Path(output_dir) / filename
    fig.savefig(path)
    plt.close(fig)
    return path
