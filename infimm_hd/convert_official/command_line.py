"""`convert-official SRC DST`: the converter's command line (`infimm-hd convert-official` and `python -m`).

Parses the arguments, runs `convert`, prints its report, and turns the errors a rejected checkpoint or path raises
into exit status 1 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .end_to_end import convert


def main(argv: list[str] | None = None) -> int:
    """`convert-official SRC DST`: convert the official checkpoint and print what was converted. Returns the exit
    status (0 on success, 1 when the checkpoint or paths are rejected)."""
    parser = argparse.ArgumentParser(
        prog="convert-official",
        description="Convert the official InfiMM-HD checkpoint (Infi-MM/infimm-hd layout: config.json + "
        "pytorch_model.bin or shards, tokenizer files optional; or a single .bin) into an "
        "InfiMMHDForConditionalGeneration folder with safetensors weights.",
    )
    parser.add_argument("src", type=Path, help="official checkpoint folder, or a single pytorch_model.bin")
    parser.add_argument("dst", type=Path, help="output folder (created; must be empty)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="official config.json to use (default: SRC/config.json, else inferred from the tensor shapes)",
    )
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text()) if args.config is not None else None
        report = convert(args.src, args.dst, config=config)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError) as err:
        print(f"convert-official: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.src} -> {args.dst}")
    print(report.summary())
    return 0
