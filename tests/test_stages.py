"""The four stage scripts on the tiny preset: 3 steps each, chained through their `final/` folders, then resumed;
a SIGKILLed stage resumed to the same weights as an uninterrupted one; the trainable-set check; corrupt images.

The data is a small `data_prep.synthetic` set (1x3-window canvases, the cheapest high-resolution shape).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data_prep.synthetic import generate
from infimm_hd import InfiMMHDForConditionalGeneration
from infimm_hd.training.progress import read_log
from stages import (
    common,
    stage1_pretrain,
    stage2_continued_pretraining,
    stage3_dynamic_resolution,
    stage4_instruction_tuning,
)

ROOT = Path(__file__).resolve().parents[1]
STAGES = [stage1_pretrain, stage2_continued_pretraining, stage3_dynamic_resolution, stage4_instruction_tuning]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate(
        out,
        num_images_train=16,
        num_images_heldout=4,
        tasks=("vqa", "caption", "cot"),
        grids=((1, 3),),
        shard_size=8,
        workers=1,
        log=lambda *a: None,
    )
    return out


def stage_argv(data: Path, output: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--preset", "tiny", "--data", str(data), "--output", str(output), "--max-steps", str(steps),
        "--batch-size", "2", "--num-workers", "0", "--log-every", "1", "--save-every", "1", *extra,
    ]  # fmt: skip


def losses(output: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(output) if "loss" in r}


@pytest.fixture(scope="module")
def chained(data, tmp_path_factory) -> list[Path]:
    """Stages 1-4, 3 steps each, each starting from the previous stage's final folder."""
    root = tmp_path_factory.mktemp("runs")
    finals, init = [], []
    for module in STAGES:
        output = root / f"stage{module.SPEC.number}"
        final = module.main(stage_argv(data, output, 3, *init))
        finals.append(final)
        init = ["--init", str(final)]
    return finals


@pytest.mark.parametrize("index", range(4))
def test_each_stage_trains_its_declared_parts_and_hands_over_a_loadable_folder(chained, index):
    spec = STAGES[index].SPEC
    final = chained[index]
    output = final.parent
    assert sorted(losses(output)) == [1, 2, 3], "three optimizer steps, each logged"
    assert (output / "loss.png").stat().st_size > 1000, "the loss curve PNG is written"
    model = InfiMMHDForConditionalGeneration.from_pretrained(final)
    assert model.config.window_size == spec.window_size == model.vision_tower.image_size
    resolved = json.loads((output / "config.json").read_text())
    assert resolved["stage"]["trainable"] == {
        "cross_attention": spec.trainable.cross_attention,
        "vision_tower": spec.trainable.vision_tower,
        "language_model": spec.trainable.language_model,
        "embeddings": spec.trainable.embeddings,
        "other": spec.trainable.other,
    }
    assert resolved["train"]["gradient_checkpointing"] == spec.gradient_checkpointing
    assert resolved["loader"]["max_windows"] == spec.max_windows


def test_stages_change_exactly_what_they_declare(chained):
    """Between consecutive stage outputs, only the declared groups' tensors move (frozen ones are bit-identical)."""
    from infimm_hd.training.trainable import parameter_groups

    models = [InfiMMHDForConditionalGeneration.from_pretrained(f) for f in chained]
    for before, after, module in zip(models, models[1:], STAGES[1:], strict=False):
        spec = module.SPEC
        a, b = dict(before.named_parameters()), dict(after.named_parameters())
        for name, group in parameter_groups(after).items():
            if group == "vision_tower" and "pos_embed" in name:
                continue  # resampled 224 -> 448 between stages 1 and 2
            moved = a[name].shape != b[name].shape or not torch.equal(a[name], b[name])
            if not spec.trainable.trains(group):
                assert not moved, f"stage {spec.number} changed frozen {group} parameter {name}"


def test_resume_continues_a_finished_stage(chained, data):
    """Asking a finished 3-step stage for 5 steps resumes from its step-3 checkpoint and runs steps 4 and 5 only."""
    output = chained[0].parent
    stage1_pretrain.main(stage_argv(data, output, 5))
    events = [r for r in read_log(output) if r.get("event") == "resume"]
    assert events and events[-1]["from_step"] == 3
    assert sorted(losses(output)) == [1, 2, 3, 4, 5]


