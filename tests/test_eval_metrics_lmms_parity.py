"""Parity of infimm_hd.evaluation.metrics with lmms-eval's own scorers: the same predictions go through both and the
scores must agree, corner cases included. Docs are deep-copied first (lmms-eval mutates them).

Float scores are compared with a 1e-12 tolerance only where the two sum in a different order (lmms-eval's
``statistics.mean`` against vqaEval.py's ``sum / len``; MME's per-image against per-question averaging).
"""

from __future__ import annotations

import copy
import random

import pytest
from lmms_eval.api.metrics import anls as lmms_anls
from lmms_eval.api.metrics import exact_match_hf_evaluate
from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
from lmms_eval.tasks.chartqa.utils import chartqa_process_results
from lmms_eval.tasks.chartqa.utils import relaxed_correctness as lmms_relaxed_correctness
from lmms_eval.tasks.mmbench.en_utils import mmbench_evaluator, mmbench_process_results
from lmms_eval.tasks.mme import utils as lmms_mme
from lmms_eval.tasks.mmmu import utils as lmms_mmmu
from lmms_eval.tasks.ok_vqa.utils import ok_vqa_process_results
from lmms_eval.tasks.pope import utils as lmms_pope
from lmms_eval.tasks.scienceqa.utils import sqa_process_results
from lmms_eval.tasks.textvqa.utils import textvqa_process_results
from lmms_eval.tasks.vqav2.utils import vqav2_process_results

from infimm_hd.evaluation.metrics import (
    anls,
    circular_accuracy,
    eval_multi_choice,
    eval_open,
    get_multi_choice_info,
    gqa_accuracy,
    mmbench_extract_answer,
    mme_scores,
    parse_multi_choice_response,
    parse_open_response,
    parse_pred_ans,
    pope_metrics,
    relaxed_accuracy,
    relaxed_correctness,
    scienceqa_match,
    vqa_accuracy,
)

TIGHT = 1e-12

# ------------------------------------------------------------------------------------------------------------ VQA

VQA_CASES = [
    ("two", ["two"] * 3 + ["2"] * 7),
    ("2", ["two"] * 3 + ["2"] * 7),
    ("Yes", ["yes"] * 10),
    ("yes", ["yes"] * 10),
    ("yes.", ["yes"] * 9 + ["no"]),
    ("no", ["yes"] * 8 + ["no"] * 2),
    ("1,000", ["1000"] * 5 + ["1,000"] * 5),
    ("1000", ["1,000"] * 10),
    ("3.5", ["3.5"] * 4 + ["3"] * 6),
    ("3.", ["3"] * 10),
    ("the dog", ["dog"] * 2 + ["a dog"] * 2 + ["dogs"] * 6),
    ("dont", ["don't"] * 10),
    ("red-blue", ["red blue"] * 3 + ["red-blue"] * 7),
    ("red - blue", ["red blue"] * 5 + ["red-blue"] * 5),
    ("What?", ["what"] * 10),
    ("it's red", ["its red"] * 5 + ["it's red"] * 5),
    ("\tcat\n", ["cat"] * 10),
    ("1,,2", ["12"] * 5 + ["1 2"] * 5),
    ("x,y", ["x y"] * 10),
    ("x, y", ["x y"] * 6 + ["xy"] * 4),
    ("none", ["0"] * 10),
    ("Ten", ["10"] * 10),
    ("", [""] * 10),
    ("", ["yes"] * 10),
    ("Im", ["i'm"] * 10),
    ("e.g.", ["eg"] * 10),
    ("." * 40, ["." * 8] * 10),
    ("u.s.", ["us"] * 7 + ["u.s."] * 3),
    ("5,5 , 6", ["55 6"] * 10),
    ("C++", ["c"] * 5 + ["c++"] * 5),
    ("two dogs", ["2 dogs"] * 3 + ["two dogs"]),
    ("a", ["a"]),
    ("somebody'd", ["somebodyd"] * 4 + ["somebody'd"] * 6),
    ("The Answer Is (B)", ["b"] * 10),
]


