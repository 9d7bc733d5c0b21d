"""Hand-worked values for infimm_hd.evaluation.metrics, written from the official definitions (the arithmetic is in
the comments); tests/test_eval_metrics_lmms_parity.py checks the same functions against lmms-eval's code."""

from __future__ import annotations

import random

import pytest

from infimm_hd.evaluation.metrics import (
    anls,
    circular_accuracy,
    circular_results,
    eval_multi_choice,
    eval_open,
    evalai_normalize,
    exact_match,
    extract_numbers,
    get_multi_choice_info,
    gqa_accuracy,
    leave_one_out_accuracy,
    levenshtein_distance,
    mmbench_can_infer_option,
    mmbench_extract_answer,
    mme_scores,
    mmmu_is_correct,
    normalize_str,
    parse_multi_choice_response,
    parse_open_response,
    parse_pred_ans,
    pope_metrics,
    pope_metrics_by_split,
    pope_parse_answer,
    process_digit_article,
    process_punctuation,
    relaxed_correctness,
    scienceqa_match,
    vqa_accuracy,
    vqa_script_normalize,
)
from infimm_hd.evaluation.metrics.answer_normalization import COMMA_STRIP_EVALAI, COMMA_STRIP_VQA_SCRIPT

# ------------------------------------------------------------------------------------------- answer normalisation


def test_punctuation_inside_a_word_becomes_a_space_next_to_a_space_is_deleted():
    assert process_punctuation("x-ray") == "x ray"  # "-" touches no space: replaced by a space
    assert process_punctuation("hello !") == "hello "  # " !" in the text: "!" deleted
    # The test looks at the ORIGINAL text: one "- " anywhere makes every "-" be deleted, even inside "x-ray".
    assert process_punctuation("x-ray - scan") == "xray  scan"


def test_a_digit_comma_digit_deletes_every_punctuation_mark():
    # vqa-script regex (\d)(\,)(\d) matches "1,000": all marks are deleted, "red-blue" is glued.
    assert process_punctuation("1,000 red-blue", COMMA_STRIP_VQA_SCRIPT) == "1000 redblue"
    # "1,,2": no single digit-comma-digit for the official regex -> "," replaced by spaces; the EvalAI regex
    # (?<=\d)(\,)+(?=\d) accepts the run of commas -> deleted.
    assert process_punctuation("1,,2", COMMA_STRIP_VQA_SCRIPT) == "1  2"
    assert process_punctuation("1,,2", COMMA_STRIP_EVALAI) == "12"
    # EvalAI's word_tokenize deletes commas first, so "red-blue" keeps its space there.
    assert evalai_normalize("1,000 red-blue") == "1000 red blue"


def test_periods_are_kept_before_a_digit_and_at_most_32_are_removed():
    assert process_punctuation("3.5") == "3.5"
    assert process_punctuation("3.") == "3"
    assert process_punctuation("e.g.") == "eg"
    assert process_punctuation(".5") == ".5"
    # re.UNICODE (== 32) lands in `count`: of 40 periods, 32 go and 8 stay.
    assert process_punctuation("." * 40) == "." * 8


def test_digits_articles_and_contractions():
    assert process_digit_article("Two Dogs") == "2 dogs"
    assert process_digit_article("none of the ten") == "0 of 10"
    assert process_digit_article("a an the") == ""
    assert process_digit_article("the   dog") == "dog"  # whitespace collapsed by split/join
    assert process_digit_article("dont") == "don't"
    assert process_digit_article("Im") == "im"  # the table's "Im" key never matches after lower() (quirk)
    assert process_digit_article("somebody'd") == "somebodyd"  # sic, in the official table


def test_evalai_word_tokenize_step():
    assert evalai_normalize("What?") == "what"
    assert evalai_normalize("it's") == "it 's"  # "'s" -> " 's"
    assert evalai_normalize("\tThe Cat\n") == "cat"
    # "(a) b-c": ") " touches a space -> deleted; "(" and "-" -> spaces; then the article "a" goes.
    assert evalai_normalize("(a) b-c") == "b c"
    assert vqa_script_normalize("(a) b-c") == "b c"


