"""The closed-form benchmarks (ScienceQA-IMG, MMBench, MMMU, MME, POPE, IconQA, MM-Vet): each read from a tiny copy
in its published layout (`data_prep.benchmark_fixtures.closed_form`) and from lmms-eval's hub layout, prompted as
lmms-eval 0.7.3 does (its own `doc_to_text` is the reference, fed the hub rows, which are its docs), scored by the
official rules (checked against lmms-eval's process_results / aggregations where they agree, and by hand), with bad
files reported by file and field, and run end to end with the tiny model."""

from __future__ import annotations

import base64
import csv
import importlib
import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.benchmark_fixtures import closed_form as fx
from infimm_hd.evaluation.benchmark import get_benchmark
from infimm_hd.evaluation.runner import PREDICTIONS, SUMMARY, EvalSettings, evaluate_benchmark
from infimm_hd.evaluation.samples import BenchmarkDataError, EvalSample
from tests.helpers.benchmark_tests import edit_json, lmms_kwargs

# benchmark -> (fixture of the official layout, fixture of the hub layout or None, questions in the fixture)
LAYOUTS = {
    "scienceqa-img": ("scienceqa", "scienceqa-parquet", 12),
    "mmbench": ("mmbench", "mmbench-parquet", 18),  # 6 questions with 4, 2, 3, 4, 2, 3 options: 18 rotations
    "mmmu": ("mmmu", None, 12),
    "mme": ("mme", "mme-parquet", 12),
    "pope": ("pope", "pope-parquet", 12),
    "iconqa": ("iconqa", "iconqa-parquet", 12),
    "mmvet": ("mmvet", "mmvet-parquet", 12),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Every fixture with its default size, written once for the module (tests that break files make their own)."""
    root = tmp_path_factory.mktemp("closed_form")
    return {name: make(root / name) for name, make in fx.MAKERS.items()}


def load(name: str, path: Path) -> list[EvalSample]:
    return get_benchmark(name).load(path)


def text_of(name: str, sample: EvalSample) -> str:
    """The prompt's text (its text parts joined; MMMU interleaves image parts with them)."""
    parts = get_benchmark(name).prompt(sample)
    assert sum(p["type"] == "image" for p in parts) == len(sample.images), f"{name}: one image part per image"
    return "".join(p["text"] for p in parts if p["type"] == "text")


def hub_rows(path: Path) -> list[dict]:
    """Every row of the parquet files under `path`, in file order (lmms-eval's docs)."""
    files = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def image_bytes(ref: str | bytes) -> bytes:
    return Path(ref).read_bytes() if isinstance(ref, str) else ref


def pixels(ref: str | bytes) -> bytes:
    return Image.open(io.BytesIO(image_bytes(ref))).convert("RGB").tobytes()


# ---- loading: the published layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_loads_every_question_once(name, data):
    official, hub, count = LAYOUTS[name]
    for fixture in [official] + ([hub] if hub else []):
        samples = load(name, data[fixture])
        assert len(samples) == count, f"{name} ({fixture}): the fixture holds {count} questions"
        assert len({s.qid for s in samples}) == count, f"{name} ({fixture}): question ids must be unique"
        for s in samples:
            assert isinstance(s.qid, str) and s.question and s.references and s.images
            assert all(Path(i).is_file() if isinstance(i, str) else i[:4] for i in s.images)


def test_scienceqa_reads_the_img_subset_of_test(data):
    folder = data["scienceqa"]
    problems = json.loads((folder / "problems.json").read_text())
    test = json.loads((folder / "pid_splits.json").read_text())["test"]
    samples = load("scienceqa-img", folder)
    assert [s.qid for s in samples] == [pid for pid in test if problems[pid]["image"]]  # 2 text-only, 1 train out
    for s in samples[:4]:
        p = problems[s.qid]
        assert (s.question, s.choices, s.references) == (p["question"], tuple(p["choices"]), ("ABCD"[p["answer"]],))
        assert s.meta["subject"] == p["subject"] and s.meta["hint"] == p["hint"]
        assert s.images[0] == str(folder / "images" / "test" / s.qid / "image.png")
    assert {s.meta["grade"] for s in samples} == {"G1-6", "G7-12"}
    assert load("scienceqa-img", folder / "problems.json") == samples
    hub = load("scienceqa-img", data["scienceqa-parquet"])
    assert [s.qid for s in hub] == [str(i) for i in range(14) if i not in (6, 13)]  # the row numbers, image rows
    assert [(s.question, s.choices, s.references, s.meta) for s in hub] == [
        (s.question, s.choices, s.references, s.meta) for s in samples
    ]


def test_mmbench_rows_and_circular_groups(data):
    samples = load("mmbench", data["mmbench"])
    with (data["mmbench"]).open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [s.qid for s in samples] == [r["index"] for r in rows]
    by_qid = {s.qid: s for s in samples}
    first = by_qid["0"]
    assert first.choices == ("a cat", "a rocket", "a cup of coffee", "a woman") and first.references == ("B",)
    assert by_qid["1000000"].choices == ("a rocket", "a cup of coffee", "a woman", "a cat")
    assert by_qid["1000000"].references == ("A",) and by_qid["3000000"].references == ("C",)
    assert by_qid["1"].choices == ("calm", "tense") and by_qid["1"].meta["hint"] == "The photo was taken at noon."
    assert {s.meta["group"] for s in samples} == set(range(6))
    assert by_qid["2000000"].meta == {**first.meta, "circular": True}
    assert by_qid["2000000"].images[0] == first.images[0] == base64.b64decode(rows[0]["image"])  # index reference
    assert load("mmbench", data["mmbench"].parent) == samples
    hub = load("mmbench", data["mmbench-parquet"])
    assert [(s.qid, s.question, s.choices, s.references, s.meta) for s in hub] == [
        (s.qid, s.question, s.choices, s.references, s.meta) for s in samples
    ]
    assert [s.images for s in hub] == [s.images for s in samples]


def test_mmmu_reads_validation_with_the_images_it_names(data):
    samples = load("mmmu", data["mmmu"])
    rows = hub_rows(data["mmmu"])
    validation = [r for r in rows if r["id"].startswith("validation_")]
    assert [s.qid for s in samples] == [r["id"] for r in validation]  # dev-*.parquet is not read
    for s, r in zip(samples, validation, strict=True):
        assert s.meta["subject"] == r["id"].split("_")[1] and s.meta["question_type"] == r["question_type"]
        named = ["image_1", "image_2"] if "Compare" in r["question"] else ["image_1"]  # the options name image 2
        assert [image_bytes(i) for i in s.images] == [r[k]["bytes"] for k in named]
    two = next(s for s in samples if len(s.images) == 2)
    assert two.choices == ("<image 2>", "neither", "both of them") and two.references == ("C",)
    opened = next(s for s in samples if s.meta["question_type"] == "open")
    assert opened.references == ("12.5",) and opened.choices == ()
    assert {s.meta["discipline"] for s in samples} == {"Art and Design", "Science", "Business"}
    one_file = next(data["mmmu"].glob("Art/validation-*.parquet"))
    assert [s.qid for s in load("mmmu", one_file)] == ["validation_Art_1", "validation_Art_2", "validation_Art_3"]


def test_mmmu_image_parts_stand_before_their_first_tag(data):
    two = next(s for s in load("mmmu", data["mmmu"]) if len(s.images) == 2)
    parts = get_benchmark("mmmu").prompt(two)
    kinds = [p["type"] for p in parts]
    assert kinds == ["text", "image", "text", "image", "text"]
    assert parts[2]["text"].startswith("<image 1> with the options") and parts[4]["text"].startswith("<image 2>\n")


def test_mme_both_folder_layouts_and_the_hub_copy(data):
    root = data["mme"]
    samples = load("mme", root)
    assert [s.qid for s in samples[:4]] == [
        "existence/000000006040.jpg#1",
        "existence/000000006040.jpg#2",
        "existence/000000018150.jpg#1",
        "existence/000000018150.jpg#2",
    ]
    artwork = [s for s in samples if s.meta["subtask"] == "artwork"]
    assert artwork[0].images[0] == str(root / "artwork" / "images" / "10002.jpg")
    lines = (root / "artwork" / "questions_answers_YN" / "10002.txt").read_text().splitlines()
    assert [(s.question, s.references[0]) for s in artwork[:2]] == [tuple(line.split("\t")) for line in lines]
    assert [s.meta["subtask"] for s in samples[::2]] == ["existence"] * 2 + ["artwork"] * 2 + ["OCR", "code_reasoning"]
    assert samples[0].meta == {"subtask": "existence", "image": "existence/000000006040.jpg", "kind": "perception"}
    nested = root.parent / "nested"
    (nested / "MME_Benchmark_release_version").mkdir(parents=True)
    (nested / "MME_Benchmark_release_version" / "MME_Benchmark").symlink_to(root)
    assert [s.qid for s in load("mme", nested / "MME_Benchmark_release_version")] == [s.qid for s in samples]
    hub = load("mme", data["mme-parquet"])
    key = sorted((s.qid, s.question, s.references, s.meta) for s in samples)
    assert sorted((s.qid, s.question, s.references, s.meta) for s in hub) == key


def test_pope_splits_files_and_hub_copy(data):
    root = data["pope"]
    samples = load("pope", root)
    assert [s.qid for s in samples[:5]] == [
        "adversarial/1",
        "adversarial/2",
        "adversarial/3",
        "adversarial/4",
        "popular/1",
    ]
    line = json.loads((root / "coco" / "coco_pope_popular.json").read_text().splitlines()[1])
    popular = samples[5]
    assert (popular.question, popular.references) == (line["text"], (line["label"],))
    assert popular.images[0] == str(root / "val2014" / line["image"]) and popular.meta == {"split": "popular"}
    assert load("pope", root / "coco") == samples
    assert [s.qid for s in load("pope", root / "coco" / "coco_pope_random.json")] == [
        f"random/{i}" for i in range(1, 5)
    ]
    hub = load("pope", data["pope-parquet"])
    assert [(s.qid, s.question, s.references, s.meta) for s in hub] == [
        (s.qid, s.question, s.references, s.meta) for s in samples
    ]


def test_iconqa_subtasks_and_hub_copy(data):
    root = data["iconqa"]
    samples = load("iconqa", root)
    kinds = [s.meta["ques_type"] for s in samples]
    assert kinds == ["choose_txt"] * 5 + ["choose_img"] * 3 + ["fill_in_blank"] * 4  # val/ is not read
    by_qid = {s.qid: s for s in samples}
    txt = by_qid["111"]
    problem = json.loads((root / "iconqa" / "test" / "choose_txt" / "111" / "data.json").read_text())
    assert (txt.choices, txt.references) == (tuple(problem["choices"]), ("ABC"[problem["answer"]],))
    blank = by_qid["155"]
    assert blank.references == ("9",) and blank.choices == () and len(blank.images) == 1
    image_choice = by_qid["199"]
    folder = root / "iconqa" / "test" / "choose_img" / "199"
    assert image_choice.images == tuple(str(folder / n) for n in ("image.png", "choice_0.png", "choice_1.png"))
    assert image_choice.references == ("B",)
    assert load("iconqa", root / "iconqa" / "test") == samples
    assert [s.qid for s in load("iconqa", root / "iconqa" / "test" / "fill_in_blank")] == ["155", "166", "177", "188"]
    hub = load("iconqa", data["iconqa-parquet"])
    assert sorted((s.qid, s.question, s.choices, s.references, s.meta) for s in hub) == sorted(
        (s.qid, s.question, s.choices, s.references, s.meta) for s in samples
    )
    assert len(next(s for s in hub if s.qid == "199").images) == 3


def test_mmvet_fields_and_hub_copy(data):
    root = data["mmvet"]
    samples = load("mmvet", root)
    item = json.loads((root / "mm-vet.json").read_text())["v1_2"]
    s = samples[2]
    assert (s.qid, s.question, s.references) == ("v1_2", item["question"], (item["answer"],))
    assert s.meta == {"capability": ",".join(item["capability"])} and s.images[0] == str(root / "images" / "v1_2.png")
    hub = load("mmvet", data["mmvet-parquet"])
    assert [(s.qid, s.question, s.references, s.meta) for s in hub] == [
        (s.qid, s.question, s.references, s.meta) for s in samples
    ]


# ---- prompts: lmms-eval's doc_to_text on the hub rows -------------------------------------------------------------


def lmms_docs(name: str, data: dict[str, Path]) -> tuple[list[dict], list[EvalSample]]:
    """lmms-eval's docs (the hub rows its task reads) and our samples of the same questions, in the same order."""
    if name == "mmmu":
        docs = [r for r in hub_rows(data["mmmu"]) if r["id"].startswith("validation_")]
        return docs, load("mmmu", data["mmmu"])
    docs = hub_rows(data[LAYOUTS[name][1]])
    if name == "scienceqa-img":
        docs = [d for d in docs if d["image"] is not None]  # ScienceQA-IMG is the image rows
    return docs, load(name, data[LAYOUTS[name][1]])


# benchmark -> (lmms-eval task folder, utils module, its YAML, its doc_to_text)
LMMS_PROMPTS = {
    "scienceqa-img": ("scienceqa", "utils", "scienceqa_img.yaml", "sqa_doc_to_text"),
    "mmbench": ("mmbench", "en_utils", "mmbench_en_dev.yaml", "mmbench_doc_to_text"),
    "mmmu": ("mmmu", "utils", "mmmu_val.yaml", "mmmu_doc_to_text"),
    "mme": ("mme", "utils", "mme.yaml", "mme_doc_to_text"),
    "pope": ("pope", "utils", "pope_adv.yaml", "pope_doc_to_text"),
    "iconqa": ("iconqa", "utils", "iconqa_test.yaml", "doc_to_text"),
}


@pytest.mark.parametrize("name", sorted(LMMS_PROMPTS))
def test_prompt_is_lmms_eval_doc_to_text(name, data):
    task, module, yaml_name, function = LMMS_PROMPTS[name]
    utils = importlib.import_module(f"lmms_eval.tasks.{task}.{module}")
    kwargs = lmms_kwargs(task, yaml_name)
    docs, samples = lmms_docs(name, data)
    assert [text_of(name, s) for s in samples] == [getattr(utils, function)(d, kwargs) for d in docs]


def test_mmmu_shows_the_images_lmms_eval_shows(data):
    utils = importlib.import_module("lmms_eval.tasks.mmmu.utils")
    docs, samples = lmms_docs("mmmu", data)
    for doc, s in zip(docs, samples, strict=True):
        opened = {k: Image.open(io.BytesIO(v["bytes"])) if v else None for k, v in doc.items() if k.startswith("image")}
        visuals = utils.mmmu_doc_to_visual(doc | opened)
        assert [v.tobytes() for v in visuals] == [pixels(i) for i in s.images]


def test_mmvet_prompt_is_the_yaml_pre_prompt(data):
    kwargs = lmms_kwargs("mmvet", "mmvet.yaml")
    s = load("mmvet", data["mmvet"])[0]
    assert text_of("mmvet", s) == f"{kwargs['pre_prompt']}{s.question}{kwargs['post_prompt']}"


def test_sqa_prompt_with_and_without_context():
    s = EvalSample("1", "Which is north?", ("x.png",), ("A",), ("Maine", "Ohio"), {"hint": "A map."})
    letter = "\nAnswer with the option's letter from the given choices directly."
    assert text_of("scienceqa-img", s) == f"Context: A map.\nWhich is north?\nA. Maine\nB. Ohio{letter}"
    s = EvalSample("1", "Which is north?", ("x.png",), ("A",), ("Maine", "Ohio"), {"hint": ""})
    assert text_of("scienceqa-img", s) == f"Which is north?\nA. Maine\nB. Ohio{letter}"


# ---- scores and summaries: by hand, and lmms-eval's own process_results ------------------------------------------


def scored(name: str, samples: list[EvalSample], predictions: list[str]) -> list[dict]:
    """Records as the runner writes them (qid, prediction, scores, meta)."""
    b = get_benchmark(name)
    return [
        {"qid": s.qid, "prediction": p, "scores": b.score(s, p), "meta": dict(s.meta)}
        for s, p in zip(samples, predictions, strict=True)
    ]


def test_scienceqa_scores_as_lmms_eval(data):
    utils = importlib.import_module("lmms_eval.tasks.scienceqa.utils")
    docs, samples = lmms_docs("scienceqa-img", data)
    predictions = ["A", "b", "C. Samoa", "Maine", "The answer is B", " A ", "B.", "a.", "D", "A", "B", "C"]
    ours = [get_benchmark("scienceqa-img").score(s, p)["accuracy"] for s, p in zip(samples, predictions, strict=True)]
    theirs = [utils.sqa_process_results(d, [p])["exact_match"] for d, p in zip(docs, predictions, strict=True)]
    assert ours == theirs and 0 < sum(ours) < len(ours)


def test_scienceqa_summary_breakdowns():
    def record(correct: float, subject: str, grade: str, context: str) -> dict:
        return {"scores": {"accuracy": correct}, "meta": {"subject": subject, "grade": grade, "context": context}}

    rs = [record(1.0, "natural science", "G1-6", "TXT"), record(0.0, "social science", "G7-12", "none")]
    rs.append(record(1.0, "natural science", "G7-12", "none"))
    assert get_benchmark("scienceqa-img").summarize(rs) == pytest.approx(
        {
            "accuracy": 200 / 3,
            "accuracy/subject/natural science": 100.0,
            "accuracy/subject/social science": 0.0,
            "accuracy/grade/G1-6": 100.0,
            "accuracy/grade/G7-12": 50.0,
            "accuracy/context/TXT": 100.0,
            "accuracy/context/none": 50.0,
        }
    )


def test_mmbench_circular_accuracy_matches_lmms_eval_static(data):
    en_utils = importlib.import_module("lmms_eval.tasks.mmbench.en_utils")
    docs, samples = lmms_docs("mmbench", data)
    # group 0 (4 rotations): all right; group 1: one rotation wrong; group 2: right, in words; groups 3-5: mixed
    right = {s.qid: s.references[0] for s in samples}
    predictions = []
    for s in samples:
        p = right[s.qid]
        if s.qid == "1000001" or (s.meta["group"] == 4 and s.meta["circular"]):
            p = "B" if p == "A" else "A"
        elif s.meta["group"] == 2:
            p = f"The answer is {s.choices['ABCD'.index(p)]}"
        elif s.meta["group"] == 5:
            p = f"({p}) is correct."
        predictions.append(p)
    records = scored("mmbench", samples, predictions)
    summary = get_benchmark("mmbench").summarize(records)
    results = []
    for doc, p in zip(docs, predictions, strict=True):
        results.append(en_utils.mmbench_process_results(doc, [p])["gpt_eval_score"])
    overall, by_category, _ = en_utils.mmbench_evaluator.eval_result(results, eval_method="static")
    assert summary["circular_accuracy"] == pytest.approx(100 * overall) == pytest.approx(400 / 6)
    for category, value in by_category.items():
        assert summary[f"circular_accuracy/category/{category}"] == pytest.approx(100 * value)
    assert summary["vanilla_accuracy"] == 100.0 and summary["num_questions"] == 6


def test_mmbench_summary_by_hand():
    def record(group: int, circular: bool, correct: float, category: str) -> dict:
        meta = {"group": group, "circular": circular, "category": category, "l2_category": "perception"}
        return {"scores": {"correct": correct}, "meta": meta}

    rs = [record(0, False, 1.0, "scene"), record(0, True, 0.0, "scene"), record(1, False, 1.0, "ocr")]
    rs.append(record(1, True, 1.0, "ocr"))
    assert get_benchmark("mmbench").summarize(rs) == {
        "circular_accuracy": 50.0,
        "circular_accuracy/category/ocr": 100.0,
        "circular_accuracy/category/scene": 0.0,
        "circular_accuracy/l2_category/perception": 50.0,
        "vanilla_accuracy": 100.0,
        "num_questions": 2.0,
    }


def test_mmmu_scores_match_lmms_eval_and_official_summary(data):
    utils = importlib.import_module("lmms_eval.tasks.mmmu.utils")
    docs, samples = lmms_docs("mmmu", data)
    # <Subject>_1: C of 3 options, _2: open (12.5), _3: A of 2; answers every parser reads without its random guess
    answers = {
        "validation_Accounting_1": "The answer is (C).",
        "validation_Accounting_2": "x = 12.50",
        "validation_Accounting_3": "B",
        "validation_Art_1": "I would say that both of them show it",  # > 5 words: the option text is looked for
        "validation_Art_2": "so the value is 13",
        "validation_Art_3": "(A) Baroque",
        "validation_Math_1": "B",
        "validation_Math_2": "12.5 cm",
        "validation_Math_3": "A",
    }
    kept = [(d, s) for d, s in zip(docs, samples, strict=True) if s.qid in answers]
    ours, theirs = [], []
    for doc, s in kept:
        ours.append(get_benchmark("mmmu").score(s, answers[s.qid])["accuracy"])
        result = utils.mmmu_process_results(doc, [answers[s.qid]])["mmmu_acc"]
        theirs.append(utils.evaluate_mmmu([result])[1]["acc"])
    assert ours == theirs == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    records = scored("mmmu", [s for _, s in kept], [answers[s.qid] for _, s in kept])
    summary = get_benchmark("mmmu").summarize(records)
    assert summary["accuracy"] == pytest.approx(600 / 9)
    assert summary["accuracy/subject/Art"] == summary["accuracy/discipline/Art and Design"] == pytest.approx(200 / 3)
    assert summary["accuracy/question_type/open"] == pytest.approx(200 / 3)
    assert summary["accuracy/question_type/multiple-choice"] == pytest.approx(400 / 6)


def test_mmmu_list_answers_are_alternatives():
    s = EvalSample("validation_Math_9", "x?", (b"img",), ("24/7", "3.43"), (), {"question_type": "open"})
    assert get_benchmark("mmmu").score(s, "The answer is 3.43")["accuracy"] == 1.0
    assert get_benchmark("mmmu").score(s, "The answer is 3.5")["accuracy"] == 0.0


def test_mme_scores_and_totals_match_lmms_eval(data):
    utils = importlib.import_module("lmms_eval.tasks.mme.utils")
    docs, samples = lmms_docs("mme", data)
    predictions = ["Yes", "No", "yes.", "Yes", "No, it is not.", "no", "Y", "N", "Yes", "maybe", "No", "No"]
    ours = scored("mme", samples, predictions)
    theirs = [next(iter(utils.mme_process_results(d, [p]).values())) for d, p in zip(docs, predictions, strict=True)]
    assert [r["scores"]["correct"] for r in ours] == [t["score"] for t in theirs]
    summary = get_benchmark("mme").summarize(ours)
    perception = [t for t, d in zip(theirs, docs, strict=True) if d["category"] in utils.eval_type_dict["Perception"]]
    cognition = [t for t, d in zip(theirs, docs, strict=True) if d["category"] in utils.eval_type_dict["Cognition"]]
    assert summary["perception"] == pytest.approx(utils.mme_aggregate_results(perception))
    assert summary["cognition"] == pytest.approx(utils.mme_aggregate_results(cognition))
    # existence: images 1 (Yes/No answered Yes/No: both right) and 2 (yes./Yes: one right) -> acc 75, acc+ 50
    assert summary["existence/acc"] == 75.0 and summary["existence/acc_plus"] == 50.0 and summary["existence"] == 125.0
    assert summary["total"] == summary["perception"] + summary["cognition"]


def test_pope_metrics_by_hand_and_as_lmms_eval(data):
    utils = importlib.import_module("lmms_eval.tasks.pope.utils")
    samples = load("pope", data["pope"])[:4]  # adversarial: yes, no, yes, no
    predictions = ["Yes, there is.", "yes", "No", "no"]
    records = scored("pope", samples, predictions)
    summary = get_benchmark("pope").summarize(records)
    # TP 1, FP 1, FN 1, TN 1: precision = recall = F1 = 50, accuracy 50, yes-ratio (answers) 50
    assert summary == {
        **{f"adversarial/{k}": 50.0 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")},
        **{f"all/{k}": 50.0 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")},
        "f1": 50.0,
    }
    plain = ["yes", "yes", "no", "no"]  # lmms-eval compares the answer text exactly: only plain yes/no agree
    results = [utils.pope_process_results({"question_id": s.qid, "answer": s.references[0]}, [p])["pope_f1_score"]
               for s, p in zip(samples, plain, strict=True)]  # fmt: skip
    ours = get_benchmark("pope").summarize(scored("pope", samples, plain))
    assert ours["f1"] == pytest.approx(100 * utils.pope_aggregate_f1_score(results))
    assert ours["all/precision"] == pytest.approx(100 * utils.pope_aggregate_precision(results))
    assert ours["all/accuracy"] == pytest.approx(100 * utils.pope_aggregate_accuracy(results))


def test_pope_headline_is_adversarial_f1_else_all(data):
    samples = load("pope", data["pope"])  # adversarial, popular, random: 4 each
    predictions = ["yes"] * 4 + ["yes", "no"] * 4
    summary = get_benchmark("pope").summarize(scored("pope", samples, predictions))
    assert summary["f1"] == summary["adversarial/f1"] == pytest.approx(200 / 3)  # P 1/2, R 1
    assert summary["popular/f1"] == 100.0 and summary["adversarial/yes_ratio"] == 100.0
    random_only = [r for r in scored("pope", samples, predictions) if r["meta"]["split"] == "random"]
    assert get_benchmark("pope").summarize(random_only)["f1"] == 100.0


def test_iconqa_scores_by_hand(data):
    samples = load("iconqa", data["iconqa"])
    by_qid = {s.qid: s for s in samples}
    score = get_benchmark("iconqa").score
    assert score(by_qid["111"], "B")["accuracy"] == 1.0  # choices 3, 5, 7; answer index 1
    assert score(by_qid["111"], "B. 5")["accuracy"] == 1.0
    assert score(by_qid["111"], "C")["accuracy"] == 0.0
    assert score(by_qid["199"], "B")["accuracy"] == 1.0  # the second choice image
    assert score(by_qid["155"], "9")["accuracy"] == 1.0 and score(by_qid["155"], "12")["accuracy"] == 0.0
    records = scored("iconqa", [by_qid[q] for q in ("111", "199", "155", "166")], ["B", "A", "9", "11"])
    assert get_benchmark("iconqa").summarize(records) == {
        "accuracy": 50.0,
        "accuracy/ques_type/choose_img": 0.0,
        "accuracy/ques_type/choose_txt": 100.0,
        "accuracy/ques_type/fill_in_blank": 50.0,
        "accuracy/grade/grade1": 100.0,
        "accuracy/grade/kindergarten": 0.0,
        "accuracy/grade/prek": 50.0,
    }


def test_mmvet_is_not_scored_and_writes_the_submission_file(data, tmp_path):
    from infimm_hd.evaluation.benchmarks import mmvet

    samples = load("mmvet", data["mmvet"])[:3]
    records = scored("mmvet", samples, ["-1 and -5", "a cat", "it is funny"])
    assert all(r["scores"] == {} for r in records)
    assert get_benchmark("mmvet").summarize(records) == {"judged": 0.0, "num_answers": 3.0}
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    mmvet.main([str(predictions), str(tmp_path / "results.json")])
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "v1_0": "-1 and -5",
        "v1_1": "a cat",
        "v1_2": "it is funny",
    }


# ---- bad input: the file and the field are named ---------------------------------------------------------------


def test_scienceqa_bad_files(tmp_path):
    folder = fx.make_scienceqa(tmp_path / "a", n=4)
    edit_json(folder / "problems.json", lambda d: d["12"].pop("choices"))
    with pytest.raises(BenchmarkDataError, match="problem '12' has no field 'choices'") as err:
        load("scienceqa-img", folder)
    assert err.value.path == str(folder / "problems.json")
    folder = fx.make_scienceqa(tmp_path / "b", n=4)
    (folder / "images" / "test" / "19" / "image.png").unlink()
    with pytest.raises(BenchmarkDataError, match="'image' names the image .*19/image.png") as err:
        load("scienceqa-img", folder)
    assert err.value.path == str(folder / "problems.json")


def drop_column(src: Path, dst: Path, column: str) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pq.read_table(src).drop_columns([column]), dst)
    return dst


# benchmark -> (hub fixture, its parquet below the fixture, a column the loader needs)
HUB_COLUMNS = {
    "scienceqa-img": ("scienceqa-parquet", "data/test-00000-of-00001.parquet", "choices"),
    "mmbench": ("mmbench-parquet", "en/dev-00000-of-00001.parquet", "category"),
    "mmmu": ("mmmu", "Math/validation-00000-of-00001.parquet", "question_type"),
    "mme": ("mme-parquet", "data/test-00000-of-00001.parquet", "answer"),
    "pope": ("pope-parquet", "data/test-00000-of-00001.parquet", "question"),
    "iconqa": ("iconqa-parquet", "data/test-00000-of-00001.parquet", "query_image"),
    "mmvet": ("mmvet-parquet", "data/test-00000-of-00001.parquet", "image"),
}


@pytest.mark.parametrize("name", sorted(HUB_COLUMNS))
def test_hub_parquet_without_a_column(name, data, tmp_path):
    fixture, file, column = HUB_COLUMNS[name]
    bad = drop_column(data[fixture] / file, tmp_path / file, column)
    with pytest.raises(BenchmarkDataError, match=f"'{column}'") as err:
        load(name, tmp_path)
    assert err.value.path == str(bad)


def test_mmbench_bad_files(data, tmp_path):
    rows = data["mmbench"].read_text().splitlines()
    header = rows[0].split("\t")
    bad = tmp_path / "a" / "MMBench_DEV_EN.tsv"
    bad.parent.mkdir()
    keep = [i for i, c in enumerate(header) if c != "category"]
    bad.write_text("\n".join("\t".join(r.split("\t")[i] for i in keep) for r in rows) + "\n")
    with pytest.raises(BenchmarkDataError, match="line 2 has no field 'category'") as err:
        load("mmbench", bad)
    assert err.value.path == str(bad)
    cells = rows[3].split("\t")
    cells[header.index("image")] = "not an image!"
    bad = tmp_path / "b.tsv"
    bad.write_text("\n".join([*rows[:3], "\t".join(cells), *rows[4:]]) + "\n")
    with pytest.raises(BenchmarkDataError, match="line 4 field 'image' holds no base64 image") as err:
        load("mmbench", bad)
    assert err.value.path == str(bad)


def test_mmmu_question_naming_a_missing_image(data, tmp_path):
    file = next(data["mmmu"].glob("Art/validation-*.parquet"))
    table = pq.read_table(file)
    rows = table.to_pylist()
    rows[0]["image_2"] = None  # validation_Art_1, whose options name <image 2>
    import pyarrow as pa

    bad = tmp_path / "Art" / "validation-00000-of-00001.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), bad)
    with pytest.raises(BenchmarkDataError, match="names <image 2> but field 'image_2' holds no image") as err:
        load("mmmu", tmp_path)
    assert err.value.path == str(bad)


def test_mme_bad_files(tmp_path):
    root = fx.make_mme(tmp_path / "a", n=4)
    txt = root / "existence" / "000000018150.txt"
    txt.write_text("Is there a cat in this image? Please answer yes or no. Yes\n")
    with pytest.raises(BenchmarkDataError, match="line 1 has no tab-separated field 'answer'") as err:
        load("mme", root)
    assert err.value.path == str(txt)
    root = fx.make_mme(tmp_path / "b", n=8)
    (root / "artwork" / "images" / "10002.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match="'image' names the image .*10002.jpg") as err:
        load("mme", root)
    assert err.value.path == str(root / "artwork" / "questions_answers_YN" / "10002.txt")
    with pytest.raises(BenchmarkDataError, match="holds none of the MME subtask folders"):
        load("mme", tmp_path / "c")


def test_pope_bad_files(tmp_path):
    root = fx.make_pope(tmp_path / "a", n=2, splits=("adversarial",))
    file = root / "coco" / "coco_pope_adversarial.json"
    line = json.loads(file.read_text().splitlines()[1])
    file.write_text(
        file.read_text().replace(json.dumps(line), json.dumps({k: v for k, v in line.items() if k != "label"}))
    )
    with pytest.raises(BenchmarkDataError, match="line 2 has no field 'label'") as err:
        load("pope", root)
    assert err.value.path == str(file)
    root = fx.make_pope(tmp_path / "b", n=2, splits=("random",))
    first = json.loads((root / "coco" / "coco_pope_random.json").read_text().splitlines()[0])
    (root / "val2014" / first["image"]).unlink()
    with pytest.raises(BenchmarkDataError, match=f"'image' names the image .*{first['image']}") as err:
        load("pope", root)
    assert err.value.path == str(root / "coco" / "coco_pope_random.json")


def test_iconqa_bad_files(tmp_path):
    root = fx.make_iconqa(tmp_path / "a", n=12)
    problem = root / "iconqa" / "test" / "choose_txt" / "122" / "data.json"
    edit_json(problem, lambda d: d.pop("answer"))
    with pytest.raises(BenchmarkDataError, match="has no field 'answer'") as err:
        load("iconqa", root)
    assert err.value.path == str(problem)
    root = fx.make_iconqa(tmp_path / "b", n=12)
    (root / "iconqa" / "test" / "choose_img" / "210" / "choice_1.png").unlink()
    with pytest.raises(BenchmarkDataError, match="'choices' names the image .*choice_1.png") as err:
        load("iconqa", root)
    assert err.value.path == str(root / "iconqa" / "test" / "choose_img" / "210" / "data.json")


def test_mmvet_bad_files(tmp_path):
    root = fx.make_mmvet(tmp_path / "a", n=3)
    edit_json(root / "mm-vet.json", lambda d: d["v1_1"].pop("answer"))
    with pytest.raises(BenchmarkDataError, match="question 'v1_1' has no field 'answer'") as err:
        load("mmvet", root)
    assert err.value.path == str(root / "mm-vet.json")
    root = fx.make_mmvet(tmp_path / "b", n=3)
    (root / "images" / "v1_2.png").unlink()
    with pytest.raises(BenchmarkDataError, match="'imagename' names the image .*v1_2.png"):
        load("mmvet", root)


# ---- end to end with the tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from infimm_hd.presets import build_model

    return build_model("tiny")


E2E = [(name, official) for name, (official, _, _) in sorted(LAYOUTS.items())] + [("mmbench", "mmbench-parquet")]


@pytest.mark.parametrize(("name", "fixture"), E2E)
def test_evaluate_end_to_end(name, fixture, data, tiny_model, tmp_path, one_thread):
    model, processor = tiny_model
    benchmark = get_benchmark(name)
    settings = EvalSettings(batch_size=4, limit=4, max_new_tokens=4, progress=False)
    summary = evaluate_benchmark(model, processor, benchmark, data[fixture], tmp_path / "out", settings)
    lines = (tmp_path / "out" / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 4
    for record in map(json.loads, lines):
        assert record["benchmark"] == name and "scores" in record
        assert all(0.0 <= v <= 1.0 for v in record["scores"].values())
    saved = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert saved == summary and saved["metric"] == benchmark.metric and saved["num_samples"] == 4
    assert benchmark.metric in saved["scores"]


def test_fixture_script_writes_every_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["closed_form", str(tmp_path), "--n", "4"])
    fx.main()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(fx.MAKERS)