@pytest.mark.parametrize(("prediction", "answers"), VQA_CASES)
def test_vqa_evalai_matches_textvqa_and_okvqa(prediction, answers):
    doc = {"question_id": 1, "answers": list(answers)}
    ours = vqa_accuracy(prediction, answers, "evalai")
    assert textvqa_process_results(copy.deepcopy(doc), [prediction])["exact_match"] == pytest.approx(ours, abs=TIGHT)
    assert ok_vqa_process_results(copy.deepcopy(doc), [prediction])["exact_match"] == pytest.approx(ours, abs=TIGHT)


@pytest.mark.parametrize(("prediction", "answers"), VQA_CASES)
def test_vqa_lmms_vqav2_matches_vqav2_process_results(prediction, answers):
    # The HF VQAv2 rows hold answer dicts with their own answer_id, so the dict-inequality leave-one-out drops one.
    doc = {
        "question_id": 1,
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }
    lmms = vqav2_process_results(copy.deepcopy(doc), [prediction])["exact_match"]
    assert lmms == pytest.approx(vqa_accuracy(prediction, answers, "lmms-vqav2"), abs=TIGHT)


def test_vqa_cases_exercise_the_differences_between_modes():
    """The case list is not trivially equal across modes: each pair of modes disagrees on some case."""
    modes = ("evalai", "vqa-script", "lmms-vqav2")
    scores = {mode: [vqa_accuracy(p, a, mode) for p, a in VQA_CASES] for mode in modes}
    for i, first in enumerate(modes):
        for second in modes[i + 1 :]:
            assert scores[first] != scores[second], (first, second)


# ----------------------------------------------------------------------------------------------------------- ANLS

ANLS_CASES = [
    ("hello", ["hello"]),
    ("Hello", ["hello"]),
    ("  hello   world ", ["hello world"]),
    ("hello world", ["  hello   world  "]),
    ("helo", ["hello"]),
    ("abcd", ["abef"]),  # NL 0.5 exactly
    ("abc", ["abd"]),
    ("abcdef", ["abcxyz"]),
    ("abcdef", ["abxyzw"]),
    ("", [""]),
    ("", ["x"]),
    ("x", [""]),
    ("   ", [""]),
    ("ß", ["ss"]),
    ("straße", ["strasse"]),
    ("1,000", ["1000"]),
    ("$12.50", ["12.50", "$12.5"]),
    ("New York", ["new york city", "NYC"]),
    ("nyc", ["new york city", "NYC"]),
    ("cat", ["dog", "cart", "cats"]),
    ("the quick brown fox", ["quick brown fox"]),
    ("2019", ["2018", "2019-2020"]),
    ("\tTab\nNew", ["tab new"]),
    ("İstanbul", ["istanbul"]),
    ("résumé", ["resume"]),
    ("a" * 30, ["a" * 29 + "b"]),
    ("yes", ["no"]),
    ("ACME Corp.", ["acme corp", "ACME Corporation"]),
    ("12 %", ["12%"]),
    ("Answer: 42", ["42"]),
]


@pytest.mark.parametrize(("prediction", "answers"), ANLS_CASES)
@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_anls_matches_lmms(prediction, answers, threshold):
    lmms = lmms_anls(list(answers), [prediction], thresh_hold=threshold)["anls"]
    assert anls(prediction, answers, threshold=threshold) == lmms


# -------------------------------------------------------------------------------------------------------- ChartQA

CHARTQA_CASES = [
    ("105", "100"),
    ("105.0001", "100"),
    ("95", "100"),
    ("94.9", "100"),
    ("1.05", "1"),
    ("1.04", "1"),
    ("10%", "10"),
    ("10%", "0.1"),
    ("10", "10%"),
    ("10.5%", "10%"),
    ("50%%", "0.5"),
    ("0", "0"),
    ("0.0", "0"),
    ("0.01", "0"),
    ("-5", "-5.2"),
    ("-5", "5"),
    (" 12 ", "12"),
    ("12% ", "12%"),
    ("Yes", "yes"),
    ("yes ", "yes"),
    ("Apple", "apple"),
    ("1_000", "1000"),
    ("1,000", "1000"),
    ("inf", "inf"),
    ("nan", "nan"),
    ("nan", "5"),
    ("1e3", "1000"),
    ("", ""),
    ("", "0"),
    ("2019", "2020"),
    ("2019", "2100"),
]


