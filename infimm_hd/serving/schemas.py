"""Request and response bodies of `/v1/chat/completions` in OpenAI's shapes (pydantic, strict types).

Strict: a JSON string is not silently taken for a number (`"max_tokens": "5"` is a 422 naming the field), floats
reject NaN/Infinity. Unknown fields are ignored, as OpenAI clients send optional ones (`user`, `logprobs: false`);
the few whose non-default value this server cannot honour (`n > 1`, `stop`, `logprobs`, `tools`) are refused rather
than silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(strict=True, extra="ignore")


class ImageURL(BaseModel):
    model_config = _STRICT
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None  # accepted for compatibility; tiling decides the detail


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = _STRICT
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = _STRICT
    # "developer" is OpenAI's newer name for "system"; it is rendered as a system turn.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    @field_validator("content")
    @classmethod
    def _not_empty(cls, content: str | list) -> str | list:
        if (isinstance(content, str) and not content.strip()) or (isinstance(content, list) and not content):
            raise ValueError("message content is empty; send text and/or image_url parts")
        return content

    @model_validator(mode="after")
    def _images_from_the_user(self) -> ChatMessage:
        images = isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)
        if images and self.role != "user":
            raise ValueError(f"image_url parts are accepted in user messages only, not in {self.role} messages")
        return self


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat.completions request this server honours (see the module docstring)."""

    model_config = _STRICT
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    # Omitted or 0: greedy decoding (deterministic, equal to `infimm_hd.answer`); > 0: sampling.
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    tools: list | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"n={n}: this server returns one choice per request (n=1)")
        return n

    @field_validator("stop", "logprobs", "tools")
    @classmethod
    def _unsupported(cls, value, info):
        if value not in (None, False, [], ""):
            raise ValueError(f"{info.field_name} is not supported by this server; leave it out")
        return value

    @model_validator(mode="after")
    def _last_turn(self) -> ChatCompletionRequest:
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message is an assistant turn; end with a user message to get an answer")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(cid: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int):
    """A non-streamed `chat.completion` object."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_body(cid: str, model: str, created: int, delta: dict, finish_reason: str | None = None, **extra):
    """One `chat.completion.chunk` of a stream (`delta` may be empty on the final chunk)."""
    choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    } | extra
