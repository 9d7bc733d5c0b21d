"""`infimm-hd ask` and `infimm-hd chat`: questions about an image from the shell.

    infimm-hd ask --model DIR_OR_ID_OR_PRESET --image photo.jpg "What is written on the sign?"
        [--stream] [--timings] [--json] [--attention-map where.png] [--max-new-tokens N] [--max-windows N]
    infimm-hd chat --model DIR --image photo.jpg      # then type questions; /reset, /quit

Both check the image before loading the model (a missing or unreadable file is exit code 2 with a one-line
message, not a traceback), and both go through the same Python API as notebooks (`infimm_hd.stream`,
`infimm_hd.open_image`), so the shell sees exactly the answers the library gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from PIL import Image

EXIT_USAGE = 2


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a folder written by save_pretrained, a hub id, or a preset: tiny, smollm2-135m"
    )
    parser.add_argument("--image", required=True, help="the image file (JPEG, PNG, WebP, ...)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit in tokens (default 128)")
    parser.add_argument("--max-windows", type=int, default=None, help="window budget (default: the processor's)")
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="default: the checkpoint's")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _read_image(path: str) -> Image.Image:
    """The image, decoded and oriented; ValueError with a clear message if it is missing or not an image."""
    from ..image_processing import load_image

    return load_image(path)


def _load(args: argparse.Namespace):
    from .loading import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device)


def _timings_line(timings) -> str:
    t = timings
    return (
        f"image {t.image_s * 1e3:.0f} ms | vision {t.vision_s * 1e3:.0f} ms | prefill {t.prefill_s * 1e3:.0f} ms "
        f"({t.prompt_tokens - t.reused_prompt_tokens} of {t.prompt_tokens} prompt tokens run) | first token "
        f"{t.time_to_first_token_s * 1e3:.0f} ms | {t.new_tokens} tokens at {t.decode_tokens_per_s:.1f} tokens/s | "
        f"total {t.total_s:.2f} s"
    )


def _image_and_model(args: argparse.Namespace) -> tuple[Image.Image, Any, Any] | int:
    """(image, model, processor) for `ask` / `chat`, or the exit code after a one-line error (nothing is loaded
    before the cheap checks pass)."""
    if args.max_new_tokens < 1:
        return _fail(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        image = _read_image(args.image)
    except ValueError as err:
        return _fail(str(err))
    try:
        model, processor = _load(args)
    except (OSError, ValueError) as err:
        return _fail(f"cannot load the model {args.model!r}: {err}")
    return image, model, processor


# -- ask ------------------------------------------------------------------------------------------------------------
def ask_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infimm-hd ask",
        description="Answer one question about an image.",
        epilog='example: infimm-hd ask --model tiny --image photo.jpg "What is in the picture?" --timings',
    )
    _common_args(parser)
    parser.add_argument("question", help="the question (quote it)")
    parser.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    parser.add_argument("--timings", action="store_true", help="report image, vision, prefill and decode times")
    parser.add_argument("--json", action="store_true", help="print one JSON object (answer, timings, files)")
    parser.add_argument(
        "--attention-map", metavar="OUT.png", default=None, help="save where the answer attended, over the image"
    )
    return parser


def ask_main(argv: list[str] | None = None) -> int:
    args = ask_parser().parse_args(argv)
    loaded = _image_and_model(args)
    if isinstance(loaded, int):
        return loaded
    image, model, processor = loaded

    from .answer import stream

    try:
        result = stream(
            model,
            processor,
            image,
            args.question,
            system=args.system,
            max_windows=args.max_windows,
            max_new_tokens=args.max_new_tokens,
        )
        live = args.stream and not args.json
        for piece in result:
            if live:
                print(piece, end="", flush=True)
    except ValueError as err:  # a question the template or the model cannot take
        return _fail(str(err))
    answer = result.text
    if live:
        print()
    elif not args.json:
        print(answer)

    report: dict[str, Any] = {"answer": answer, "question": args.question, "image": args.image, "model": args.model}
    if args.timings:
        report["timings"] = result.timings.to_dict()
        if not args.json:
            print(_timings_line(result.timings), file=sys.stderr)
    if args.attention_map:
        from .attention_map import answer_attention_map, save_attention_overlay

        try:
            heat = answer_attention_map(  # over the generated ids: re-tokenising the text may split it differently
                model,
                processor,
                image,
                args.question,
                result.answer_ids,
                max_windows=args.max_windows,
                system=args.system,
            )
        except (ValueError, RuntimeError) as err:  # e.g. an empty answer has no tokens to map
            return _fail(f"no attention map: {err}")
        path = save_attention_overlay(image, heat, args.attention_map, title=f"Q: {args.question}  A: {answer}")
        report["attention_map"] = str(path)
        if not args.json:
            print(f"attention map: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0


# -- chat -----------------------------------------------------------------------------------------------------------
CHAT_HELP = "type a question and press Enter; /reset starts a new conversation about the image, /quit (or EOF) exits"


def chat_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infimm-hd chat",
        description=(
            "Interactive, streaming chat about one image: the image is encoded once and the conversation is kept. "
            + CHAT_HELP
            + ". Questions are read line by line from stdin, so it can be piped."
        ),
    )
    _common_args(parser)
    parser.add_argument("--timings", action="store_true", help="after each answer, report its times on stderr")
    return parser


def chat_main(argv: list[str] | None = None) -> int:
    args = chat_parser().parse_args(argv)
    loaded = _image_and_model(args)
    if isinstance(loaded, int):
        return loaded
    image, model, processor = loaded

    from .session import open_image

    session = open_image(model, processor, image, max_windows=args.max_windows, system=args.system)
    interactive = sys.stdin.isatty()
    if interactive:
        rows, cols = session.image_grid
        print(f"image encoded ({rows}x{cols} windows + thumbnail, {session.vision_s:.2f} s). {CHAT_HELP}.")
    while True:
        if interactive:
            print("> ", end="", flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt leaves
            print()
            break
        if not line:  # EOF
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit"):
            break
        if question == "/reset":
            session.reset()
            print("(conversation reset)", flush=True)
            continue
        if question.startswith("/"):
            print(f"unknown command {question.split()[0]!r}; {CHAT_HELP}", file=sys.stderr, flush=True)
            continue
        result = session.chat_stream(question, max_new_tokens=args.max_new_tokens)
        try:
            for piece in result:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # Ctrl-C during an answer stops it; the partial answer stays in the history
            result.close()
            print(" [interrupted]", end="")
        print(flush=True)
        if args.timings:
            print(_timings_line(result.timings), file=sys.stderr, flush=True)
    return 0