@pytest.mark.parametrize(("prediction", "target"), CHARTQA_CASES)
def test_relaxed_correctness_matches_lmms(prediction, target):
    assert relaxed_correctness(prediction, target) == lmms_relaxed_correctness(prediction, target)
    doc = {"type": "human_test", "answer": target}
    assert relaxed_accuracy(prediction, target) == chartqa_process_results(doc, [prediction])["relaxed_overall"]


# ----------------------------------------------------------------------------------------------------------- MMMU

MMMU_OPTIONS = ["cat", "dog", "Paris", "42"]
MMMU_MC_RESPONSES = [
    "A",
    "(A)",
    "A.",
    " A ",
    "B.",
    "The answer is B",
    "The answer is (C).",
    "(A) is wrong, the answer is (B)",
    "A or B? I would say B",
    "I think the animal shown is a dog, not a cat at all",
    "I think the animal shown is a cat, not a dog at all",
    "Paris",
    "The capital city in the picture is Paris for sure",
    "no idea",
    "",
    "A.B.",
    "Answer: D",
    "D:",
    "'C'",
    "CAT",
    "option A. cat",
    "B) dog",
    "the answer is 42 obviously yes indeed",
    "A B C D",
    "(D)(A)",
    "E",
    "A, because",
    "Bdog",
    "I choose D.",
    "Between A and C, C.",
]


@pytest.mark.parametrize("response", MMMU_MC_RESPONSES)
def test_mmmu_multi_choice_matches_lmms(response):
    index2ans, all_choices = get_multi_choice_info(MMMU_OPTIONS)
    seed = sum(map(ord, response))
    random.seed(seed)  # lmms-eval draws from the global RNG when nothing parses
    lmms = lmms_mmmu.parse_multi_choice_response(response, all_choices, index2ans)
    ours = parse_multi_choice_response(response, all_choices, index2ans, rng=random.Random(seed), variant="lmms-eval")
    assert ours == lmms
    for gold in ("A", "B", ["C", "D"]):
        assert eval_multi_choice(gold, ours) == lmms_mmmu.eval_multi_choice(gold, lmms)


MMMU_OPEN_RESPONSES = [
    "42",
    "The answer is 42.",
    "So the result is 1,000 apples",
    "Therefore, x = 3.14159",
    "It could be 2.5e3 or 2500",
    "The final answer is Paris",
    "a",
    "The answer is a",
    "first line\nso the answer is -7\nthus 8",
    "",
    "...",
    "is .",
    "The value is 0.333",
    "result = 1/3",
    "approximately 12 %",
    "Answer: nan",
    "The speed is 3 m/s. So it is 3.",
    "It is 1,234,567 or 1234567",
    "so 05",
    "x=2, y=3",
    "The answer is B",
    "Thus the temperature is -40 degrees",
    "The total cost is $1,299.99",
    "Therefore the ratio is 1:2",
    "It is 7 ",
    "answer 12.345",
    "The answer is twelve",
    "the area is 3.005",
    "So, .5",
    "is 10e-2",
]
MMMU_OPEN_GOLDS = ["42", "1000", "3.14", "2500", "Paris", "a", "-7", "0.33", "12", ["1234567", "1,234,567"], "3", "b"]


@pytest.mark.parametrize("response", MMMU_OPEN_RESPONSES)
def test_mmmu_open_matches_lmms(response):
    lmms = lmms_mmmu.parse_open_response(response)
    ours = parse_open_response(response)
    assert sorted(map(repr, ours)) == sorted(map(repr, lmms))  # lmms-eval returns list(set(...)): compare as sets
    for gold in MMMU_OPEN_GOLDS:
        assert eval_open(gold, ours) == lmms_mmmu.eval_open(gold, lmms), gold


# ------------------------------------------------------------------------------------------------------------ MME

MME_PREDICTIONS = [
    "yes",
    "no",
    "Yes",
    "No.",
    "YES, there is",
    "No, there is not",
    "y",
    "n",
    "Y.",
    " yes",
    "  no",
    "   yes",
    "not sure",
    "nope",
    "unknown",
    "I think yes",
    "yes.",
    "n.o",
    "",
    ".",
    "The answer is no",
    "noyes",
    "yesno",
    "Nah",
    "ye s",
    "x",
    "yes\n",
    "No\tway",
    "maybe",
    "Yep",
]


