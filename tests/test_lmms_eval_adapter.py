"""The lmms-eval adapter: registered through the entry point, scoring exactly what our own API computes.

References are independent of the adapter's batching: answers come from `infimm_hd.answer` one question at a time,
log-likelihoods from one unpadded forward per (prompt, choice) with the full logits. The end-to-end test runs
lmms-eval itself (`python -m lmms_eval`) on local tasks written by `data_prep.benchmark_fixtures.lmms_eval_tasks`,
with answers and labels chosen from those references so that the scores lmms-eval reports are known in advance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance, unwrap_generation_output
from PIL import Image

import infimm_hd
from data_prep.benchmark_fixtures.closed_form import photo
from data_prep.benchmark_fixtures.lmms_eval_tasks import MAX_NEW_TOKENS, LocalDoc, default_docs, write_local_tasks
from infimm_hd.evaluation.lmms_eval_model import InfiMMHDLmms, cut_at_stop, generate_settings, user_content
from infimm_hd.inference.loading import load_model
from infimm_hd.inference.prompts import render_prompt
from tests.conftest import randomize_gates

POST_PROMPT = "\nAnswer the question using a single word or phrase."
CHOICES = ["yes", "no", "a much longer third choice"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """The tiny preset with non-zero gates (so the image changes every score), saved as a user would save it."""
    model, processor = infimm_hd.build_model("tiny", seed=0)
    randomize_gates(model, scale=1.0, seed=3)
    folder = tmp_path_factory.mktemp("lmms") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(model_folder):
    return load_model(str(model_folder))


def images(n: int) -> list[Image.Image]:
    rng = __import__("numpy").random.default_rng(7)
    return [photo(i, rng) for i in range(n)]


def reference_answer(model, processor, image, question: str) -> str:
    raw = infimm_hd.answer(model, processor, image, question, max_new_tokens=MAX_NEW_TOKENS)
    return raw.split("\n")[0].strip()


@torch.no_grad()
def reference_loglikelihood(model, processor, image, question: str, continuation: str) -> tuple[float, bool]:
    """One unpadded forward over prompt + continuation with every logit; lm-eval's token split."""
    prompt = render_prompt(processor, question)
    whole = processor(text=[prompt + continuation], images=[[image]], add_special_tokens=False)
    n_prompt = len(processor.tokenizer.encode(prompt, add_special_tokens=False))
    logits = model(**whole).logits[0].float()  # (T, V)
    ids = whole["input_ids"][0]
    logprobs = torch.log_softmax(logits[n_prompt - 1 : -1], dim=-1)  # row t predicts ids[n_prompt + t]
    targets = ids[n_prompt:]
    total = logprobs.gather(-1, targets[:, None]).sum()
    return float(total), bool((logprobs.argmax(-1) == targets).all())


def adapter_over(model_folder, docs, batch_size: int, **kwargs) -> InfiMMHDLmms:
    adapter = InfiMMHDLmms(pretrained=str(model_folder), batch_size=batch_size, **kwargs)
    adapter.task_dict = {"local": {"test": docs}}
    return adapter


def to_visual(doc):
    return [doc["image"]]


def req(kind: str, args: tuple) -> Instance:
    return Instance(kind, args, idx=0, metadata={"task": "local", "doc_id": 0, "repeats": 1})


# -- registration --------------------------------------------------------------------------------------------------


def test_the_entry_point_registers_the_adapter_with_lmms_eval():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("infimm_hd") is InfiMMHDLmms
    assert registry.get_model_class("infimm-hd") is InfiMMHDLmms  # the alias


# -- requests, in process ------------------------------------------------------------------------------------------


def test_loglikelihood_batched_equals_one_unpadded_forward_per_choice(model_folder, reference):
    model, processor = reference
    pictures = images(3)
    questions = ["What?", "What is in the photo, and what colour is it?", "Is it big?"]
    docs = [{"image": img} for img in pictures]
    requests, expected = [], []
    for d, q in enumerate(questions):
        for choice in CHOICES:
            requests.append(req("loglikelihood", (q, f" {choice}", to_visual, d, "local", "test")))
            expected.append(reference_loglikelihood(model, processor, pictures[d], q, f" {choice}"))
    for batch_size in (1, 4):  # 4: left padding across different prompt and choice lengths
        adapter = adapter_over(model_folder, docs, batch_size)
        got = [unwrap_generation_output(r)[0] for r in adapter.loglikelihood(requests)]  # as lmms-eval reads them
        assert [g[1] for g in got] == [e[1] for e in expected]
        assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], abs=2e-4)
    # The image matters (gates are open): the same question about another photo scores differently.
    other = reference_loglikelihood(model, processor, pictures[1], questions[0], " yes")
    assert abs(other[0] - expected[0][0]) > 1e-3


