"""The open-ended benchmarks (VQAv2, OK-VQA, TextVQA, DocVQA, InfographicVQA, ChartQA, GQA, OCR-VQA, ST-VQA): each
read from a tiny copy in its published layout (`data_prep.benchmark_fixtures.open_ended`) and from lmms-eval's hub
layout, prompted and scored exactly as lmms-eval 0.7.3 does (its own functions are the reference),
with bad files reported by file and field, and run end to end with the tiny model."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.benchmark_fixtures import open_ended as fx
from infimm_hd.evaluation.benchmark import get_benchmark
from infimm_hd.evaluation.runner import PREDICTIONS, SUMMARY, EvalSettings, evaluate_benchmark
from infimm_hd.evaluation.samples import BenchmarkDataError, EvalSample
from tests.helpers.benchmark_tests import edit_json, lmms_kwargs

# benchmark -> (fixture of the official layout, fixture of the hub layout or None)
LAYOUTS = {
    "vqav2": ("vqav2", "vqav2-hub"),
    "okvqa": ("okvqa", "okvqa-hub"),
    "textvqa": ("textvqa", "textvqa-hub"),
    "docvqa": ("docvqa", "docvqa-hub"),
    "infovqa": ("infovqa", "infovqa-hub"),
    "chartqa": ("chartqa", "chartqa-hub"),
    "gqa": ("gqa", "gqa-hub"),
    "ocrvqa": ("ocrvqa", None),
    "stvqa": ("stvqa", None),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Every fixture, 12 questions each, written once for the module (tests that break files make their own)."""
    root = tmp_path_factory.mktemp("open_ended")
    return {name: make(root / name) for name, make in fx.MAKERS.items()}


def load(name: str, path: Path) -> list[EvalSample]:
    return get_benchmark(name).load(path)


def text_of(name: str, sample: EvalSample) -> str:
    parts = get_benchmark(name).prompt(sample)
    assert parts[:-1] == [{"type": "image"}] * len(sample.images), f"{name}: images first, then the text"
    return parts[-1]["text"]


# ---- loading: the published layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_loads_every_question_once(name, data):
    samples = load(name, data[LAYOUTS[name][0]])
    assert len(samples) == 12, f"{name}: the fixture holds 12 questions"
    assert len({s.qid for s in samples}) == 12, f"{name}: question ids must be unique"
    for s in samples:
        assert isinstance(s.qid, str) and s.question and s.references and len(s.images) == 1 and not s.choices
        assert Path(s.images[0]).is_file()


def test_vqav2_and_okvqa_fields(data):
    for name, (questions_file, annotations_file, _) in fx.VQA_FILES.items():
        folder = data[name]
        question = json.loads((folder / questions_file).read_text())["questions"][3]
        annotation = json.loads((folder / annotations_file).read_text())["annotations"][3]
        sample = load(name, folder)[3]
        assert sample.qid == str(question["question_id"]) and sample.question == question["question"]
        assert sample.references == tuple(a["answer"] for a in annotation["answers"]) and len(sample.references) == 10
        assert sample.meta == {"answer_type": annotation["answer_type"], "question_type": annotation["question_type"]}
        assert sample.images[0].endswith(f"val2014/COCO_val2014_{question['image_id']:012d}.jpg")
    # the JSON files may also be named directly, and may sit in the VQA API's Questions/ and Annotations/
    assert load("vqav2", data["vqav2"] / fx.VQA_FILES["vqav2"][0]) == load("vqav2", data["vqav2"])


