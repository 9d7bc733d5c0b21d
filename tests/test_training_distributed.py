"""The training loop across processes: SIGKILL mid-checkpoint then resume, and 2-process DDP / FSDP2 runs on CPU
(gloo) against a 1-process run with the same global batch.

Every run is `tests/helpers/train_tiny.py` in a fresh interpreter (a kill must really lose the process). The
reference is one process with 2 micro-batches of 2 per step; the 2-process runs use 1 micro-batch of 2 per rank, so
each optimizer step sees the same 4 samples (see `standin_batches`); every third micro-batch is text-only, so in the
2-process runs one rank sometimes has no images while the other has. On a 2-core CPU the file takes about a minute
(DDP ~15 s, FSDP ~27 s: mostly interpreter start-ups).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infimm_hd import InfiMMHDForConditionalGeneration
from infimm_hd.training.progress import read_log

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"
SCRIPT = HELPERS / "train_tiny.py"
ACCELERATE = Path(sys.executable).with_name("accelerate")
STEPS = 4


def helper_args(output_dir: Path, *extra: str) -> list[str]:
    return [str(SCRIPT), "--output-dir", str(output_dir), "--max-steps", str(STEPS), *extra]


def run_single(output_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *helper_args(output_dir, *extra)], capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(config: str, output_dir: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch` with a CPU config from tests/helpers: 2 processes, 1 micro-batch of 2 each per step."""
    command = [str(ACCELERATE), "launch", "--config_file", str(HELPERS / config), "--main_process_port"]
    command += [str(free_port()), *helper_args(output_dir, "--grad-accumulation", "1", *extra)]
    env = os.environ | {"ACCELERATE_USE_CPU": "1"}  # see accelerate_cpu_ddp.yaml
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "checkpoints" / f"step-{STEPS:08d}" / "trainable.safetensors")


def step_losses(output_dir: Path) -> dict[int, float]:
    """Step -> loss from train_log.jsonl; a step logged again after a resume keeps its last value."""
    return {r["step"]: r["loss"] for r in read_log(output_dir) if "loss" in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, 2 micro-batches of 2 per step, 4 steps, no interruption."""
    out = tmp_path_factory.mktemp("reference")
    run_single(out)
    return out


def test_sigkill_while_saving_then_resume_gives_identical_weights(reference, tmp_path):
    out = tmp_path / "killed"
    checkpoints = out / "checkpoints"
    # save_every=1; checkpoints after step 2 stall after their first file, so the kill lands mid-write.
    with open(tmp_path / "killed.log", "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, *helper_args(out, "--save-every", "1", "--pause-saves-after", "2")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while not ((checkpoints / "step-00000002").is_dir() and (checkpoints / ".tmp-step-00000003").is_dir()):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "checkpoint 2 never appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert (checkpoints / ".tmp-step-00000003").is_dir() and not (checkpoints / "step-00000003").exists()

    resumed = run_single(out, "--save-every", "1")
    assert "removed the partial checkpoint" in resumed.stdout
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout
    assert not list(checkpoints.glob(".tmp-*")), "the half-written checkpoint must be cleaned"

    expected = final_weights(reference)
    got = final_weights(out)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), f"{name} differs from the uninterrupted run"

    records = read_log(out)
    resume_at = max(i for i, r in enumerate(records) if r.get("event") == "resume")
    assert records[resume_at]["from_step"] == 2
    assert [r["step"] for r in records[resume_at:] if "loss" in r] == [3, 4], "step 3 must be the first after resume"
    assert step_losses(out) == step_losses(reference)


def check_matches_reference(out: Path, reference: Path, distributed_type: str) -> None:
    run = json.loads((out / "config.json").read_text())["run"]
    assert run["world_size"] == 2 and run["distributed_type"] == distributed_type, run
    losses, expected_losses = step_losses(out), step_losses(reference)
    assert losses.keys() == expected_losses.keys() == set(range(1, STEPS + 1))
    for step in losses:
        assert losses[step] == pytest.approx(expected_losses[step], rel=1e-5), f"loss at step {step}"
    expected = final_weights(reference)
    got = final_weights(out)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    loaded = dict(InfiMMHDForConditionalGeneration.from_pretrained(out / "final").named_parameters())
    for name, value in got.items():
        assert torch.equal(loaded[name], value), f"final/ {name} differs from the last checkpoint"


def test_ddp_two_processes_match_one(reference, tmp_path):
    launch_two("accelerate_cpu_ddp.yaml", tmp_path)
    check_matches_reference(tmp_path, reference, "DistributedType.MULTI_CPU")


def test_fsdp_two_processes_match_one_across_a_crash(reference, tmp_path):
    """FSDP2 (sharded params and optimizer): crash at step 3, resume from the gathered checkpoint of step 2."""
    crashed = launch_two(
        "accelerate_cpu_fsdp.yaml", tmp_path, "--save-every", "1", "--crash-at-position", "2", check=False
    )
    assert crashed.returncode != 0 and "simulated crash" in crashed.stdout + crashed.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000001", "step-00000002"]
    launch_two("accelerate_cpu_fsdp.yaml", tmp_path, "--save-every", "1")
    check_matches_reference(tmp_path, reference, "DistributedType.FSDP")
