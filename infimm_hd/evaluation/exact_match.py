"""Exact-match VQA evaluation on held-out shards, with the window budget as a knob (thumbnail-only = 0).

The same trained model answers the same questions twice, once seeing only the 448 px thumbnail and once with the
windows, which isolates what the high-resolution windows add (the paper's ablation, in miniature).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..training.data import iterate_records


def normalize_answer(text: str) -> str:
    """Lower-case, collapse spaces, drop surrounding punctuation: `" Seven. "` -> `"seven"`."""
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .,!?;:'\"")


FINAL_ANSWER = re.compile(r"the answer is", re.IGNORECASE)


def final_answer(text: str) -> str:
    """The answer of a chain-of-thought generation: what follows its last "The answer is" (the format every "cot"
    record's assistant turn ends with, `data_prep.cot.format_cot`), or the whole text when there is none.

    >>> final_answer("3 + 5 = 8.\\nThe answer is 8.")
    '8.'
    """
    pieces = FINAL_ANSWER.split(text)
    return pieces[-1].strip().split("\n")[0].strip() if len(pieces) > 1 else text


def score_answer(generated: str, expected: str, task: str) -> bool:
    """Exact match of normalised answers; for "cot" records only the final answer counts, not the thought."""
    if task == "cot":
        generated = final_answer(generated).replace(",", "")
        expected = expected.replace(",", "")
    return normalize_answer(generated) == normalize_answer(expected)


@dataclass
class VQAResult:
    """Accuracy overall and per question type (`record["meta"]["qtype"]`), with the counts behind each."""

    correct: int = 0
    total: int = 0
    by_type: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def type_accuracy(self, qtype: str) -> float:
        correct, total = self.by_type.get(qtype, (0, 0))
        return correct / total if total else float("nan")


def _question_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to (not including) its last assistant turn: what the model is asked."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


@torch.no_grad()
def evaluate_vqa(
    model,
    processor,
    shards: Sequence[str],
    max_windows: int,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    limit: int | None = None,
    tasks: Sequence[str] = ("vqa",),
    keep_examples: int = 0,
) -> VQAResult:
    """Greedy answers to every `tasks` record of `shards` (file order, first `limit`), scored by exact match of the
    normalised answer against `record["answer"]` (for "cot" records, of the final answer after the thought: pass
    a `max_new_tokens` long enough for the thought). `max_windows=0` shows the model only the thumbnails."""
    result = VQAResult()
    model.eval()
    pending: list[Any] = []

    def flush() -> None:
        convs = [_question_only(r.record["messages"]) for r in pending]
        inputs = processor.apply_chat_template(
            convs,
            images=[r.images for r in pending],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            processor_kwargs={"max_windows": max_windows},
        )
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for item, answer in zip(pending, answers, strict=True):
            ok = score_answer(answer, item.record["answer"], item.record["task"])
            qtype = item.record.get("meta", {}).get("qtype", "all")
            result.correct += ok
            result.total += 1
            result.by_type[qtype][0] += ok
            result.by_type[qtype][1] += 1
            if len(result.examples) < keep_examples:
                result.examples.append({"id": item.record["id"], "answer": answer, "expected": item.record["answer"]})
        pending.clear()

    for item in iterate_records(shards, processor.image_processor):
        if item.record["task"] not in tasks:
            continue
        if limit is not None and result.total + len(pending) >= limit:
            break
        pending.append(item)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return result
