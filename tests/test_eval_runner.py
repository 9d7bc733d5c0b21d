"""The evaluation runner: one process, a SIGKILLed-and-resumed run and a 2-process run give the same predictions and
totals; foreign prediction files and bad data are refused before anything is written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infimm_hd.evaluation.benchmark import get_benchmark
from infimm_hd.evaluation.runner import PREDICTIONS, SUMMARY, EvalSettings, evaluate_benchmark, part_path
from infimm_hd.evaluation.samples import BenchmarkDataError
from infimm_hd.presets import build_model
from tests.helpers.toy_benchmark import NAME, make_toy

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "tests" / "helpers" / "eval_toy.py"
ACCELERATE = Path(sys.executable).with_name("accelerate")
N = 10  # samples; batch size 3 -> batches of 3, 3, 3, 1


def eval_args(data: Path, out: Path) -> list[str]:
    return ["--model", "tiny", "--benchmark", NAME, "--data", str(data), "--output", str(out)]


def run_helper(*args: str, launcher: list[str] | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(HELPER), *args, "--batch-size", "3", "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ | (env or {}))


def predictions(out: Path) -> list[dict]:
    folder = next((out / NAME).iterdir())
    return [json.loads(line) for line in (folder / PREDICTIONS).read_text().splitlines()]


def summary(out: Path) -> dict:
    return json.loads((next((out / NAME).iterdir()) / SUMMARY).read_text())


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy"), N)


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory) -> Path:
    """One uninterrupted process."""
    out = tmp_path_factory.mktemp("reference")
    result = run_helper(*eval_args(toy, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_one_process_writes_every_sample_in_order_with_scores(reference):
    records = predictions(reference)
    assert [r["qid"] for r in records] == [str(i) for i in range(N)]
    assert all(r["benchmark"] == NAME and set(r["scores"]) == {"match"} for r in records)
    s = summary(reference)
    expected = 100.0 * sum(r["scores"]["match"] for r in records) / N
    assert s["scores"]["match"] == pytest.approx(expected) and s["num_samples"] == N
    assert s["instruction"] == "\nAnswer briefly."
    assert not list(next((reference / NAME).iterdir()).glob("predictions.rank-*"))  # parts merged and removed


def test_sigkilled_run_resumes_without_repeating_or_losing_samples(toy, reference, tmp_path):
    killed = run_helper("--kill-after-batches", "2", *eval_args(toy, tmp_path))
    assert killed.returncode == -9
    folder = tmp_path / NAME / next((tmp_path / NAME).iterdir()).name
    part = part_path(folder, 0)
    assert len(part.read_text().splitlines()) == 6  # two batches of 3 survived the kill
    with open(part, "a") as f:
        f.write('{"benchmark": "toy-vqa", "qid": "6", "predic')  # and a torn line, as a kill mid-write leaves
    resumed = run_helper(*eval_args(toy, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert predictions(tmp_path) == predictions(reference)
    assert summary(tmp_path)["scores"] == summary(reference)["scores"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_same_predictions_and_totals(toy, reference, tmp_path):
    launcher = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "tests/helpers/accelerate_cpu_ddp.yaml")]
    launcher += ["--main_process_port", str(free_port())]
    result = run_helper(*eval_args(toy, tmp_path), launcher=launcher, env={"ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert predictions(tmp_path) == predictions(reference)
    assert summary(tmp_path)["scores"] == summary(reference)["scores"]


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny")


def test_a_prediction_file_of_another_benchmark_is_refused_and_kept(toy, tiny, tmp_path):
    model, processor = tiny
    foreign = json.dumps({"benchmark": "textvqa", "max_windows": model.config.max_windows_inference, "qid": "0"})
    (tmp_path / PREDICTIONS).write_text(foreign + "\n")
    with pytest.raises(BenchmarkDataError, match=r"predictions.jsonl: line 1 field 'benchmark' is 'textvqa'"):
        evaluate_benchmark(model, processor, get_benchmark(NAME), toy, tmp_path, EvalSettings(progress=False))
    assert (tmp_path / PREDICTIONS).read_text() == foreign + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREDICTIONS]


def test_another_window_budget_in_the_same_folder_is_refused(toy, tiny, tmp_path):
    model, processor = tiny
    settings = EvalSettings(batch_size=5, max_windows=0, limit=5, max_new_tokens=2, progress=False)
    evaluate_benchmark(model, processor, get_benchmark(NAME), toy, tmp_path, settings)
    before = (tmp_path / PREDICTIONS).read_text()
    with pytest.raises(BenchmarkDataError, match="field 'max_windows' is 0, not 1"):
        evaluate_benchmark(
            model, processor, get_benchmark(NAME), toy, tmp_path, EvalSettings(max_windows=1, progress=False)
        )
    assert (tmp_path / PREDICTIONS).read_text() == before


def test_bad_data_names_the_file_and_field(toy, tiny, tmp_path):
    model, processor = tiny
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "question": "q?", "answers": ["a"]}) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"bad.jsonl: line 1 has no field 'image'"):
        evaluate_benchmark(model, processor, get_benchmark(NAME), bad, tmp_path / "out", EvalSettings())
    bad.write_text(json.dumps({"id": 1, "image": "gone.jpg", "question": "q?", "answers": ["a"]}) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"field 'image' names the image .*gone.jpg, which does not exist"):
        evaluate_benchmark(model, processor, get_benchmark(NAME), bad, tmp_path / "out", EvalSettings())
    assert not (tmp_path / "out").exists()  # nothing created for a run that could not start


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown benchmark 'vqa3'; known: .*toy-vqa"):
        get_benchmark("vqa3")
