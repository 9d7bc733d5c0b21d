"""`stages/train_reward_model.py`: a tiny reward model trained with the Bradley-Terry loss on preference shards ranks
held-out pairs above chance, is saved as a Hugging Face folder (safetensors), and that folder is accepted by the
`rlhf` objective's `reward=` option and scores its texts the way it was trained."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import infimm_hd
from data_prep.shards import Sample, build, make_record, message, text_part
from infimm_hd.objectives import build_objective
from stages import train_reward_model

REFUSALS = ("I cannot see the image.", "Sorry, I do not know.", "No idea, ask someone else.")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def preference_shards(out: Path, split: str, n: int, seed: int) -> str:
    """Pairs "answer with the digit" (chosen) over a refusal (rejected), a preference visible in the text. A short
    system prompt keeps the texts around 40 tokens (the default one is 150)."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        digit, corner = rng.randrange(10), rng.choice(["top-left", "top-right", "bottom-left", "bottom-right"])
        user = message("user", text_part(f"What digit is in the {corner} corner?"))
        record = make_record(
            f"{split}{i}",
            "preference",
            [message("system", text_part("Answer briefly.")), user, message("assistant", text_part(str(digit)))],
            answer=str(digit),
            rejected=[message("assistant", text_part(rng.choice(REFUSALS)))],
        )
        samples.append(Sample(record, [], split))
    build(out, script="test", arguments={}, inputs={}, samples=samples, shard_size=1000, log=lambda *a: None)
    return str(out / f"{split}-*.tar")


def test_reward_model_training_ranks_held_out_pairs_and_plugs_into_rlhf(tmp_path):
    train = preference_shards(tmp_path / "train", "train", 96, seed=0)
    heldout = preference_shards(tmp_path / "heldout", "heldout", 32, seed=1)
    output = tmp_path / "rm"
    argv = ["--base", "tiny", "--shards", train, "--heldout", heldout, "--output", str(output), "--max-steps", "30",
            "--batch-size", "8", "--learning-rate", "1e-3", "--eval-every", "30"]  # fmt: skip
    train_reward_model.main(argv)

    metrics = json.loads((output / "metrics.json").read_text())
    before, after = metrics["heldout_before"], metrics["heldout_after"]
    assert after["loss"] < before["loss"] - 0.1, metrics
    assert after["accuracy"] >= 0.9, metrics
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5]), "the training loss went down"
    assert (output / "model.safetensors").is_file() and not list(output.glob("*.bin"))

    # The folder as the rlhf reward: the objective's texts are decoded prompt + decoded response.
    _, processor = infimm_hd.build_model("tiny")
    objective = build_objective("rlhf", run={"tokenizer": processor.tokenizer}, reward=str(output))
    question = message("user", text_part("What digit is in the top-left corner?"))
    conversation = [message("system", text_part("Answer briefly.")), question]
    tok = processor.tokenizer
    ids = tok(processor.apply_chat_template(conversation, add_generation_prompt=True), add_special_tokens=False)
    prompt = tok.decode(ids["input_ids"], skip_special_tokens=True)
    scores = objective.raw_reward([prompt, prompt], [" 4", " Sorry, I do not know."], [None, None])
    assert scores[0] > scores[1], scores