def test_loglikelihood_callable_target_and_unconditional_requests(model_folder, reference):
    model, processor = reference
    (picture,) = images(1)
    docs = [{"image": picture, "gold": "yes"}]
    adapter = adapter_over(model_folder, docs, 2)
    by_target = req("loglikelihood", ("Q?", lambda doc: f" {doc['gold']}", to_visual, 0, "local", "test"))
    unconditional = req("loglikelihood", ("Q?", " yes"))  # lm-eval's ("", choice) for acc_mutual_info
    (scored, bare) = [unwrap_generation_output(r)[0] for r in adapter.loglikelihood([by_target, unconditional])]
    assert scored[0] == pytest.approx(reference_loglikelihood(model, processor, picture, "Q?", " yes")[0], abs=2e-4)
    ids = processor.tokenizer.encode("Q? yes", add_special_tokens=False)
    n = len(processor.tokenizer.encode("Q?", add_special_tokens=False))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[n - 1 : -1], -1).gather(-1, torch.tensor(ids[n:])[:, None]).sum()
    assert bare[0] == pytest.approx(float(logprobs), abs=2e-4)


def test_generate_until_batched_equals_answer_one_by_one_in_request_order(model_folder, reference):
    model, processor = reference
    pictures = images(5)
    questions = ["What?", "Describe the photo in detail please.", "Colour?", "Where is it?", "Who took it, and when?"]
    docs = [{"image": img} for img in pictures]
    short = {"max_new_tokens": 3, "temperature": 0, "until": ["\n"]}
    long = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0, "until": ["\n"]}
    kwargs = [short, long, long, short, long]  # two generation groups, interleaved
    requests = [
        req("generate_until", (q, dict(k), to_visual, i, "local", "test"))
        for i, (q, k) in enumerate(zip(questions, kwargs, strict=True))
    ]
    adapter = adapter_over(model_folder, docs, 2)
    got = [unwrap_generation_output(r)[0] for r in adapter.generate_until(requests)]
    want = [
        infimm_hd.answer(model, processor, img, q, max_new_tokens=k["max_new_tokens"]).split("\n")[0].strip()
        for img, q, k in zip(pictures, questions, kwargs, strict=True)
    ]
    assert got == want


def test_multi_round_builds_each_round_from_the_previous_answers(model_folder, reference):
    model, processor = reference
    (picture,) = images(1)
    docs = [{"image": picture}]
    seen = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        seen.append((list(previous_output), round_idx, previous_round_info))
        if round_idx == 3:
            return None, None, True, previous_output, previous_round_info
        return [doc["image"]], f"Again, after {previous_output[-1]!r}?", False, previous_output, {"round": round_idx}

    settings = {"max_new_tokens": 4, "temperature": 0}
    request = req("generate_until_multi_round", ("First?", settings, to_visual, doc_to_text, 0, "local", "test"))
    (answers,) = adapter_over(model_folder, docs, 1).generate_until_multi_round([request])
    first = infimm_hd.answer(model, processor, picture, "First?", max_new_tokens=4).strip()
    second = infimm_hd.answer(model, processor, picture, f"Again, after {first!r}?", max_new_tokens=4).strip()
    assert answers[:2] == [first, second] and len(answers) == 3
    assert [s[1] for s in seen] == [1, 2, 3] and seen[1][2] == {"round": 1}


# -- settings and bad input ------------------------------------------------------------------------------------------


def test_stop_strings_cut_at_the_earliest_one():
    assert cut_at_stop("yes.\nno", ["\n"]) == "yes."
    assert cut_at_stop("a, b. c", [".", ","]) == "a"  # ',' comes first in the text, though listed second
    assert cut_at_stop("abc", []) == "abc"