# ----------------------------------------------------------------------------------------------- VQA accuracy


def test_vqa_all_answers_normalise_equal():
    # 3 x "two" + 7 x "2": all normalise to "2", prediction "two" -> "2"; every leave-one-out subset has 9 matches
    # -> min(9/3, 1) = 1 -> mean 1.0.
    answers = ["two"] * 3 + ["2"] * 7
    for mode in ("evalai", "vqa-script", "lmms-vqav2"):
        assert vqa_accuracy("two", answers, mode) == 1.0


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        (0, 0.0),
        # 1 of 10: its own subset has 0 matches -> 0; the 9 others have 1 -> 1/3; mean 9 * (1/3) / 10 = 0.3.
        (1, 0.3),
        # 2 of 10: their subsets have 1 -> 1/3 (x2); the 8 others have 2 -> 2/3 (x8); (2/3 + 16/3) / 10 = 0.6.
        (2, 0.6),
        # 3 of 10: 2/3 (x3) and 3/3 = 1 (x7): (2 + 7) / 10 = 0.9.
        (3, 0.9),
        # 4 of 10: 3 others -> 1 (x4), 4 -> 1 (x6): 1.0.
        (4, 1.0),
    ],
)
def test_vqa_leave_one_out_arithmetic(matching, expected):
    answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_any_number_of_answers():
    # 4 answers, 2 match: matching subsets 1/3 (x2), others 2/3 (x2): (2/3 + 4/3) / 4 = 0.5.
    assert vqa_accuracy("red", ["red", "red", "blue", "green"]) == pytest.approx(0.5)
    # 3 x "2 dogs" + "two dogs", all equal after normalisation: each subset has 3 matches -> 1.0.
    assert vqa_accuracy("two dogs", ["2 dogs"] * 3 + ["two dogs"]) == 1.0
    # One answer: every subset is empty -> 0.
    assert vqa_accuracy("cat", ["cat"]) == 0.0
    assert leave_one_out_accuracy("x", ["x", "x", "x", "x"]) == 1.0


def test_vqa_script_normalises_only_when_the_answers_differ():
    # Ten identical "yes": len(set) == 1, so the script does not normalise and "Yes" != "yes".
    assert vqa_accuracy("Yes", ["yes"] * 10, "vqa-script") == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10, "evalai") == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10, "lmms-vqav2") == 1.0
    # One "no" among them: now everything is normalised; 9 "yes" match -> each subset has >= 8 -> 1.0.
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"], "vqa-script") == 1.0
    # The \n / \t / strip cleanup is applied regardless.
    assert vqa_accuracy("yes\n", ["yes"] * 10, "vqa-script") == 1.0


def test_vqa_modes_differ_on_commas_and_question_marks():
    # "1,,2" vs answers "12": evalai drops commas in word_tokenize -> "12" (1.0); vqa-script replaces them by spaces
    # -> "1 2" (0.0); lmms-vqav2 uses the EvalAI comma regex -> deleted -> "12" (1.0).
    answers = ["12"] * 9 + ["x"]
    assert vqa_accuracy("1,,2", answers, "evalai") == 1.0
    assert vqa_accuracy("1,,2", answers, "vqa-script") == 0.0
    assert vqa_accuracy("1,,2", answers, "lmms-vqav2") == 1.0
    # "it's" -> "it 's" only in evalai (word_tokenize).
    assert vqa_accuracy("it's", ["it 's"] * 9 + ["x"], "evalai") == 1.0
    assert vqa_accuracy("it's", ["it 's"] * 9 + ["x"], "lmms-vqav2") == 0.0


