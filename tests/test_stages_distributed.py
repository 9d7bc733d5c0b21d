"""Stage 1 under `accelerate launch --num_processes 2` on CPU (gloo), with DDP and with FSDP2, against one process
with the same global batch.

The loader gives reader r = rank * workers + worker its own deterministic stream, so one process with 2 workers and
2 micro-batches per step sees, at every step, exactly the samples that 2 processes with 1 worker and 1 micro-batch
each see (reader 0's batch and reader 1's batch): the losses must agree to float rounding, not just roughly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infimm_hd import InfiMMHDForConditionalGeneration
from infimm_hd.training.progress import read_log

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"
ACCELERATE = Path(sys.executable).with_name("accelerate")
STEPS = 2


@pytest.fixture(scope="module")
def data(caption_shards) -> Path:
    return caption_shards


def stage1_args(data: Path, output: Path, workers: int, accumulation: int) -> list[str]:
    return [
        "-m", "stages.stage1_pretrain", "--preset", "tiny", "--data", str(data), "--output", str(output),
        "--max-steps", str(STEPS), "--batch-size", "2", "--grad-accumulation", str(accumulation),
        "--num-workers", str(workers), "--mixed-precision", "no", "--log-every", "1", "--save-every", "1",
        "--deterministic",
    ]  # fmt: skip


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(output: Path) -> list[float]:
    return [r["loss"] for r in read_log(output) if "loss" in r]


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, *stage1_args(data, out, workers=2, accumulation=2)])
    return out


@pytest.mark.parametrize("config", ["accelerate_cpu_ddp.yaml", "accelerate_cpu_fsdp.yaml"])
def test_two_process_stage1_matches_one_process(single, data, tmp_path, config):
    command = [str(ACCELERATE), "launch", "--config_file", str(HELPERS / config), "--main_process_port"]
    command += [str(free_port()), *stage1_args(data, tmp_path, workers=1, accumulation=1)]
    run(command, env=os.environ | {"ACCELERATE_USE_CPU": "1"})
    assert len(losses(tmp_path)) == STEPS
    torch.testing.assert_close(losses(tmp_path), losses(single), rtol=1e-5, atol=0)
    ours = load_file(tmp_path / "checkpoints" / f"step-{STEPS:08d}" / "trainable.safetensors")
    ref = load_file(single / "checkpoints" / f"step-{STEPS:08d}" / "trainable.safetensors")
    assert ours.keys() == ref.keys() and ours
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-4, atol=1e-7, msg=f"{key} differs")
    model = InfiMMHDForConditionalGeneration.from_pretrained(tmp_path / "final")
    assert model.config.window_size == 224
