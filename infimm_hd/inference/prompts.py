"""Questions -> chat messages -> prompt text: the one place every entry point formats a question.

Why one place: `answer`, sessions, the CLI and the HTTP server must send the model identical token sequences for the
same question, or a session answer would not equal a fresh one and the server would not match the notebook. Prompts
are always rendered by `processor.apply_chat_template` (the LLM's own template when it has one, else the paper's
Vicuna template); the image part comes first in the first user turn, so `<image>` appears exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One finished question/answer round of a conversation about an image."""

    question: str
    answer: str


HistoryInput = Sequence[Turn | tuple[str, str]]


def as_turns(history: HistoryInput) -> list[Turn]:
    """Earlier rounds as `Turn`s (accepts `(question, answer)` pairs)."""
    return [turn if isinstance(turn, Turn) else Turn(*turn) for turn in history]


def chat_messages(question: str, system: str | None = None, history: HistoryInput = ()) -> list[dict[str, Any]]:
    """The standard message list for `question` after `history`, with one empty image part in the first user turn.

    >>> chat_messages("What colour?", history=[Turn("What is it?", "A cat.")])[0]["content"][0]
    {'type': 'image'}
    """
    if not isinstance(question, str) or not question.strip():
        raise ValueError("the question is empty: pass some text to ask about the image")
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    turns = as_turns(history)
    questions = [turn.question for turn in turns] + [question]
    answers = [turn.answer for turn in turns]
    for i, text in enumerate(questions):
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if i == 0:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user", "content": content})
        if i < len(answers):
            messages.append({"role": "assistant", "content": answers[i]})
    return messages


def render_prompt(processor, question: str, system: str | None = None, history: HistoryInput = ()) -> str:
    """Prompt text (with one `<image>`) ending in the assistant's generation prompt."""
    return processor.apply_chat_template(chat_messages(question, system, history), add_generation_prompt=True)