def test_vqa_empty_strings_and_errors():
    assert vqa_accuracy("", [""] * 10) == 1.0
    assert vqa_accuracy("", ["yes"] * 10) == 0.0
    with pytest.raises(ValueError, match="empty answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError, match="single string"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="unknown VQA normalization"):
        vqa_accuracy("yes", ["yes"], "strict")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------- ANLS


def test_levenshtein():
    assert levenshtein_distance("kitten", "sitting") == 3
    assert levenshtein_distance("", "abc") == 3
    assert levenshtein_distance("flaw", "lawn") == 2
    assert levenshtein_distance("same", "same") == 0


def test_anls_threshold_edges():
    assert anls("hello", ["Hello"]) == 1.0  # lowercased
    # 10 characters: 4 substitutions -> NL 0.4 -> 0.6; 5 -> NL 0.5 -> 0.5 (kept: 0.5 is not < 0.5); 6 -> 0.4 -> 0.
    assert anls("abcdefghij", ["abcdefWXYZ"]) == pytest.approx(0.6)
    assert anls("abcdefghij", ["abcdeVWXYZ"]) == 0.5
    assert anls("abcdefghij", ["abcdUVWXYZ"]) == 0.0
    assert anls("abc", ["abd"]) == pytest.approx(2 / 3)  # 1 - 1/3
    assert anls("abcdefghij", ["abcdUVWXYZ"], threshold=0.3) == pytest.approx(0.4)


def test_anls_normalises_by_the_raw_lengths():
    # Collapsed "hallo" vs "hello": distance 1; the denominator is the RAW max length 8 ("hallo   "): 1 - 1/8.
    assert anls("hallo   ", ["hello"]) == pytest.approx(0.875)
    # "ß".upper() == "SS": length 2, distance 1 (one substitution for "s") -> NL 0.5 -> 0.5 (0 if len were 1).
    assert anls("ß", ["s"]) == 0.5


def test_anls_best_answer_and_empty_strings():
    assert anls("cat", ["dog", "cart", "cats"]) == pytest.approx(0.75)  # min NL = 1/4 ("cart" and "cats")
    assert anls("", [""]) == 1.0  # length 0 -> NL 0
    assert anls("   ", [""]) == 1.0  # collapsed both "", distance 0
    assert anls("", ["x"]) == 0.0
    assert anls("yes", "yes") == 1.0  # a bare string is one answer
    with pytest.raises(ValueError, match="empty answers"):
        anls("x", [])


# --------------------------------------------------------------------------------------------- relaxed accuracy


def test_relaxed_accuracy_tolerance():
    assert relaxed_correctness("105", "100")  # |105 - 100| / 100 = 0.05 <= 0.05
    assert relaxed_correctness("95", "100")
    assert not relaxed_correctness("94.9", "100")  # 0.051
    assert not relaxed_correctness("1.05", "1")  # 0.05000000000000004 in floating point
    assert relaxed_correctness("-5", "-5.2")  # 0.2 / 5.2 = 0.038


def test_relaxed_accuracy_percent_and_strings():
    assert relaxed_correctness("10%", "0.1")  # "10%" -> 0.1
    assert not relaxed_correctness("10%", "10")  # 0.1 vs 10
    assert not relaxed_correctness("10", "10%")
    assert relaxed_correctness("50%%", "0.5")  # rstrip removes every trailing %
    assert relaxed_correctness("Apple", "apple")  # non-numbers: case-insensitive exact match
    assert not relaxed_correctness("yes ", "yes")  # no strip
    assert relaxed_correctness(" 12 ", "12")  # float() tolerates spaces
    assert not relaxed_correctness("12% ", "12%")  # does not end with "%" -> not a number -> string compare
    assert relaxed_correctness("0", "0") and not relaxed_correctness("0.0", "0")  # target 0 -> string compare


# ------------------------------------------------------------------------------------------------------- MMMU

OPTIONS = ["cat", "dog", "Paris", "42"]


def _mc(response: str, variant="official", rng=None) -> str:
    index2ans, all_choices = get_multi_choice_info(OPTIONS)
    return parse_multi_choice_response(response, all_choices, index2ans, rng=rng, variant=variant)


def test_mmmu_letter_forms():
    assert _mc("(A)") == "A"
    assert _mc("A.") == "A"  # "." stripped, then " A " found
    assert _mc(" A ") == "A"
    assert _mc("I pick B.") == "B"
    assert _mc("The answer is (C).") == "C"


def test_mmmu_several_candidates_take_the_last():
    assert _mc("(A) is wrong, the answer is (B)") == "B"
    assert _mc("A or B? I would say B") == "B"  # rfind(" B ") > rfind(" A ")
    # No letters, more than 5 tokens: option texts; "cat" occurs after "dog" -> A.
    assert _mc("I think the animal shown is a dog, not a cat at all") == "A"
    assert _mc("The capital city in the picture is Paris for sure") == "C"


def test_mmmu_random_choice_is_explicit():
    assert _mc("no idea", rng=random.Random(0)) == random.Random(0).choice(["A", "B", "C", "D"])
    assert _mc("no idea") == random.Random(42).choice(["A", "B", "C", "D"])  # default: a fresh Random(42)


def test_mmmu_lmms_variant_differs_from_official():
    # "Answer:B": no " B " (official) but "B " (lmms-eval); the official falls back to a random letter.
    rng_official = random.Random(3)
    expected = random.Random(3).choice(["A", "B", "C", "D"])
    assert _mc("Answer:B", rng=rng_official) == expected
    assert _mc("Answer:B", variant="lmms-eval") == "B"
    # " xA.y ": no "(A)", no "A " / " A "; only the lmms-eval "A." pass finds A.
    assert _mc("xA.y", variant="lmms-eval") == "A"


def test_mmmu_open_parsing():
    # "the answer is 42": tails after "is " -> "42", after "answer " -> "is 42": the shortest, "42", is kept.
    assert parse_open_response("The answer is 42.") == [42.0]
    assert eval_open("42", [42.0]) and eval_open("42.0", [42.0]) and not eval_open("41", [42.0])
    # extract_numbers also finds "000" inside "1,000" (the simple pattern), so a gold "0" matches too (quirk).
    assert extract_numbers("1,000 apples") == ["1,000", "000"]
    preds = parse_open_response("So the result is 1,000 apples")
    assert preds == ["1,000 apples", 1000.0, 0.0]
    assert eval_open("1000", preds) and eval_open("0", preds)
    # The ". (?=[A-Z])" split never fires after lower(): one sentence, the shortest tail is "6", not "5".
    assert parse_open_response("It is 5. So it is 6") == [6.0]


def test_mmmu_single_characters_need_a_space():
    assert normalize_str("a") == [" a", "a "]
    assert normalize_str(" 1,234.567 ") == [1234.57]
    assert eval_open("a", parse_open_response("a"))  # " a" in " a"
    assert not eval_open("a", parse_open_response("banana"))
    assert eval_open(["x", "42"], [42.0])  # a list of golds


def test_mmmu_eval_multi_choice_and_helper():
    assert eval_multi_choice("A", "A") and not eval_multi_choice("A", "B")
    assert eval_multi_choice(["A", "C"], "C")
    assert mmmu_is_correct("(B)", "B", "multiple-choice", OPTIONS)
    assert mmmu_is_correct("The answer is 42", "42", "open")


# -------------------------------------------------------------------------------------------------- ScienceQA


def test_scienceqa_letter_rules():
    assert scienceqa_match("B", 1, 4) == 1.0
    assert scienceqa_match(" b ", 1, 4) == 1.0  # stripped, case-insensitive
    assert scienceqa_match("B. the second", 1, 4) == 1.0
    assert scienceqa_match("b.", 1, 4) == 0.0  # the "X." form needs an upper-case X
    assert scienceqa_match("(B)", 1, 4) == 0.0
    assert scienceqa_match("C.", 1, 4) == 0.0
    with pytest.raises(ValueError, match="outside"):
        scienceqa_match("A", 4, 4)


# ---------------------------------------------------------------------------------------------------- MMBench

CHOICES = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}


