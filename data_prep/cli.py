"""The command line the `data_prep` converters share: their parser, their common flags, and the build from those flags.

`pairs`, `cot`, `llava` and `rlhf` each turn one input file into shards under `--out`. They take the same
`--input`/`--split` (and, where images are named by path, `--image-root`) and the same output flags, and end the same
way: `shards.build` of the input into `--out`, with the input's path, split and shard size recorded in the manifest's
`arguments`. Keeping those here means the converters cannot drift apart in a flag's default, help or manifest field;
each script adds only its own flags and its sample stream. `synthetic` reads no input and keeps its own flags (a
different order and help that its users know), but takes its parser from here too.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .shards import Sample, Skipped, build, input_fingerprint


def script_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m <module>`: its docstring as the description, line breaks kept."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_input_arguments(parser: Any, input_help: str, *, image_root: bool = False) -> None:
    """`--input` (required), `--image-root` when `image_root` (see `image_root_of`), and `--split`."""
    parser.add_argument("--input", type=Path, required=True, help=input_help)
    if image_root:
        parser.add_argument(
            "--image-root", type=Path, help="folder the image paths are relative to (default: --input's)"
        )
    parser.add_argument("--split", default="train", help="split name; shards are OUT/<split>-%%05d.tar")


def add_output_arguments(parser: Any, shard_size: int = 1000) -> None:
    """The output options every converter shares: `--out` (required), `--shard-size`, `--force`."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (shards + manifest.json)")
    parser.add_argument("--shard-size", type=int, default=shard_size, help="max samples per shard")
    parser.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")


def image_root_of(args: argparse.Namespace) -> Path:
    """The folder relative image paths start from: `--image-root`, else the input's folder; absolute."""
    return (args.image_root or args.input.parent).resolve()


def build_from_args(
    args: argparse.Namespace, *, script: str, samples: Iterable[Sample | Skipped], **arguments: Any
) -> dict[str, Any]:
    """`shards.build` of `samples` (read from `--input`) into `--out`; returns the manifest.

    The manifest's `arguments` are the input's absolute path, `--split`, `--shard-size` and the script's own
    `arguments`; its `inputs` fingerprint `--input`, so an edited input file rebuilds.
    """
    return build(
        args.out,
        script=script,
        arguments={"input": str(args.input.resolve()), "split": args.split, "shard_size": args.shard_size, **arguments},
        inputs=input_fingerprint(args.input),
        samples=samples,
        shard_size=args.shard_size,
        force=args.force,
    )