@pytest.mark.parametrize("prediction", MME_PREDICTIONS)
def test_mme_parse_matches_lmms(prediction):
    assert parse_pred_ans(prediction, "lmms-eval") == lmms_mme.parse_pred_ans(prediction)


def _mme_records() -> list[dict]:
    """Two questions per image over several subtasks of both groups, predictions cycling through the list."""
    categories = ["existence", "count", "OCR", "artwork", "commonsense_reasoning", "code_reasoning"]
    records = []
    k = 0
    for c, category in enumerate(categories):
        for image in range(4 + c):
            for answer in ("Yes", "No"):
                prediction = MME_PREDICTIONS[(k * 7 + c) % len(MME_PREDICTIONS)]
                records.append(
                    {
                        "question_id": f"{category}/{image}.png",
                        "category": category,
                        "answer": answer,
                        "prediction": prediction,
                    }
                )
                k += 1
    return records


def test_mme_aggregation_matches_lmms():
    records = _mme_records()
    per_key: dict[str, list] = {}
    for record in records:
        doc = {key: record[key] for key in ("question_id", "category", "answer")}
        for key, value in lmms_mme.mme_process_results(copy.deepcopy(doc), [record["prediction"]]).items():
            per_key.setdefault(key, []).append(value)
    ours = mme_scores(records, variant="lmms-eval")
    assert 0 < ours.perception < 2000 and 0 < ours.cognition < 800
    assert ours.perception == pytest.approx(lmms_mme.mme_aggregate_results(per_key["mme_perception_score"]), abs=1e-9)
    assert ours.cognition == pytest.approx(lmms_mme.mme_aggregate_results(per_key["mme_cognition_score"]), abs=1e-9)


# ----------------------------------------------------------------------------------------------------------- POPE

POPE_PAIRS = [
    ("yes", "yes"),
    ("Yes", "yes"),
    (" yes ", "no"),
    ("no", "no"),
    ("No", "yes"),
    ("No.", "no"),
    ("Yes, there is a dog.", "yes"),
    ("No, there is not.", "no"),
    ("yes", "no"),
    ("no", "yes"),
    ("not", "no"),
    ("NO", "no"),
    ("Y", "yes"),
    ("", "yes"),
    ("There is no dog", "no"),
    ("yes.", "yes"),
    ("nope", "no"),
    ("YES", "yes"),
    ("no ", "no"),
    ("yes", "yes"),
    ("no", "no"),
    ("yes", "no"),
    ("maybe", "no"),
    ("No", "no"),
    ("yes", "yes"),
    ("no", "yes"),
    ("Yes", "no"),
    ("no", "no"),
    ("yes", "yes"),
    ("no", "no"),
]


def test_pope_lmms_variant_matches_lmms_aggregations():
    results = [
        lmms_pope.pope_process_results({"question_id": i, "answer": gt}, [pred])
        for i, (pred, gt) in enumerate(POPE_PAIRS)
    ]

    def agg(name):
        return getattr(lmms_pope, f"pope_aggregate_{name}")([r[f"pope_{name}"] for r in results])

    ours = pope_metrics([p for p, _ in POPE_PAIRS], [g for _, g in POPE_PAIRS], variant="lmms-eval")
    assert ours.accuracy == agg("accuracy")
    assert ours.precision == agg("precision")
    assert ours.recall == agg("recall")
    assert ours.f1 == agg("f1_score")
    assert ours.yes_ratio == agg("yes_ratio")  # lmms-eval's yes-ratio of the ground truth
    official = pope_metrics([p for p, _ in POPE_PAIRS], [g for _, g in POPE_PAIRS])
    assert (official.accuracy, official.f1) != (ours.accuracy, ours.f1)  # the parsing matters on these pairs


# -------------------------------------------------------------------------------------------------------- MMBench

MMBENCH_OPTIONS = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}
MMBENCH_PREDICTIONS = [
    "A",
    "B",
    "C.",
    "(D)",
    "The answer is B.",
    "A teddy bear sits on a chair",
    "a cute teddy bear",
    "it is a rabbit",
    "cat or dog",
    "B. rabbit",
    "Answer: C",
    "answer:C",
    "C)",
    "A and B",
    "(A).",
    "E",
    "I don't know",
    "",
    "dog",
    "Cat",
    "A, B",
    "B,",
    "Option B: rabbit",
    "Failed to obtain answer via API",
    "The correct option is (C) cat",
    "D. dog is the one",
    "rabbit and cat",
    "teddy",
    "B ",
    "A.",
]


