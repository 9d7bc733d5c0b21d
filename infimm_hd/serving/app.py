"""The FastAPI app: `POST /v1/chat/completions` (OpenAI-compatible, streaming), `GET /v1/models`, `GET /health`.

Every refusal is an OpenAI-style error body (`{"error": {"message", "type", "param", "code"}}`) with a 4xx:
400 malformed JSON or unusable content (bad image, limits), 401 missing/wrong API key, 404 unknown route or model,
405 wrong method, 413 body over the limit (checked while reading, before parsing), 422 a field of the wrong type
or value, 429 too many requests held at once. 504 only when a request genuinely ran past its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import BatchConfig, Delta, Failed, Finished, Job, RequestBatcher
from .limits import ServerLimits
from .prepare import RequestError, prepare
from .schemas import ChatCompletionRequest, chunk_body, completion_body, completion_id, error_body, usage

log = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 504: "timeout_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
    type_ = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


class BodySizeLimit:
    """ASGI middleware: reads a request body up to `max_bytes` and answers 413 past it, before any parsing.

    A declared Content-Length over the limit is refused without reading; a chunked body is counted as it arrives.
    The body read is replayed to the app, so nothing downstream reads the socket again.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"request body is over the limit of {self.max_bytes:,} bytes"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(413, too_large, code="body_too_large")(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await error_response(413, too_large, code="body_too_large")(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as a real receive would

        return await self.app(scope, replay, send)


def _validation_error(err: ValidationError) -> JSONResponse:
    """Malformed JSON -> 400; a field of the wrong type or value -> 422 naming the field (first error shown)."""
    first = err.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return error_response(400, f"the request body is not valid JSON: {first['msg']}", code="invalid_json")
    if first["type"] == "model_type" and not first["loc"]:
        return error_response(400, "the request body must be a JSON object", code="invalid_json")
    # A union (content: str | list of parts) reports one error per branch; the deepest is the one that explains.
    first = max(err.errors(include_url=False), key=lambda e: len(e["loc"]))
    param = _param_path(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return error_response(422, f"{param or 'body'}: {message}", param=param, code=first["type"])


def _param_path(loc: tuple) -> str | None:
    """pydantic's location -> a dotted field path, without union branch names (`str`, `list[...]`) and without the
    discriminator tag that repeats the field name (`image_url.image_url`)."""
    parts: list[str] = []
    for segment in map(str, loc):
        if "[" in segment or segment in ("str", "int", "float", "bool", "function-after"):
            continue
        if parts and parts[-1] == segment:
            continue
        parts.append(segment)
    return ".".join(parts) or None


async def _prepend(first: str, rest):
    yield first
    async for item in rest:
        yield item


def create_app(
    model,
    processor,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    model_name: str = "infimm-hd",
    batching: BatchConfig | None = None,
    local_files_root: str | Path | None = None,
) -> FastAPI:
    """Build the app around a loaded model and processor.

    `api_key`: when set, `/v1/*` needs `Authorization: Bearer <key>` (`/health` stays open for probes).
    `local_files_root`: when set, `image_url` may also be a path or `file://` URL inside this folder; otherwise only
    data URLs are accepted. The model runs in one worker thread, fed by the request batcher (`batching`).
    """
    limits = limits or ServerLimits()
    local_root = None if local_files_root is None else Path(local_files_root).resolve()
    if local_root is not None and not local_root.is_dir():
        raise ValueError(f"local_files_root {str(local_root)!r} is not a directory")
    batcher = RequestBatcher(model, processor, batching or BatchConfig())
    context_length = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    pending = 0  # requests admitted and not yet answered (bounded by limits.max_pending)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="infimm-hd", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.limits = limits

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /v1/chat/completions, /v1/models, /health"
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        return error_response(422, f"{param}: {first.get('msg')}", param=param)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")

    def unauthorised(request: Request) -> JSONResponse | None:
        if api_key is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode()):
            return None
        message = "missing API key" if not token else "invalid API key"
        return error_response(
            401, f"{message}: send Authorization: Bearer <key>", code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "pending": pending,
            "queued": batcher.queue_depth,
            "batches_run": batcher.batches_run,
            "rows_run": batcher.rows_run,
            "vision_cache": None
            if batcher.vision_cache is None
            else {
                "images": len(batcher.vision_cache),
                "bytes": batcher.vision_cache.cached_bytes,
                "hits": batcher.vision_cache.hits,
                "misses": batcher.vision_cache.misses,
            },
        }

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "infimm-hd"}

    @app.get("/v1/models")
    async def list_models(request: Request):
        return unauthorised(request) or {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request):
        if (refusal := unauthorised(request)) is not None:
            return refusal
        if name != model_name:
            return error_response(404, f"model {name!r} not found; this server serves {model_name!r}", "model")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        nonlocal pending
        if (refusal := unauthorised(request)) is not None:
            return refusal
        try:
            body = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as err:
            return _validation_error(err)
        if body.model is not None and body.model != model_name:
            return error_response(
                404, f"model {body.model!r} not found; this server serves {model_name!r}", "model", "model_not_found"
            )
        if pending >= limits.max_pending:
            return error_response(
                429, f"the server holds {pending} requests already (limit {limits.max_pending}); retry shortly",
                code="too_many_pending_requests", headers={"Retry-After": "1"},
            )  # fmt: skip
        pending += 1
        release_here = True  # a stream releases its slot when the stream ends instead
        try:
            deadline = time.monotonic() + limits.request_timeout_s
            try:
                prepared = await asyncio.wait_for(
                    asyncio.to_thread(prepare, body, processor, limits, local_root, context_length),
                    limits.request_timeout_s,
                )
            except RequestError as err:
                return error_response(err.status, str(err), err.param, err.code)
            job = batcher.submit(prepared)
            cid = completion_id()
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                events = stream_events(job, cid, include_usage, deadline)
                # Started here, so its `finally` (slot release, row cancel) runs even if the response never iterates
                # it (client gone before the first byte): asyncio closes started async generators when collected.
                first = await events.__anext__()
                release_here = False
                return StreamingResponse(
                    _prepend(first, events),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            return await collect(job, cid, deadline)
        except TimeoutError:
            return error_response(
                504, f"the request ran past the {limits.request_timeout_s:g} s timeout", code="timeout"
            )
        finally:
            if release_here:
                pending -= 1

    async def next_event(job: Job, deadline: float):
        try:
            return await asyncio.wait_for(job.events.get(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            job.cancelled = True
            raise

    async def collect(job: Job, cid: str, deadline: float) -> JSONResponse | dict:
        try:
            while True:
                event = await next_event(job, deadline)
                if isinstance(event, Finished):
                    return completion_body(
                        cid, model_name, event.text, event.finish_reason, event.prompt_tokens, event.completion_tokens
                    )
                if isinstance(event, Failed):
                    return error_response(500, event.message, code="generation_failed")
        finally:
            job.cancelled = True  # no-op when finished; stops the row if this handler was cancelled

    async def stream_events(job: Job, cid: str, include_usage: bool, deadline: float):
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        nonlocal pending
        created = int(time.time())

        def sse(payload: dict) -> str:
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        try:
            yield sse(chunk_body(cid, model_name, created, {"role": "assistant", "content": ""}))
            while True:
                try:
                    event = await next_event(job, deadline)
                except TimeoutError:
                    message = f"the request ran past the {limits.request_timeout_s:g} s timeout"
                    yield sse(error_body(message, "timeout_error", None, "timeout"))
                    break
                if isinstance(event, Delta):
                    yield sse(chunk_body(cid, model_name, created, {"content": event.text}))
                elif isinstance(event, Finished):
                    yield sse(chunk_body(cid, model_name, created, {}, event.finish_reason))
                    if include_usage:
                        counts = usage(event.prompt_tokens, event.completion_tokens)
                        yield sse(chunk_body(cid, model_name, created, {}, None, usage=counts) | {"choices": []})
                    break
                else:
                    yield sse(error_body(event.message, "server_error", None, "generation_failed"))
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True  # client gone or stream over: the worker drops the row
            pending -= 1

    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    return app
