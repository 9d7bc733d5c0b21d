"""A validated chat request -> `PreparedRequest`: images fetched and checked, prompt rendered, tokenised, tiled.

Runs in a worker thread (decoding and tiling are CPU work). The prompt is rendered by
`processor.apply_chat_template(..., add_generation_prompt=True)` and tokenised with the images by `processor(...)`,
the same calls as the Python API, so the server's greedy answer equals `infimm_hd.answer`'s for the same question.
Every problem found here is a `RequestError` (a 4xx for the client), never an exception that would become a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..processing import END_OF_CHUNK_TOKEN, IMAGE_TOKEN
from .batcher import PreparedRequest
from .images import ImageRequestError, check_image_header, load_image_url
from .limits import ServerLimits
from .schemas import ChatCompletionRequest, ImagePart
from .vision_cache import image_key


class RequestError(ValueError):
    """A request the server will not run; becomes an OpenAI-style error body with this status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def to_messages(
    request: ChatCompletionRequest, limits: ServerLimits, local_root: Path | None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """OpenAI messages -> the processor's message format (empty image parts) and the image bytes, in order."""
    messages, images = [], []
    count = sum(isinstance(p, ImagePart) for m in request.messages if isinstance(m.content, list) for p in m.content)
    if count > limits.max_images_per_request:
        raise RequestError(
            f"the request has {count} images; this server accepts at most {limits.max_images_per_request} per request",
            param="messages",
            code="too_many_images",
        )
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        parts = [message.content] if isinstance(message.content, str) else message.content
        content: list[dict[str, Any]] = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content" if isinstance(message.content, str) else f"messages[{i}].content[{j}]"
            if isinstance(part, ImagePart):
                try:
                    data = load_image_url(part.image_url.url, local_root, limits.max_body_bytes)
                    check_image_header(data, limits.max_image_pixels)
                except ImageRequestError as err:
                    raise RequestError(str(err), param=f"{where}.image_url.url", code=err.code) from err
                images.append(data)
                content.append({"type": "image"})
                continue
            text = part if isinstance(part, str) else part.text
            for token in (IMAGE_TOKEN, END_OF_CHUNK_TOKEN):
                if token in text:
                    raise RequestError(
                        f"text may not contain the special token {token!r}; send images as image_url parts",
                        param=where,
                        code="special_token_in_text",
                    )
            content.append({"type": "text", "text": text})
        # Text-only turns go as plain strings: the form every chat template renders.
        if all(c["type"] == "text" for c in content):
            messages.append({"role": role, "content": "".join(c["text"] for c in content)})
        else:
            messages.append({"role": role, "content": content})
    return messages, images


def prepare(
    request: ChatCompletionRequest,
    processor,
    limits: ServerLimits,
    local_root: Path | None,
    context_length: int | None,
) -> PreparedRequest:
    """Check the request against the limits and build its model inputs (see the module docstring)."""
    max_tokens = request.requested_max_tokens()
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    elif max_tokens > limits.max_tokens_ceiling:
        name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise RequestError(
            f"{name} is {max_tokens}; this server allows at most {limits.max_tokens_ceiling}",
            param=name,
            code="max_tokens_too_large",
        )
    messages, images = to_messages(request, limits, local_root)
    try:
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        # add_special_tokens=False: the template wrote BOS and turn markers already (as the Python API tokenises).
        inputs = processor(text=[prompt], images=[images] if images else None, add_special_tokens=False)
    except ValueError as err:  # the image processor's decode errors (truncated, corrupt) and template errors
        raise RequestError(
            f"cannot use the request's content: {err}", param="messages", code="invalid_content"
        ) from err
    input_ids = inputs["input_ids"][0]  # (T,) a single prompt has no padding
    prompt_tokens = int(input_ids.numel())
    if prompt_tokens > limits.max_prompt_tokens:
        raise RequestError(
            f"the prompt is {prompt_tokens} tokens; this server allows at most {limits.max_prompt_tokens}",
            param="messages",
            code="context_length_exceeded",
        )
    if context_length is not None and prompt_tokens + max_tokens > context_length:
        raise RequestError(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's context of "
            f"{context_length} tokens; shorten the conversation or lower max_tokens",
            param="messages",
            code="context_length_exceeded",
        )
    return PreparedRequest(
        input_ids=input_ids,
        pixel_values=inputs.get("pixel_values"),
        image_grids=inputs.get("image_grids"),
        max_new_tokens=max_tokens,
        temperature=request.temperature or 0.0,
        top_p=1.0 if request.top_p is None else request.top_p,
        image_keys=tuple(image_key(data) for data in images),
    )
