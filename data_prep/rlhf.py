"""RLHF data -> shards: prompts for rule-reward RL ("prompt" records) and preference pairs ("preference" records).

    python -m data_prep.rlhf prompts --input prompts.jsonl --out data/rl-prompts
    python -m data_prep.rlhf preferences --input pairs.jsonl --out data/prefs --image-root data/images

`prompts`: lines {"prompt", "image"?, "answer"?} -> user = [image?, prompt], no assistant turn, `answer` = the
reference answer (null when absent) that a rule reward compares against.
`preferences`: lines {"prompt", "image"?, "chosen", "rejected"} -> `messages` = user turn + the chosen assistant
turn, `rejected` = [the rejected assistant turn], `answer` = the line's "answer" if any.

The image (a path relative to --image-root, default the input's folder) goes where the prompt has `<image>`, else
first. Lines with missing fields, identical chosen/rejected or a missing/broken image are skipped and counted by
reason in `OUT/manifest.json`. Re-running with the same arguments does nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .cli import add_input_arguments, add_output_arguments, build_from_args, image_root_of, script_parser
from .llava import IMAGE_TOKEN, split_image_tokens
from .shards import (
    Sample,
    Skipped,
    SkipSample,
    image_part,
    jsonl_samples,
    make_record,
    message,
    resolve_path,
    text_part,
)

KINDS = {"prompts": "prompt", "preferences": "preference"}  # subcommand -> task


def _string(row: dict[str, Any], field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise SkipSample("missing_field", f"no string {field!r}")
    return value


def user_message(prompt: str, has_image: bool) -> dict[str, Any]:
    """The user turn: the image part at `<image>`, or first when the prompt has no token."""
    if IMAGE_TOKEN in prompt:
        if not has_image or prompt.count(IMAGE_TOKEN) > 1:
            raise SkipSample("image_token_mismatch", f"{prompt.count(IMAGE_TOKEN)} tokens, image: {has_image}")
        return message("user", *split_image_tokens(prompt))
    return message("user", *([image_part()] if has_image else []), text_part(prompt))


def rlhf_record(row: dict[str, Any], sample_id: str, task: str) -> dict[str, Any]:
    """One JSONL row -> a "prompt" or "preference" record (`SkipSample` when the row does not fit)."""
    user = user_message(_string(row, "prompt"), bool(row.get("image")))
    answer = row.get("answer")
    answer = None if answer is None else str(answer)
    meta = {"source": "data_prep.rlhf", "image": row.get("image")}
    if task == "prompt":
        return make_record(sample_id, task, [user], answer=answer, meta=meta)
    chosen, rejected = _string(row, "chosen"), _string(row, "rejected")
    if chosen.strip() == rejected.strip():
        raise SkipSample("identical_pair", "chosen == rejected")
    messages = [user, message("assistant", text_part(chosen))]
    return make_record(
        sample_id, task, messages, answer=answer, rejected=[message("assistant", text_part(rejected))], meta=meta
    )


def rlhf_samples(path: Path, task: str, image_root: Path, split: str = "train") -> Iterator[Sample | Skipped]:
    """The `task` samples of a JSONL file, in line order."""

    def convert(row: dict[str, Any], sample_id: str, line: int) -> Sample:
        image = row.get("image")
        if image is not None and not isinstance(image, str):
            raise SkipSample("bad_row", "image must be one path")
        record = rlhf_record(row, sample_id, task)
        return Sample(record, [resolve_path(image, image_root)] if image else [], split)

    return jsonl_samples(path, convert)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = script_parser("data_prep.rlhf", __doc__)
    commands = parser.add_subparsers(dest="kind", required=True)
    for kind, task in KINDS.items():
        sub = commands.add_parser(kind, help=f'JSONL -> "{task}" records', description=__doc__)
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        add_input_arguments(sub, "JSONL, one item per line", image_root=True)
        add_output_arguments(sub)
    args = parser.parse_args(argv)
    image_root = image_root_of(args)
    samples = rlhf_samples(args.input, KINDS[args.kind], image_root, args.split)
    return build_from_args(args, script="data_prep.rlhf", samples=samples, kind=args.kind, image_root=str(image_root))


if __name__ == "__main__":
    main()
