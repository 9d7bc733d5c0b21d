"""`infimm-hd serve`: load a model and run the OpenAI-compatible server under uvicorn.

    infimm-hd serve --model tiny                         # random tiny preset (tests, demos)
    infimm-hd serve --model smollm2-135m --port 8000     # the real SmolLM2-135M preset, offline
    infimm-hd serve --model ./my-checkpoint --api-key "$KEY" --max-batch-size 8

Binds to 127.0.0.1 unless `--host` says otherwise: exposing a model server is a decision, not a default.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..inference.loading import PRESETS, load_model
from .batcher import BatchConfig
from .limits import ServerLimits

API_KEY_ENV = "INFIMM_HD_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    d = ServerLimits()
    p = argparse.ArgumentParser(
        prog="infimm-hd serve",
        description="OpenAI-compatible HTTP server: POST /v1/chat/completions (image_url data URLs, streaming), "
        "GET /v1/models, GET /health.",
    )
    p.add_argument("--model", required=True, help=f"a saved folder, a Hub id, or a preset ({', '.join(PRESETS)})")
    p.add_argument("--served-model-name", help="the `model` name clients send and /v1/models lists (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument(
        "--api-key", default=None, help=f"require `Authorization: Bearer KEY` on /v1/* (default: ${API_KEY_ENV})"
    )
    p.add_argument("--allow-local-files", metavar="DIR", default=None, help="accept image paths / file:// inside DIR")
    g = p.add_argument_group("limits (each refusal is a 4xx naming the limit)")
    g.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    g.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    g.add_argument("--max-images-per-request", type=int, default=d.max_images_per_request)
    g.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
    g.add_argument("--max-tokens-ceiling", type=int, default=d.max_tokens_ceiling, help="largest max_tokens accepted")
    g.add_argument(
        "--default-max-tokens",
        type=int,
        default=None,
        help=f"when a request gives none (default {d.default_max_tokens}, or the ceiling when lower)",
    )
    g.add_argument("--request-timeout", type=float, default=d.request_timeout_s, help="seconds, queue wait included")
    g.add_argument("--max-pending", type=int, default=d.max_pending, help="requests held at once before 429")
    b = p.add_argument_group("batching")
    b.add_argument("--max-batch-size", type=int, default=BatchConfig().max_batch_size, help="1 = one at a time")
    b.add_argument("--batch-wait-ms", type=float, default=BatchConfig().batch_wait_ms)
    b.add_argument(
        "--vision-cache-mb",
        type=float,
        default=BatchConfig().vision_cache_mb,
        help="vision-tower outputs of recent images, so a resent image skips the ViT (0: off)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        limits = ServerLimits(
            max_body_bytes=args.max_body_bytes,
            max_image_pixels=args.max_image_pixels,
            max_images_per_request=args.max_images_per_request,
            max_prompt_tokens=args.max_prompt_tokens,
            max_tokens_ceiling=args.max_tokens_ceiling,
            default_max_tokens=args.default_max_tokens or min(ServerLimits.default_max_tokens, args.max_tokens_ceiling),
            request_timeout_s=args.request_timeout,
            max_pending=args.max_pending,
        )
        batching = BatchConfig(
            max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms, vision_cache_mb=args.vision_cache_mb
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from .app import create_app

    try:
        model, processor = load_model(args.model, device=args.device)
        app = create_app(
            model,
            processor,
            limits,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            model_name=args.served_model_name or args.model,
            batching=batching,
            local_files_root=args.allow_local_files,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"infimm-hd: serving {args.model!r} on http://{args.host}:{args.port}/v1", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