def test_vqa_api_folder_names(tmp_path):
    folder = fx.make_vqav2(tmp_path, n=4)
    for sub, file_name in (("Questions", fx.VQA_FILES["vqav2"][0]), ("Annotations", fx.VQA_FILES["vqav2"][1])):
        (folder / sub).mkdir()
        (folder / file_name).rename(folder / sub / file_name)
    (folder / "Images").mkdir()
    (folder / "val2014").rename(folder / "Images" / "val2014")
    assert [s.qid for s in load("vqav2", folder)] == [str(262148000 + 7919000 * (i // 2) + i % 2) for i in range(4)]


def test_textvqa_docvqa_infovqa_stvqa_fields(data):
    row = json.loads((data["textvqa"] / "TextVQA_0.5.1_val.json").read_text())["data"][5]
    s = load("textvqa", data["textvqa"])[5]
    assert (s.qid, s.question, s.references) == (str(row["question_id"]), row["question"], tuple(row["answers"]))
    assert s.images[0].endswith(f"train_images/{row['image_id']}.jpg")

    row = json.loads((data["docvqa"] / "val_v1.0.json").read_text())["data"][2]
    s = load("docvqa", data["docvqa"])[2]
    assert (s.qid, s.references, s.meta) == (
        str(row["questionId"]),
        tuple(row["answers"]),
        {"question_types": row["question_types"]},
    )
    assert s.images[0] == str(data["docvqa"] / row["image"]) and row["image"].startswith("documents/")

    row = json.loads((data["infovqa"] / "infographicsVQA_val_v1.0_withQT.json").read_text())["data"][1]
    s = load("infovqa", data["infovqa"])[1]
    assert s.qid == str(row["questionId"]) and s.images[0].endswith(f"infographicsvqa_images/{row['image_local_name']}")
    assert s.meta == {k: row[k] for k in ("answer_type", "evidence", "operation/reasoning")}

    row = json.loads((data["stvqa"] / "train_task_3.json").read_text())["data"][3]
    s = load("stvqa", data["stvqa"])[3]
    assert (s.qid, s.references, s.meta) == (str(row["question_id"]), tuple(row["answers"]), {"source": "visual7w"})
    assert s.images[0] == str(data["stvqa"] / "train_images" / row["file_path"])


def test_chartqa_ids_and_splits(data, tmp_path):
    root = data["chartqa"]
    samples = load("chartqa", root)
    assert load("chartqa", root / "test") == samples, "'ChartQA Dataset' or its test/ folder"
    human = json.loads((root / "test" / "test_human.json").read_text())
    augmented = json.loads((root / "test" / "test_augmented.json").read_text())
    assert [s.qid for s in samples] == [f"human_test-{i}" for i in range(6)] + [f"augmented_test-{i}" for i in range(6)]
    assert [s.question for s in samples] == [r["query"] for r in human + augmented]
    assert [s.references for s in samples] == [(r["label"],) for r in human + augmented]
    assert samples[7].meta == {"split": "augmented_test"} and samples[7].images[0].endswith(
        f"png/{augmented[1]['imgname']}"
    )
    # lmms-eval's upload script reads {"data": [...]}: accepted too
    copy = fx.make_chartqa(tmp_path)
    file = copy / "test" / "test_human.json"
    file.write_text(json.dumps({"data": json.loads(file.read_text())}))
    assert [(s.qid, s.question, s.references) for s in load("chartqa", copy)] == [
        (s.qid, s.question, s.references) for s in samples
    ]


def test_gqa_fields(data):
    questions = json.loads((data["gqa"] / "testdev_balanced_questions.json").read_text())
    qid, q = list(questions.items())[4]
    s = load("gqa", data["gqa"])[4]
    assert (s.qid, s.question, s.references) == (qid, q["question"], (q["answer"],))
    assert s.meta == {"structural": q["types"]["structural"], "semantic": q["types"]["semantic"]}
    assert s.images[0].endswith(f"images/{q['imageId']}.jpg")


def test_ocrvqa_splits(data):
    covers = json.loads((data["ocrvqa"] / "dataset.json").read_text())
    val = load("ocrvqa", data["ocrvqa"])
    test = load("ocrvqa-test", data["ocrvqa"] / "dataset.json")
    ((val_id, cover),) = [(k, c) for k, c in covers.items() if c["split"] == 2][:1]
    assert [s.qid for s in val[:5]] == [f"{val_id}-{i}" for i in range(5)]
    assert [s.references[0] for s in val[:5]] == cover["answers"] and val[1].question == cover["questions"][1]
    assert val[0].images[0].endswith(f"images/{val_id}.jpg") and val[0].meta == {"genre": cover["genre"]}
    (test_id,) = [k for k, c in covers.items() if c["split"] == 3]
    assert [s.qid for s in test] == [f"{test_id}-{i}" for i in range(3)], "split 3 = test, split 1 (train) left out"


# ---- loading: lmms-eval's hub copies give the same samples -------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, (_, hub) in sorted(LAYOUTS.items()) if hub])
def test_hub_parquet_matches_official(name, data):
    official, hub = load(name, data[LAYOUTS[name][0]]), load(name, data[LAYOUTS[name][1]])
    assert [s.qid for s in hub] == [s.qid for s in official]
    assert [s.question for s in hub] == [s.question for s in official]
    assert [s.references for s in hub] == [s.references for s in official]
    drop = {"evidence"}  # not a column of the InfographicVQA hub config
    assert [{k: v for k, v in s.meta.items() if k not in drop} for s in hub] == [
        {k: v for k, v in s.meta.items() if k not in drop} for s in official
    ]
    for h, o in zip(hub, official, strict=True):
        assert h.images[0] == Path(o.images[0]).read_bytes(), f"{name} {h.qid}: the inline image is the file's bytes"


def test_hub_shares_one_copy_per_photo(data):
    samples = load("vqav2", data["vqav2-hub"])
    assert samples[0].images[0] is samples[1].images[0], "two questions about one photo keep one bytes object"


def test_hub_snapshot_roots(data, tmp_path):
    """A DocVQA snapshot holds both configs: its root gives the config of the benchmark asked for."""
    root = tmp_path / "DocVQA-snapshot"
    shutil.copytree(data["docvqa-hub"], root)
    shutil.copytree(data["infovqa-hub"], root, dirs_exist_ok=True)
    assert [s.qid for s in load("docvqa", root)] == [s.qid for s in load("docvqa", data["docvqa"])]
    assert [s.qid for s in load("infovqa", root)] == [s.qid for s in load("infovqa", data["infovqa"])]
    single = root / "DocVQA" / "validation-00000-of-00001.parquet"
    assert len(load("docvqa", single)) == 12, "a single parquet file"


# ---- prompts: lmms-eval's doc_to_text --------------------------------------------------------------------------------


def raw_docs(name: str, path: Path) -> list[dict]:
    """The fixture's records as lmms-eval's docs (the hub rows hold the same fields)."""
    if name in fx.VQA_FILES:
        return json.loads((path / fx.VQA_FILES[name][0]).read_text())["questions"]
    if name == "chartqa":
        rows = [
            r
            for split in ("human", "augmented")
            for r in json.loads((path / "test" / f"test_{split}.json").read_text())
        ]
        return [{"question": r["query"]} for r in rows]
    if name == "gqa":
        return list(json.loads((path / "testdev_balanced_questions.json").read_text()).values())
    file = {"textvqa": "TextVQA_0.5.1_val.json", "docvqa": "val_v1.0.json", "stvqa": "train_task_3.json"}
    return json.loads((path / file.get(name, "infographicsVQA_val_v1.0_withQT.json")).read_text())["data"]


# benchmark -> (lmms-eval task folder, its YAML, its doc_to_text)
LMMS_PROMPTS = {
    "vqav2": ("vqav2", "vqav2_val.yaml", "vqav2_doc_to_text"),
    "okvqa": ("ok_vqa", "ok_vqa_val2014.yaml", "ok_vqa_doc_to_text"),
    "textvqa": ("textvqa", "textvqa_val.yaml", "textvqa_doc_to_text"),
    "docvqa": ("docvqa", "docvqa_val.yaml", "docvqa_doc_to_text"),
    "infovqa": ("infovqa", "infovqa_val.yaml", "infovqa_doc_to_text"),
    "chartqa": ("chartqa", "chartqa.yaml", "chartqa_doc_to_text"),
    "gqa": ("gqa", "gqa.yaml", "gqa_doc_to_text"),
    "stvqa": ("stvqa", "stvqa.yaml", "stvqa_doc_to_text"),
}


@pytest.mark.parametrize("name", sorted(LMMS_PROMPTS))
def test_prompt_is_lmms_eval_doc_to_text(name, data):
    task, yaml_name, function = LMMS_PROMPTS[name]
    utils = importlib.import_module(f"lmms_eval.tasks.{task}.utils")
    kwargs = lmms_kwargs(task, yaml_name)
    samples = load(name, data[LAYOUTS[name][0]])
    docs = raw_docs(name, data[LAYOUTS[name][0]])
    assert [text_of(name, s) for s in samples] == [getattr(utils, function)(d, kwargs) for d in docs]
    assert get_benchmark(name).instruction == kwargs["post_prompt"]


def test_textvqa_prompt_capitalizes_like_lmms_eval(data):
    sample = EvalSample("1", "what does the SIGN say?", ("x.jpg",), ("stop",))
    assert text_of("textvqa", sample) == "What does the sign say?\nAnswer the question using a single word or phrase."


def test_ocrvqa_prompt(data):
    sample = load("ocrvqa", data["ocrvqa"])[0]
    assert text_of("ocrvqa", sample) == "Who wrote this book?\nAnswer the question using a single word or phrase."


# ---- scores: hand-computed values, and lmms-eval's own process_results ------------------------------------------


def sample(references: tuple[str, ...], **meta) -> EvalSample:
    return EvalSample("q", "?", ("x.jpg",), references, meta=meta)


def test_vqa_accuracy_by_hand():
    refs = ("2",) * 3 + ("3",) * 7
    vqav2 = get_benchmark("vqav2").score
    # 3 of 10 humans: 7 leave-one-out subsets still hold 3 (1.0), 3 hold 2 (2/3) -> 0.9
    assert vqav2(sample(refs), "Two.") == pytest.approx({"vqa_accuracy": 0.9})
    assert vqav2(sample(refs), "3") == {"vqa_accuracy": 1.0}
    assert vqav2(sample(refs), "4") == {"vqa_accuracy": 0.0}
    refs = ("nikon",) + ("canon",) * 9  # one human: 9 subsets hold it once (1/3), 1 not at all -> 0.3
    for name in ("okvqa", "textvqa"):
        assert get_benchmark(name).score(sample(refs), "Nikon") == pytest.approx({"vqa_accuracy": 0.3})


def test_anls_relaxed_and_exact_match_by_hand():
    for name in ("docvqa", "infovqa", "stvqa"):
        score = get_benchmark(name).score
        assert score(sample(("Annual Report",)), "annual reprt") == pytest.approx({"anls": 1 - 1 / 13})
        assert score(sample(("Annual Report", "report")), "REPORT") == {"anls": 1.0}
        assert score(sample(("Annual Report",)), "xyz") == {"anls": 0.0}, "below the 0.5 threshold"
    chartqa = get_benchmark("chartqa").score
    expected = {("53", "52"): 1.0, ("60", "52"): 0.0, ("0.45", "45%"): 1.0, ("democrats", "Democrats"): 1.0}
    for (prediction, label), value in expected.items():
        assert chartqa(sample((label,)), prediction) == {"relaxed_accuracy": value}, (prediction, label)
    gqa = get_benchmark("gqa").score
    assert gqa(sample(("yes",)), "Yes.") == {"exact_match": 1.0}
    assert gqa(sample(("yes",)), "yes it is") == {"exact_match": 0.0}
    ocrvqa = get_benchmark("ocrvqa").score
    assert ocrvqa(sample(("Sandra Boynton",)), "sandra boynton") == {"exact_match": 1.0}
    assert ocrvqa(sample(("Sandra Boynton",)), "Boynton") == {"exact_match": 0.0}


def predictions_for(s: EvalSample) -> list[str]:
    """Right, differently written, near-numeric and wrong answers."""
    ref = s.references[0]
    out = [ref, ref.upper() + ".", f"the {s.references[-1]}", "nothing", ref.replace(" ", "")]
    if ref.rstrip("%").replace(".", "", 1).isdigit():
        out.append(f"{float(ref.rstrip('%')) * 1.04:g}")
    return out


def lmms_score(name: str, doc: dict, s: EvalSample, prediction: str) -> float:
    """lmms-eval 0.7.3's per-sample score for the same doc and answer."""
    import copy

    doc = copy.deepcopy(doc)
    if name == "vqav2":
        from lmms_eval.tasks.vqav2.utils import vqav2_process_results

        return vqav2_process_results(doc, [prediction])["exact_match"]
    if name == "okvqa":
        from lmms_eval.tasks.ok_vqa.utils import ok_vqa_process_results

        return ok_vqa_process_results(doc | {"answers": list(s.references)}, [prediction])["exact_match"]
    if name == "textvqa":
        from lmms_eval.tasks.textvqa.utils import textvqa_process_results

        return textvqa_process_results(doc, [prediction])["exact_match"]
    if name in ("docvqa", "infovqa", "stvqa"):
        from lmms_eval.api.metrics import anls

        return anls(list(s.references), [prediction])["anls"]
    if name == "chartqa":
        from lmms_eval.tasks.chartqa.utils import chartqa_process_results

        doc = {"type": s.meta["split"], "answer": s.references[0]}
        return chartqa_process_results(doc, [prediction])["relaxed_overall"]
    from lmms_eval.api.metrics import exact_match_hf_evaluate

    result = exact_match_hf_evaluate([prediction], [s.references[0]], ignore_case=True, ignore_punctuation=True)
    return float(result["exact_match"])


@pytest.mark.parametrize("name", sorted(LMMS_PROMPTS))
def test_scores_equal_lmms_eval(name, data):
    importlib.import_module(f"lmms_eval.tasks.{LMMS_PROMPTS[name][0]}.utils")
    path = data[LAYOUTS[name][0]]
    samples = load(name, path)
    docs = raw_docs(name, path)
    if name == "vqav2":  # lmms-eval's VQAv2 doc carries the annotation's answer dicts
        annotations = json.loads((path / fx.VQA_FILES[name][1]).read_text())["annotations"]
        docs = [d | {"answers": a["answers"]} for d, a in zip(docs, annotations, strict=True)]
    (key,) = get_benchmark(name).score(samples[0], "x")
    for s, doc in zip(samples, docs, strict=True):
        for prediction in predictions_for(s):
            ours = get_benchmark(name).score(s, prediction)[key]
            assert ours == pytest.approx(lmms_score(name, doc, s, prediction)), f"{name} {s.qid}: {prediction!r}"


# ---- summaries ---------------------------------------------------------------------------------------------------


def records(score: str, values: list[float], **meta_lists) -> list[dict]:
    keys = list(meta_lists)
    return [{"scores": {score: v}, "meta": {k: meta_lists[k][i] for k in keys}} for i, v in enumerate(values)]


def test_vqa_summary_has_the_official_breakdowns():
    rs = records(
        "vqa_accuracy",
        [1.0, 0.0, 0.9, 0.3],
        answer_type=["yes/no", "yes/no", "number", "other"],
        question_type=["is the", "is the", "how many", "what"],
    )
    for name in ("vqav2", "okvqa"):
        summary = get_benchmark(name).summarize(rs)
        assert summary == pytest.approx(
            {
                "vqa_accuracy": 55.0,
                "vqa_accuracy/answer_type/yes/no": 50.0,
                "vqa_accuracy/answer_type/number": 90.0,
                "vqa_accuracy/answer_type/other": 30.0,
                "vqa_accuracy/question_type/is the": 50.0,
                "vqa_accuracy/question_type/how many": 90.0,
                "vqa_accuracy/question_type/what": 30.0,
            }
        )
    assert get_benchmark("textvqa").summarize(records("vqa_accuracy", [1.0, 0.3])) == pytest.approx(
        {"vqa_accuracy": 65.0}
    )


def test_chartqa_summary_is_lmms_evals_three_numbers():
    rs = records("relaxed_accuracy", [1.0, 0.0, 1.0, 1.0], split=["human_test"] * 2 + ["augmented_test"] * 2)
    assert get_benchmark("chartqa").summarize(rs) == {
        "relaxed_overall": 75.0,
        "relaxed_human_split": 50.0,
        "relaxed_augmented_split": 100.0,
    }


def test_anls_summaries_count_every_type_of_a_question():
    rs = records("anls", [1.0, 0.5], question_types=[["form", "layout"], ["form"]])
    assert get_benchmark("docvqa").summarize(rs) == {
        "anls": 75.0,
        "anls/question_types/form": 75.0,
        "anls/question_types/layout": 100.0,
    }
    rs = records(
        "anls",
        [0.0, 1.0],
        answer_type=[["single span"], ["non-extractive"]],
        evidence=[["Text"], ["Text", "Map"]],
        **{"operation/reasoning": [[], ["Counting"]]},
    )
    assert get_benchmark("infovqa").summarize(rs) == {
        "anls": 50.0,
        "anls/answer_type/non-extractive": 100.0,
        "anls/answer_type/single span": 0.0,
        "anls/evidence/Map": 100.0,
        "anls/evidence/Text": 50.0,
        "anls/operation/reasoning/Counting": 100.0,
    }
    rs = records("anls", [0.25, 0.75, 1.0], source=["coco-text", "coco-text", "visual7w"])
    assert get_benchmark("stvqa").summarize(rs) == pytest.approx(
        {"anls": 200 / 3, "anls/source/coco-text": 50.0, "anls/source/visual7w": 100.0}
    )


def test_gqa_and_ocrvqa_summaries():
    rs = records(
        "exact_match", [1.0, 0.0, 1.0], structural=["verify", "query", "query"], semantic=["rel", "attr", "rel"]
    )
    assert get_benchmark("gqa").summarize(rs) == pytest.approx(
        {
            "exact_match": 200 / 3,
            "exact_match/structural/query": 50.0,
            "exact_match/structural/verify": 100.0,
            "exact_match/semantic/attr": 0.0,
            "exact_match/semantic/rel": 100.0,
        }
    )
    assert get_benchmark("ocrvqa").summarize(records("exact_match", [1.0, 0.0], genre=["a", "b"])) == {
        "exact_match": 50.0
    }


# ---- bad input: the file and the field are named ---------------------------------------------------------------


def first_val_cover(data: dict) -> dict:
    return next(c for c in data.values() if c["split"] == 2)


# benchmark -> (fixture maker, JSON file below the returned path, edit removing a field, the field)
MISSING_FIELD = {
    "vqav2": (fx.make_vqav2, fx.VQA_FILES["vqav2"][0], lambda d: d["questions"][2].pop("question"), "question"),
    "okvqa": (fx.make_okvqa, fx.VQA_FILES["okvqa"][1], lambda d: d["annotations"][5].pop("answers"), "answers"),
    "textvqa": (fx.make_textvqa, "TextVQA_0.5.1_val.json", lambda d: d["data"][1].pop("image_id"), "image_id"),
    "docvqa": (fx.make_docvqa, "val_v1.0.json", lambda d: d["data"][0].pop("answers"), "answers"),
    "infovqa": (
        fx.make_infovqa,
        "infographicsVQA_val_v1.0_withQT.json",
        lambda d: d["data"][3].pop("image_local_name"),
        "image_local_name",
    ),
    "chartqa": (fx.make_chartqa, "test/test_augmented.json", lambda d: d[0].pop("label"), "label"),
    "gqa": (fx.make_gqa, "testdev_balanced_questions.json", lambda d: next(iter(d.values())).pop("answer"), "answer"),
    "ocrvqa": (fx.make_ocrvqa, "dataset.json", lambda d: first_val_cover(d).pop("imageURL"), "imageURL"),
    "stvqa": (fx.make_stvqa, "train_task_3.json", lambda d: d["data"][2].pop("file_path"), "file_path"),
}


@pytest.mark.parametrize("name", sorted(MISSING_FIELD))
def test_missing_field_names_file_and_field(name, tmp_path):
    make, file_name, edit, field = MISSING_FIELD[name]
    path = make(tmp_path, n=6)
    edit_json(path / file_name, edit)
    with pytest.raises(BenchmarkDataError, match=f"'{field}'") as err:
        load(name, path)
    assert err.value.path == str(path / file_name)


# benchmark -> (fixture maker, the image of its first question below the returned path, the file, the field)
MISSING_IMAGE = {
    "vqav2": (fx.make_vqav2, "val2014/COCO_val2014_000000262148.jpg", fx.VQA_FILES["vqav2"][0], "image_id"),
    "okvqa": (fx.make_okvqa, "val2014/COCO_val2014_000000262148.jpg", fx.VQA_FILES["okvqa"][0], "image_id"),
    "textvqa": (fx.make_textvqa, "train_images/003a8ae2ef43b901.jpg", "TextVQA_0.5.1_val.json", "image_id"),
    "docvqa": (fx.make_docvqa, "documents/pybv0228_81.png", "val_v1.0.json", "image"),
    "infovqa": (
        fx.make_infovqa,
        "infographicsvqa_images/37313.jpeg",
        "infographicsVQA_val_v1.0_withQT.json",
        "image_local_name",
    ),
    "chartqa": (fx.make_chartqa, "test/png/41699051005347.png", "test/test_human.json", "imgname"),
    "gqa": (fx.make_gqa, "images/n161313.jpg", "testdev_balanced_questions.json", "imageId"),
    "ocrvqa": (fx.make_ocrvqa, "images/0761183272.jpg", "dataset.json", "imageURL"),
    "stvqa": (
        fx.make_stvqa,
        "train_images/coco-text/COCO_train2014_000000378466.jpg",
        "train_task_3.json",
        "file_path",
    ),
}


@pytest.mark.parametrize("name", sorted(MISSING_IMAGE))
def test_missing_image_names_file_and_field(name, tmp_path):
    make, image, file_name, field = MISSING_IMAGE[name]
    path = make(tmp_path, n=6)
    (path / image).unlink()
    with pytest.raises(BenchmarkDataError, match=f"'{field}' names the image .*{Path(image).name}") as err:
        load(name, path)
    assert err.value.path == str(path / file_name)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_empty_folder_names_the_expected_file(name, tmp_path):
    with pytest.raises(BenchmarkDataError, match="does not exist"):
        load(name, tmp_path)


def test_hub_parquet_without_a_column(data, tmp_path):
    table = pq.read_table(data["vqav2-hub"] / "data" / "validation-00000-of-00001.parquet").drop_columns(["answers"])
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "validation-00000-of-00001.parquet")
    with pytest.raises(BenchmarkDataError, match="'answers'") as err:
        load("vqav2", tmp_path)
    assert err.value.path == str(tmp_path / "data" / "validation-00000-of-00001.parquet")


def test_gqa_hub_question_without_its_image(data, tmp_path):
    for config in ("testdev_balanced_instructions", "testdev_balanced_images"):
        (tmp_path / config).mkdir()
    file = "testdev-00000-of-00001.parquet"
    pq.write_table(
        pq.read_table(data["gqa-hub"] / "testdev_balanced_instructions" / file),
        tmp_path / "testdev_balanced_instructions" / file,
    )
    images = pq.read_table(data["gqa-hub"] / "testdev_balanced_images" / file)
    pq.write_table(images.slice(1), tmp_path / "testdev_balanced_images" / file)
    with pytest.raises(BenchmarkDataError, match="'imageId'"):
        load("gqa", tmp_path)


def test_stvqa_test_split_is_refused_with_the_reason(tmp_path):
    path = fx.make_stvqa(tmp_path, n=3)
    edit_json(path / "train_task_3.json", lambda d: [q.pop("answers") for q in d["data"]])
    (path / "train_task_3.json").rename(path / "test_task_3.json")
    (path / "train_images").rename(path / "test_task3_images")
    with pytest.raises(BenchmarkDataError, match="'answers'.*RRC"):
        load("stvqa", path)


def test_vqa_question_without_annotation(tmp_path):
    path = fx.make_vqav2(tmp_path, n=4)
    edit_json(path / fx.VQA_FILES["vqav2"][1], lambda d: d["annotations"].pop(1))
    with pytest.raises(BenchmarkDataError, match="'question_id'") as err:
        load("vqav2", path)
    assert err.value.path == str(path / fx.VQA_FILES["vqav2"][1])


# ---- end to end with the tiny model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    from infimm_hd.presets import build_model

    return build_model("tiny")


E2E = [(name, official) for name, (official, _) in sorted(LAYOUTS.items())] + [("docvqa", "docvqa-hub")]


@pytest.mark.parametrize(("name", "fixture"), E2E)
def test_evaluate_end_to_end(name, fixture, data, tiny_model, tmp_path, one_thread):
    model, processor = tiny_model
    benchmark = get_benchmark(name)
    settings = EvalSettings(batch_size=4, limit=4, max_new_tokens=4, progress=False)
    summary = evaluate_benchmark(model, processor, benchmark, data[fixture], tmp_path / "out", settings)
    lines = (tmp_path / "out" / PREDICTIONS).read_text().splitlines()
    assert len(lines) == 4
    for record in map(json.loads, lines):
        (value,) = record["scores"].values()
        assert 0.0 <= value <= 1.0 and record["benchmark"] == name
    saved = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert saved == summary and saved["metric"] == benchmark.metric and saved["num_samples"] == 4
    assert 0.0 <= saved["scores"][benchmark.metric] <= 100.0
