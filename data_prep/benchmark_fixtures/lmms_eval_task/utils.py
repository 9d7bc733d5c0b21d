"""Functions of the local lmms-eval tasks that `data_prep.benchmark_fixtures.lmms_eval_tasks` writes.

lmms-eval imports this file by path (`!function utils.<name>` in the task YAMLs beside it), so it imports nothing
from this repository: copy the folder anywhere and it still runs. A doc is one line of `data.jsonl`:
{"id", "image" (a path relative to the task folder), "question", "answer", "choices", "label", "follow_up",
"second_answer"}.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    with Image.open(HERE / doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_choice(doc):
    return list(doc["choices"])


def doc_to_label(doc):
    return int(doc["label"])


def rounds_doc_to_text(
    doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None
):
    """Round 0: the question. Round 1: the follow-up quoting the first answer. Round 2: the end signal.
    After round 0 the return value is (visuals, context, finished, answers so far, round info)."""
    if round_idx is None:
        return doc_to_text(doc, lmms_eval_specific_kwargs)
    answers = list(previous_output or [])
    if round_idx == 1:
        context = f"You said: {answers[-1]}. {doc['follow_up']}"
        return doc_to_visual(doc), context, False, answers, {"asked": context}
    return None, None, True, answers, previous_round_info


def rounds_process_results(doc, results):
    """`results[0]` is the list of the doc's answers, one per round; scored: the last answer equals `second_answer`."""
    answers = list(results[0])
    return {"rounds": float(len(answers)), "second_answer_match": float(answers[-1] == doc["second_answer"])}
