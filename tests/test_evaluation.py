"""Answer scoring of `infimm_hd.evaluation` and the Masked Thought miniature's pipeline (slow smoke run)."""

from __future__ import annotations

import json

import pytest

from data_prep.cot import format_cot
from infimm_hd.evaluation import final_answer, normalize_answer, score_answer


@pytest.mark.parametrize(
    ("generated", "expected", "task", "ok"),
    [
        (" Horizontal. ", "horizontal", "vqa", True),
        ("vertical", "horizontal", "vqa", False),
        (format_cot("Mia has 3 + 4 = 7 cards.\n7 x 2 = 14.", "14"), "14", "cot", True),
        (format_cot("3 + 4 = 7.", "1,234"), "1234", "cot", True),  # thousands commas do not count
        ("The answer is 7. Wait. The answer is 8.", "8", "cot", True),  # the last one counts
        ("The answer is 8.\nThe question was easy.", "8", "cot", True),  # the rest of the line only
        ("3 + 5 = 8 so 8", "8", "cot", False),  # no answer sentence: the whole text must match
        (format_cot("3 + 5 = 8.", "8"), "8", "vqa", False),  # a vqa answer is the whole text
    ],
)
def test_score_answer(generated, expected, task, ok):
    assert score_answer(generated, expected, task) is ok


def test_final_answer_is_what_format_cot_wrote():
    for final in ("0", "42", "1,234", "seven"):
        assert normalize_answer(final_answer(format_cot("a thought.\nanother.", final))) == normalize_answer(final)


@pytest.mark.slow
def test_masked_thought_miniature_pipeline_runs(tmp_path):
    from stages import masked_thought_miniature

    results = masked_thought_miniature.main(
        ["--out", str(tmp_path), "--preset", "tiny", "--steps", "2", "--seeds", "0", "--eval-limit", "4"]
        + ["--train-problems", "16", "--max-new-tokens", "8"]
    )
    assert set(results["objectives"]) == {"sft", "masked-thought"}
    log = [json.loads(line) for line in (tmp_path / "masked-thought-seed0" / "train_log.jsonl").open()]
    rates = [e["objective/mask_rate"] for e in log if "objective/mask_rate" in e]
    assert rates and max(rates) > 0, "the masked-thought run must have masked some response tokens"
    assert (tmp_path / "results.md").read_text().count("%") >= 3
