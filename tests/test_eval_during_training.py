"""Evaluation during training: a benchmark scored every N steps is logged beside the loss (train_log.jsonl and
TensorBoard), equals a standalone eval of the same weights, and leaves the training itself unchanged."""

from __future__ import annotations

import json

import pytest
from accelerate.state import AcceleratorState, GradientState

import infimm_hd
from infimm_hd.evaluation.benchmark import get_benchmark
from infimm_hd.evaluation.during_training import BenchmarkDuringTraining
from infimm_hd.evaluation.runner import EvalSettings, evaluate_benchmark
from infimm_hd.objectives import SFTObjective
from infimm_hd.training.config import TrainConfig
from infimm_hd.training.loop import train
from infimm_hd.training.progress import read_log
from infimm_hd.training.trainable import TrainableSpec, apply_trainable
from tests.helpers.standin_batches import StandInBatches
from tests.helpers.toy_benchmark import NAME, make_toy


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run(tmp_path, periodic: bool, toy):
    model, processor = infimm_hd.build_model("tiny")
    apply_trainable(model, TrainableSpec(cross_attention=True))
    config = TrainConfig(
        output_dir=tmp_path, max_steps=4, learning_rate=5e-3, mixed_precision="no", log_every=1, save_every=4
    )
    evaluation = BenchmarkDuringTraining(NAME, toy, processor, tmp_path, every=3, limit=4, batch_size=2)
    batches = StandInBatches(model.config.image_token_id)
    result = train(
        model, batches, SFTObjective(), config, processor=processor, periodic_eval=evaluation if periodic else None
    )
    return model, processor, result


def test_scores_are_logged_every_n_steps_and_at_the_end_without_changing_training(tmp_path, one_thread):
    toy = make_toy(tmp_path / "toy", 6)
    plain_model, _, plain = run(tmp_path / "plain", False, toy)
    model, processor, evaluated = run(tmp_path / "evaluated", True, toy)
    assert evaluated.history == plain.history  # losses, LRs, grad norms: evaluation consumed no training RNG

    key = f"eval/{NAME}/match"
    points = [r for r in read_log(tmp_path / "evaluated") if key in r]
    assert [r["step"] for r in points] == [3, 4]
    assert list((tmp_path / "evaluated" / "tensorboard").glob("events.*"))

    # The last point is the same protocol as a standalone eval of the final weights on the same samples.
    alone = evaluate_benchmark(
        model, processor, get_benchmark(NAME), toy, tmp_path / "alone", EvalSettings(2, None, 4, progress=False)
    )
    assert points[-1][key] == alone["scores"]["match"]
    step4 = tmp_path / "evaluated" / "evals" / "step-00000004" / NAME / "predictions.jsonl"
    alone_predictions = (tmp_path / "alone" / "predictions.jsonl").read_text()
    assert [json.loads(x)["prediction"] for x in step4.read_text().splitlines()] == [
        json.loads(x)["prediction"] for x in alone_predictions.splitlines()
    ]


def test_bad_settings_fail_before_training(tmp_path):
    _, processor = infimm_hd.build_model("tiny")
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        BenchmarkDuringTraining("nope", tmp_path, processor, tmp_path, every=10)
    with pytest.raises(FileNotFoundError, match="evaluation data .*missing"):
        BenchmarkDuringTraining(NAME, tmp_path / "missing", processor, tmp_path, every=10)
    with pytest.raises(ValueError, match="positive number of steps"):
        BenchmarkDuringTraining(NAME, tmp_path, processor, tmp_path, every=0)
