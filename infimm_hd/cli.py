"""`infimm-hd` command line: one subcommand per job, each with its own `--help`.

infimm-hd ask --model DIR --image PATH "question"   answer a question about an image
infimm-hd chat --model DIR --image PATH            interactive chat about one image (streaming)
infimm-hd serve --model DIR                        OpenAI-compatible HTTP server on 127.0.0.1
infimm-hd show-tiles IMAGE -o tiles.png            the tiling grid drawn over an image
infimm-hd demo [--quick]                           the embedded default run (offline, CPU)
infimm-hd convert-official SRC DST             the published InfiMM-HD checkpoint -> this package's format
infimm-hd plan WIDTH HEIGHT [--max-windows 9]  the tiling plan of an image size, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys


def _plan(argv: list[str]) -> int:
    from .hires import plan_tiles

    parser = argparse.ArgumentParser(prog="infimm-hd plan", description="Print the tiling plan of an image size.")
    parser.add_argument("width", type=int)
    parser.add_argument("height", type=int)
    parser.add_argument("--window-size", type=int, default=448)
    parser.add_argument("--max-windows", type=int, default=9)
    parser.add_argument("--tokens-per-crop", type=int, default=1025, help="to report cross-attention keys")
    args = parser.parse_args(argv)
    try:
        plan = plan_tiles(args.width, args.height, window_size=args.window_size, max_windows=args.max_windows)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = plan.to_dict() | {
        "num_windows": plan.num_windows,
        "resized_size": list(plan.resized_size),
        "cross_attention_keys": plan.cross_attention_keys(args.tokens_per_crop),
    }
    print(json.dumps(report))
    return 0


def _demo(argv: list[str]) -> int:
    from .demo import main as demo_main

    demo_main(argv)
    return 0


def _convert(argv: list[str]) -> int:
    from .convert_official import main as convert_main

    return convert_main(argv)


# name -> (handler, one-line help). Handlers import their module only when run, so `infimm-hd --help` stays fast and
# a subcommand whose extra (serve, train) is not installed fails only when used, with a message naming the extra.
def _lazy(module: str, function: str = "main"):
    def run(argv: list[str]) -> int:
        import importlib

        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            print(
                f"error: {err}. Install the extra this command needs, e.g. pip install 'infimm-hd[serve]'",
                file=sys.stderr,
            )
            return 2
        return int(getattr(mod, function)(argv) or 0)

    return run


COMMANDS = {
    "ask": (
        _lazy("infimm_hd.inference.commands", "ask_main"),
        "answer a question about an image (optional attention map)",
    ),
    "chat": (_lazy("infimm_hd.inference.commands", "chat_main"), "interactive, streaming chat about one image"),
    "serve": (_lazy("infimm_hd.serving.cli"), "OpenAI-compatible HTTP server (/v1/chat/completions)"),
    "show-tiles": (_lazy("infimm_hd.inference.tile_picture"), "draw the thumbnail + window grid over an image (PNG)"),
    "eval": (_lazy("infimm_hd.evaluation.command"), "score a model on public benchmarks (official metrics, resumable)"),
    "demo": (_demo, "run the embedded default (offline, CPU)"),
    "convert-official": (_convert, "convert the published InfiMM-HD checkpoint (legacy .bin, safe loading)"),
    "plan": (_plan, "print the tiling plan of an image size"),
    "plan-train": (_lazy("infimm_hd.planning.command"), "per-GPU memory, FLOPs and step time of a training stage"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [__doc__.strip(), "", "commands:"] + [f"  {name:<18} {text}" for name, (_, text) in COMMANDS.items()]
        print("\n".join(lines))
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    command, _ = COMMANDS[argv[0]]
    return command(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