@pytest.mark.parametrize("prediction", MMBENCH_PREDICTIONS)
def test_mmbench_extraction_matches_prefetch(prediction):
    item = {"prediction": prediction, **MMBENCH_OPTIONS}
    assert (mmbench_extract_answer(prediction, MMBENCH_OPTIONS) or False) == mmbench_evaluator.prefetch_answer(item)


def test_mmbench_circular_accuracy_matches_static_eval():
    """Four circular variants per question (options rotated, answers rotated), predictions from the list; scored by
    lmms-eval's eval_result(eval_method="static"), whose fallback for unparsed answers is extract_mcq_answer."""
    texts = list(MMBENCH_OPTIONS.values())
    results = []
    k = 0
    for question in range(12):
        for shift in range(4):
            rotated = texts[shift:] + texts[:shift]
            doc = {
                "index": question + shift * 1_000_000,
                "question": "What is it?",
                "answer": "ABCD"[(question - shift) % 4],
                "hint": "nan",
                "source": "synthetic",
                "split": "dev",
                "category": "cat" + str(question % 3),
                "L2-category": "l2",
                **dict(zip("ABCD", rotated, strict=True)),
            }
            prediction = MMBENCH_PREDICTIONS[(k * 5) % len(MMBENCH_PREDICTIONS)]
            if question % 2 == 0:  # make half of the questions answerable, so the accuracy is not trivially 0
                prediction = doc["answer"]
            results.append(mmbench_process_results(copy.deepcopy(doc), [prediction])["gpt_eval_score"])
            k += 1
    overall, _, _ = mmbench_evaluator.eval_result(copy.deepcopy(results), eval_method="static")
    ours = circular_accuracy(results, fallback=lambda pred, letters: extract_mcq_answer(pred, choices=letters))
    assert 0 < ours < 1
    assert ours == pytest.approx(float(overall), abs=TIGHT)


# ------------------------------------------------------------------------------------------------------ ScienceQA

SQA_CASES = [
    ("A", 0),
    ("a", 0),
    (" B ", 1),
    ("B.", 1),
    ("B. The second", 1),
    ("b.", 1),
    ("(B)", 1),
    ("B)", 1),
    ("The answer is B.", 1),
    ("C", 1),
    ("C.", 1),
    ("", 0),
    (".", 0),
    ("A.", 2),
    ("É.", 2),
    ("D", 3),
    ("d", 3),
    ("Answer: A", 0),
    ("A ", 0),
    ("AB", 0),
    ("A.B", 0),
    ("\nC.\n", 2),
]


@pytest.mark.parametrize(("prediction", "answer_index"), SQA_CASES)
def test_scienceqa_matches_lmms(prediction, answer_index):
    doc = {"choices": ["w", "x", "y", "z"], "answer": answer_index}
    assert scienceqa_match(prediction, answer_index, 4) == sqa_process_results(doc, [prediction])["exact_match"]


# ------------------------------------------------------------------------------------------------------------ GQA

GQA_CASES = [
    ("yes", "yes"),
    ("Yes.", "yes"),
    ("  no  ", "no"),
    ("traffic light", "traffic light"),
    ("traffic  light", "traffic light"),
    ("traffic-light", "traffic light"),
    ("trafficlight", "traffic light"),
    ("The cat", "cat"),
    ("cat!", "cat"),
    ("left", "right"),
    ("T-shirt", "t-shirt"),
    ("tshirt", "t-shirt"),
    ("", ""),
    ("2", "two"),
    ('"wooden"', "wooden"),
]


@pytest.mark.parametrize(("prediction", "answer"), GQA_CASES)
def test_gqa_matches_lmms_exact_match(prediction, answer):
    # api/task.py strips the prediction, then calls the metric with the yaml's ignore_case / ignore_punctuation.
    lmms = exact_match_hf_evaluate(
        predictions=[prediction.strip()], references=[answer], ignore_case=True, ignore_punctuation=True
    )["exact_match"]
    assert gqa_accuracy(prediction, answer) == lmms