def run_stage1(data: Path, output: Path, steps: int) -> subprocess.Popen:
    argv = stage_argv(data, output, steps, "--deterministic", "--mixed-precision", "no", "--keep-last", "20")
    return subprocess.Popen(
        [sys.executable, "-m", "stages.stage1_pretrain", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkilled_stage_resumes_to_the_uninterrupted_weights(data, tmp_path):
    steps = 8
    straight = run_stage1(data, tmp_path / "straight", steps)
    killed_dir = tmp_path / "killed"
    killed = run_stage1(data, killed_dir, steps)
    deadline = time.monotonic() + 240
    while not (killed_dir / "checkpoints" / "step-00000002").exists():
        assert killed.poll() is None, killed.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (killed_dir / "final").exists(), "the kill must land before the run ends"
    done = sorted(p.name for p in (killed_dir / "checkpoints").glob("step-*"))
    resumed = run_stage1(data, killed_dir, steps)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    last = int(done[-1].split("-")[1])
    resume = [r for r in read_log(killed_dir) if r.get("event") == "resume"]
    assert resume[-1]["from_step"] == last, (resume, done)
    ref = load_file(tmp_path / "straight" / "checkpoints" / f"step-{steps:08d}" / "trainable.safetensors")
    got = load_file(killed_dir / "checkpoints" / f"step-{steps:08d}" / "trainable.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"{key} differs after the SIGKILL + resume"
    assert losses(killed_dir) == losses(tmp_path / "straight"), "every step's loss, before and after the kill"


def test_a_wrong_trainable_declaration_fails_the_stage(data, tmp_path, monkeypatch):
    """If anything leaves the model training more than the stage declares, the stage refuses to start."""
    apply = common.apply_trainable

    def also_unfreezes_the_tower(model, spec):
        apply(model, spec)
        model.vision_tower.freeze(False)

    monkeypatch.setattr(common, "apply_trainable", also_unfreezes_the_tower)
    with pytest.raises(ValueError, match="vision_tower .*declared frozen but trainable"):
        stage1_pretrain.main(stage_argv(data, tmp_path / "wrong", 1))
    assert not (tmp_path / "wrong" / "checkpoints").exists(), "nothing may train"


def corrupt_copy(src: Path, dst: Path, every: int) -> int:
    """Copy a shard, replacing the bytes of every `every`-th sample's image with garbage; returns how many."""
    corrupted, seen = 0, 0
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            payload = tin.extractfile(member).read()
            if member.name.endswith(".png"):
                if seen % every == 0:
                    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(200)  # a PNG signature, then garbage
                    corrupted += 1
                seen += 1
            member.size = len(payload)
            tout.addfile(member, io.BytesIO(payload))
    return corrupted


def test_a_shard_with_ten_percent_corrupt_images_trains_to_the_end(data, tmp_path):
    shards = sorted((data / "vqa").glob("train-*.tar"))
    bad = [tmp_path / s.name for s in shards]
    corrupted = sum(corrupt_copy(s, b, every=10) for s, b in zip(shards, bad, strict=True))
    samples = 16
    assert corrupted == 2
    # One epoch exactly: 8 batches of 2 (the corrupt samples shrink their batches, they do not shift the rest).
    argv = stage_argv(data, tmp_path / "run", samples // 2, "--shards", *map(str, bad))
    stage3_dynamic_resolution.main(argv + ["--init", str(stage2_folder(data, tmp_path))])
    last = [r for r in read_log(tmp_path / "run") if "loss" in r][-1]
    assert last["step"] == samples // 2
    assert last["data/bad_image"] == corrupted, last
    assert last["data/samples"] == samples - corrupted


def stage2_folder(data: Path, tmp_path: Path) -> Path:
    """A 448 px starting point for stage 3 without running stages 1-2: the tiny preset saved as a folder."""
    import infimm_hd

    model, processor = infimm_hd.build_model("tiny")
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