def test_mmbench_extraction():
    assert mmbench_extract_answer("A", CHOICES) == "A"
    assert mmbench_extract_answer("The answer is B", CHOICES) == "B"
    assert mmbench_extract_answer("(D)", CHOICES) == "D"
    # "A" in an answer of > 3 tokens may be the article: skipped; the text "dog" then decides.
    assert mmbench_can_infer_option("A dog is here") is None
    assert mmbench_extract_answer("A dog is here", CHOICES) == "D"
    assert mmbench_extract_answer("A and B", CHOICES) is None  # two letters
    assert mmbench_extract_answer("cat or dog", CHOICES) is None  # two option texts
    assert mmbench_extract_answer("it is a rabbit", CHOICES) == "B"


def _variants(question: int, predictions: list[str]) -> list[dict]:
    """Circular variants of a question whose answer is "cat": options rotated, answer letter rotated with them."""
    texts = list(CHOICES.values())
    records = []
    for shift, prediction in enumerate(predictions):
        rotated = texts[shift:] + texts[:shift]
        letter = "ABCD"[rotated.index("cat")]
        records.append(
            {
                "index": question + shift * 1_000_000,
                "answer": letter,
                "prediction": prediction,
                **dict(zip("ABCD", rotated, strict=True)),
            }
        )
    return records


