"""What one webdataset sample holds: the contract between `data_prep` (the writer) and the streaming loader.

A sample is the set of files sharing one key in a tar shard:

    <key>.json                     the record below, UTF-8 JSON
    <key>.<i>.png | .jpg | .jpeg | .webp
                                   image i (0-based), i = order of the image parts in `messages`

`key` matches `KEY_PATTERN` (webdataset splits a file name at its first dot, so keys hold no dots). The record is

    {
      "id": str,                    unique within a dataset (the key is derived from it)
      "task": one of TASKS,
      "messages": [...],            the standard chat format: {"role": "system"|"user"|"assistant",
                                    "content": [{"type": "text", "text": str} | {"type": "image"}, ...]};
                                    one image part per stored image, in order
      "answer": str | null,         the reference answer (evaluation, rule rewards); for "cot" the final answer only
      "rejected": [...] | null,     "preference" only: the rejected assistant turn(s); `messages` ends with the chosen
      "meta": {...}                 free-form provenance (source, question type, tiling grid, ...)
    }

Tasks: "caption" (image-text pairs, stage 1), "vqa" (instruction / VQA conversations), "cot" (chain-of-thought
answers: the assistant text is the thought followed by the answer, for Masked Thought), "prompt" (RLHF prompts:
no assistant turn, `answer` holds the reference), "preference" (reward-model pairs).
"""

from __future__ import annotations

import re
from typing import Any

TASKS = ("caption", "vqa", "cot", "prompt", "preference")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_IMAGE_KEY = re.compile(r"^(\d+)\.(png|jpg|jpeg|webp)$")
ROLES = ("system", "user", "assistant")


def image_keys(sample: dict[str, Any]) -> list[str]:
    """The image entries of a decoded-or-raw webdataset sample dict, in image order (`0.png`, `1.jpg`, ...).

    >>> image_keys({"__key__": "a", "json": b"{}", "1.png": b"", "0.jpg": b""})
    ['0.jpg', '1.png']
    """
    found = []
    for name in sample:
        match = _IMAGE_KEY.match(name)
        if match:
            found.append((int(match.group(1)), name))
    found.sort()
    indices = [i for i, _ in found]
    if indices != list(range(len(indices))):
        raise ValueError(f"image entries must be numbered 0..n-1 without gaps, got {[n for _, n in found]}")
    return [name for _, name in found]


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    """Number of `{"type": "image"}` parts in a conversation."""
    return sum(
        1
        for message in messages
        for part in (message["content"] if isinstance(message["content"], list) else [])
        if part.get("type") == "image"
    )


def validate_record(record: dict[str, Any], num_images: int | None = None) -> None:
    """Raise `ValueError` naming the first problem of a record (and, given `num_images`, of its image count)."""
    for field in ("id", "task", "messages"):
        if field not in record:
            raise ValueError(f"record is missing the field {field!r}")
    if record["task"] not in TASKS:
        raise ValueError(f"record {record['id']!r}: unknown task {record['task']!r}; expected one of {TASKS}")
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"record {record['id']!r}: messages must be a non-empty list")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise ValueError(f"record {record['id']!r}: message {i} has role {message.get('role')!r}")
        content = message.get("content")
        if not isinstance(content, list) or not all(
            isinstance(p, dict) and p.get("type") in ("text", "image") for p in content
        ):
            raise ValueError(f"record {record['id']!r}: message {i} content must be a list of text/image parts")
    has_assistant = any(m["role"] == "assistant" for m in messages)
    if record["task"] == "prompt" and has_assistant:
        raise ValueError(f"record {record['id']!r}: a 'prompt' record holds no assistant turn")
    if record["task"] != "prompt" and not has_assistant:
        raise ValueError(f"record {record['id']!r}: a {record['task']!r} record needs an assistant turn")
    if record["task"] == "preference" and not record.get("rejected"):
        raise ValueError(f"record {record['id']!r}: a 'preference' record needs 'rejected'")
    if num_images is not None and count_image_parts(messages) != num_images:
        raise ValueError(
            f"record {record['id']!r}: {count_image_parts(messages)} image parts in messages but {num_images} images"
        )