def test_generation_settings_follow_the_task():
    greedy, until = generate_settings({"temperature": 0, "until": "</s>", "image_aspect_ratio": "pad"}, 32)
    assert greedy == {"max_new_tokens": 32, "do_sample": False, "num_beams": 1} and until == ["</s>"]
    sampled, _ = generate_settings({"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 5}, 32)
    assert sampled == {"max_new_tokens": 5, "do_sample": True, "num_beams": 1, "temperature": 0.7, "top_p": 0.9}
    with pytest.raises(ValueError, match="repetition_penaltyy"):
        generate_settings({"repetition_penaltyy": 1.1}, 32)


def test_image_placeholders_in_the_context_are_kept_else_images_go_first():
    assert user_content("Q?", 2) == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Q?"}]
    assert user_content("A <image> then B <image>", 2) == [
        {"type": "text", "text": "A"},
        {"type": "image"},
        {"type": "text", "text": "then B"},
        {"type": "image"},
    ]
    with pytest.raises(ValueError, match="1 <image> placeholders for 2 images"):
        user_content("<image> Q?", 2)


def test_bad_model_args_and_visuals_are_named(model_folder):
    with pytest.raises(TypeError, match="conv_template"):
        InfiMMHDLmms(pretrained=str(model_folder), conv_template="vicuna")
    with pytest.raises(ValueError, match="dtype='int8'"):
        InfiMMHDLmms(pretrained=str(model_folder), dtype="int8")
    with pytest.raises(ValueError, match="max_windows='many'"):
        InfiMMHDLmms(pretrained=str(model_folder), max_windows="many")
    adapter = adapter_over(model_folder, [{"video": "clip.mp4"}], 1)
    request = req("generate_until", ("Q?", {}, lambda doc: [doc["video"]], 0, "local", "test"))
    with pytest.raises(ValueError, match="images only.*str.*clip.mp4"):
        adapter.generate_until([request])


# -- lmms-eval itself ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_tasks(model_folder, reference, tmp_path_factory):
    """The local tasks, with answers and labels taken from the references: the first two docs carry the model's own
    answers (and the most likely choice), the last two cannot match, so every reported score is 0.5 by design.
    Returns (task folder, docs, reference answers, reference log-likelihoods per doc)."""
    model, processor = reference
    tasks = write_local_tasks(tmp_path_factory.mktemp("lmms_tasks"), default_docs(4))
    docs = [LocalDoc(**json.loads(line)) for line in (tasks / "data.jsonl").read_text().splitlines()]
    all_lls, answers = [], []
    for i, doc in enumerate(docs):
        with Image.open(tasks / doc.image) as f:
            image = f.convert("RGB")
        question = doc.question + POST_PROMPT
        lls = [reference_loglikelihood(model, processor, image, question, f" {c}")[0] for c in doc.choices]
        first = reference_answer(model, processor, image, question)
        second = reference_answer(model, processor, image, f"You said: {first}. {doc.follow_up}")
        right = i < 2
        doc.answer = first if right else "no model says this"
        doc.second_answer = second if right else "no model says this either"
        doc.label = (max if right else min)(range(len(lls)), key=lls.__getitem__)
        all_lls.append(lls)
        answers.append(first)
    write_local_tasks(tasks, docs)
    return tasks, docs, answers, all_lls


def run_lmms_eval(model_folder, tasks: Path, out: Path, processes: int = 1) -> tuple[Path, str]:
    """`python -m lmms_eval` (or `accelerate launch` of it) -> (its results file, its log)."""
    env = dict(os.environ, HF_HOME=str(out / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("PYTHONPATH", None)  # lmms-eval must find the model through the installed entry point alone
    launcher = [sys.executable, "-m"]
    if processes > 1:
        config = Path(__file__).parent / "helpers" / "accelerate_cpu_ddp.yaml"
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m"]
        env["ACCELERATE_USE_CPU"] = "1"
    command = [*launcher, "lmms_eval", "--model", "infimm_hd", "--model_args", f"pretrained={model_folder}"]
    command += ["--tasks", "infimm_local_vqa,infimm_local_mc,infimm_local_rounds", "--include_path", str(tasks)]
    command += ["--batch_size", "3", "--output_path", str(out / "results"), "--log_samples"]
    run = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=300)
    found = sorted((out / "results").glob("*/*_results.json"))
    assert found, f"lmms-eval wrote no results (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert len(found) == 1
    return found[0], run.stdout + run.stderr


def samples(results_file: Path, task: str) -> list[dict]:
    (path,) = results_file.parent.glob(f"*_samples_{task}.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


@pytest.fixture(scope="module")
def one_process_run(model_folder, local_tasks, tmp_path_factory) -> Path:
    return run_lmms_eval(model_folder, local_tasks[0], tmp_path_factory.mktemp("lmms_run"))[0]


def test_lmms_eval_runs_the_model_on_local_tasks_and_reports_the_expected_scores(local_tasks, one_process_run):
    _, _, answers, lls = local_tasks
    results = json.loads(one_process_run.read_text())["results"]
    assert results["infimm_local_vqa"]["exact_match,none"] == pytest.approx(0.5)
    assert results["infimm_local_mc"]["acc,none"] == pytest.approx(0.5)
    assert results["infimm_local_rounds"]["rounds,none"] == pytest.approx(2.0)
    assert results["infimm_local_rounds"]["second_answer_match,none"] == pytest.approx(0.5)
    assert [s["filtered_resps"] for s in samples(one_process_run, "infimm_local_vqa")] == answers
    for sample, want in zip(samples(one_process_run, "infimm_local_mc"), lls, strict=True):
        assert [float(ll) for ll, _ in sample["filtered_resps"]] == pytest.approx(want, abs=2e-4)


def test_lmms_eval_on_two_processes_gives_the_one_process_answers(model_folder, local_tasks, one_process_run, tmp_path):
    two, log = run_lmms_eval(model_folder, local_tasks[0], tmp_path, processes=2)
    assert "Running on rank 1" in log  # the docs were split over two processes
    assert json.loads(two.read_text())["results"] == json.loads(one_process_run.read_text())["results"]
    for task in ("infimm_local_vqa", "infimm_local_rounds"):
        by_one = [s["filtered_resps"] for s in samples(one_process_run, task)]
        assert [s["filtered_resps"] for s in samples(two, task)] == by_one
    for a, b in zip(samples(two, "infimm_local_mc"), samples(one_process_run, "infimm_local_mc"), strict=True):
        assert [float(x) for x, _ in a["filtered_resps"]] == pytest.approx([float(x) for x, _ in b["filtered_resps"]])
