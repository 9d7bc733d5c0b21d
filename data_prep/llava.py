"""LLaVA-format conversations (LLaVA-Instruct-150K, LLaVA-665k, ...) -> "vqa" shards for instruction tuning.

    python -m data_prep.llava --input llava_v1_5_mix665k.json --image-root data/llava_images --out data/llava
    python -m data_prep.llava --input small.jsonl --out data/llava-val --split val

The input is a JSON list (or JSONL) of items {"id", "image"?: path or list of paths relative to --image-root,
"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}, any number of turns. Each `<image>` in a
human turn becomes an image part at that position (the text before and after stays, minus the whitespace next to
the token); an item with an image but no `<image>` token gets its image parts first in the first user turn (the
LLaVA convention); an item without "image" is a text-only record. `answer` is the last assistant turn. Items whose
images are missing or broken, or whose token count does not match their images, are skipped and counted by reason
in `OUT/manifest.json`. Re-running with the same arguments does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infimm_hd.training.sample_format import count_image_parts

from .cli import add_input_arguments, add_output_arguments, build_from_args, image_root_of, script_parser
from .shards import (
    Sample,
    Skipped,
    SkipSample,
    image_part,
    make_record,
    resolve_path,
    text_part,
)

IMAGE_TOKEN = "<image>"
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def split_image_tokens(text: str) -> list[dict[str, Any]]:
    """Text with `<image>` tokens -> content parts, dropping the whitespace that separates a token from its text.

    >>> split_image_tokens("<image>\\nWhat is this?")
    [{'type': 'image'}, {'type': 'text', 'text': 'What is this?'}]
    >>> [p.get("text", "IMG") for p in split_image_tokens("Compare <image> and <image>.")]
    ['Compare', 'IMG', 'and', 'IMG', '.']
    """
    pieces = text.split(IMAGE_TOKEN)
    parts: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i > 0:
            parts.append(image_part())
            piece = piece.lstrip()
        if i < len(pieces) - 1:
            piece = piece.rstrip()
        if piece:
            parts.append(text_part(piece))
    return parts


def conversation_messages(conversations: Any, num_images: int) -> list[dict[str, Any]]:
    """LLaVA turns -> chat messages with exactly `num_images` image parts; `SkipSample` says why not."""
    if not isinstance(conversations, list) or not conversations:
        raise SkipSample("bad_conversation", "no conversations")
    messages = []
    for turn in conversations:
        role = SPEAKERS.get(turn.get("from")) if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str):
            raise SkipSample("bad_conversation", f"bad turn {str(turn)[:80]!r}")
        if role != "user" and IMAGE_TOKEN in value:
            raise SkipSample("bad_conversation", f"{IMAGE_TOKEN} in a {turn['from']!r} turn")
        messages.append({"role": role, "content": split_image_tokens(value) if role == "user" else [text_part(value)]})
    tokens = count_image_parts(messages)
    if tokens == 0 and num_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise SkipSample("bad_conversation", "images but no user turn")
        first_user["content"][:0] = [image_part() for _ in range(num_images)]
    elif tokens != num_images:
        raise SkipSample("image_token_mismatch", f"{tokens} {IMAGE_TOKEN} tokens for {num_images} images")
    return messages


def read_items(path: Path) -> list[Any]:
    """A JSON list, or JSONL with one item per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA items, got {type(items).__name__}")
    return items


def llava_samples(path: Path, image_root: Path, split: str = "train") -> Iterator[Sample | Skipped]:
    """The "vqa" samples of a LLaVA file, in input order (the file is read on the first `next`, so an up-to-date
    output never parses it)."""
    for n, item in enumerate(read_items(path)):
        if not isinstance(item, dict):
            yield Skipped(f"item{n}", "bad_row", "not a JSON object")
            continue
        sample_id = str(item.get("id", f"item{n}"))
        images = item.get("image") or []
        images = [images] if isinstance(images, str) else images
        try:
            if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
                raise SkipSample("bad_row", f"image must be a path or a list of paths, got {images!r}")
            messages = conversation_messages(item.get("conversations"), len(images))
        except SkipSample as e:
            yield Skipped(sample_id, e.reason, e.detail)
            continue
        assistant = [m for m in messages if m["role"] == "assistant"]
        answer = assistant[-1]["content"][0]["text"] if assistant else None
        meta = {"source": "data_prep.llava", "item": n, "images": images, "turns": len(messages)}
        record = make_record(sample_id, "vqa", messages, answer=answer, meta=meta)
        yield Sample(record, [resolve_path(p, image_root) for p in images], split)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser("data_prep.llava", __doc__)
    add_input_arguments(parser, "LLaVA JSON list or JSONL", image_root=True)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    image_root = image_root_of(args)
    samples = llava_samples(args.input, image_root, args.split)
    return build_from_args(args, script="data_prep.llava", samples=samples, image_root=str(image_root))


if __name__ == "__main__":
    main()