def test_mmbench_circular_eval():
    # Question 1: the right letter in all 4 variants (C, B, A, D for shifts 0..3). Question 2: one variant wrong.
    right = _variants(1, ["C", "B", "A", "D"])
    one_wrong = _variants(2, ["C", "B", "B", "D"])
    by_text = _variants(3, ["cat", "it is a cat", "cat", "a cat"])  # text matching works in every variant
    records = right + one_wrong + by_text
    assert circular_results(records) == {1: True, 2: False, 3: True}
    assert circular_accuracy(records) == pytest.approx(2 / 3)
    unparsed = _variants(4, ["C", "B", "A", "no idea"])  # unparsed -> wrong without a fallback
    assert circular_results(unparsed) == {4: False}
    assert circular_results(unparsed, fallback=lambda pred, letters: "D") == {4: True}
    with pytest.raises(ValueError, match="original question"):
        circular_accuracy(right[1:])  # variants only


# -------------------------------------------------------------------------------------------------------- MME


def test_mme_parsing_variants():
    assert parse_pred_ans("Yes") == "yes"
    assert parse_pred_ans("not sure") == "no"  # "no" within the first 4 characters
    assert parse_pred_ans("I think yes") == "other"
    assert parse_pred_ans("  yes") == "other"  # official: no strip, prefix "  ye"
    assert parse_pred_ans("  yes", "lmms-eval") == "yes"
    assert parse_pred_ans("y") == "other"
    assert parse_pred_ans("y", "lmms-eval") == "yes"


def _mme(category: str, image: str, answer: str, prediction: str) -> dict:
    return {"category": category, "question_id": image, "answer": answer, "prediction": prediction}


def test_mme_acc_plus_pairs_and_sums():
    records = [
        # existence: image 1 both right, image 2 one right -> acc 3/4, acc+ 1/2 -> 75 + 50 = 125.
        _mme("existence", "e1", "Yes", "yes"),
        _mme("existence", "e1", "No", "no"),
        _mme("existence", "e2", "Yes", "yes"),
        _mme("existence", "e2", "No", "yes"),
        # OCR: one image, both right -> 100 + 100 = 200.
        _mme("OCR", "o1", "Yes", "Yes, it is"),
        _mme("OCR", "o1", "No", "No."),
        # code_reasoning: one image, one right (the other "other") -> 50 + 0 = 50.
        _mme("code_reasoning", "c1", "Yes", "yes"),
        _mme("code_reasoning", "c1", "No", "maybe"),
    ]
    scores = mme_scores(records)
    assert scores.subtasks["existence"].acc == 0.75 and scores.subtasks["existence"].acc_plus == 0.5
    assert scores.subtasks["existence"].score == 125.0
    assert scores.perception == 325.0  # 125 + 200
    assert scores.cognition == 50.0
    assert scores.total == 375.0


def test_mme_rejects_bad_records():
    with pytest.raises(ValueError, match="two questions per image"):
        mme_scores([_mme("count", "x", "Yes", "yes")])
    with pytest.raises(ValueError, match="unknown MME subtask"):
        mme_scores([_mme("ocr", "x", "Yes", "yes"), _mme("ocr", "x", "No", "no")])
    with pytest.raises(ValueError, match="yes or no"):
        mme_scores([_mme("count", "x", "Maybe", "yes"), _mme("count", "x", "No", "no")])


# ------------------------------------------------------------------------------------------------------- POPE


def test_pope_parsing():
    assert pope_parse_answer("Yes, there is a dog.") == "yes"
    assert pope_parse_answer("No, there is not.") == "no"
    assert pope_parse_answer("There is no dog") == "no"
    assert pope_parse_answer("I see a dog. No cat.") == "yes"  # only the first sentence counts
    assert pope_parse_answer("NO") == "yes"  # only "No", "no" and "not" say no (quirk)
    assert pope_parse_answer("Not really") == "yes"
    assert pope_parse_answer("") == "yes"


def test_pope_metrics_on_a_small_confusion_matrix():
    # TP 3, FP 1, TN 4, FN 2.
    labels = ["yes"] * 3 + ["no"] + ["no"] * 4 + ["yes"] * 2
    preds = ["yes"] * 3 + ["yes"] + ["no"] * 4 + ["no"] * 2
    m = pope_metrics(preds, labels)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 4, 2)
    assert m.accuracy == 0.7  # (3 + 4) / 10
    assert m.precision == 0.75  # 3 / 4
    assert m.recall == 0.6  # 3 / 5
    assert m.f1 == pytest.approx(2 / 3)  # 2 * 0.75 * 0.6 / 1.35
    assert m.yes_ratio == 0.4  # predicted yes: 4 / 10
    assert pope_metrics(preds, labels, variant="lmms-eval").yes_ratio == 0.5  # lmms-eval: ground-truth yes 5 / 10


def test_pope_variants_and_splits():
    # lmms-eval compares the stripped lowercased text: "Yes, there is" is neither yes nor no there.
    official = pope_metrics(["Yes, there is", "no"], ["yes", "no"])
    lmms = pope_metrics(["Yes, there is", "no"], ["yes", "no"], variant="lmms-eval")
    assert official.accuracy == 1.0 and lmms.accuracy == 0.5 and lmms.other == 1
    assert pope_metrics(["no", "no"], ["yes", "no"]).precision == 0.0  # no predicted positive: 0, not a crash
    records = [
        {"category": "random", "prediction": "yes", "answer": "yes"},
        {"category": "random", "prediction": "no", "answer": "yes"},
        {"category": "adversarial", "prediction": "No", "answer": "no"},
    ]
    splits = pope_metrics_by_split(records)
    assert splits["random"].accuracy == 0.5 and splits["adversarial"].accuracy == 1.0
    with pytest.raises(ValueError, match="yes or no"):
        pope_metrics(["yes"], ["maybe"])


# -------------------------------------------------------------------------------------------------------- GQA


def test_gqa_exact_match():
    assert gqa_accuracy("Yes.", "yes") == 1.0  # stripped, lowercased, punctuation deleted
    assert gqa_accuracy("  no ", "no") == 1.0
    assert gqa_accuracy("traffic-light", "traffic light") == 0.0  # "-" deleted, not spaced
    assert gqa_accuracy("The cat", "cat") == 0.0  # no article removal
    assert gqa_accuracy("Yes.", "yes", "official") == 0.0  # raw equality
    assert exact_match("a1b", "ab", ignore_numbers=True) == 1.0
    assert exact_match("answer: x", "x", regexes_to_ignore=[r"^answer: "]) == 1.0
