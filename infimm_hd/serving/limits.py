"""What one request may ask of the server: a small typed config, checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """Per-request limits of the HTTP server; every one is enforced with a 4xx that names it.

    Why each exists: the body limit bounds what is read before parsing; the pixel and image-count limits bound the
    decode and the vision work one request can cause; prompt tokens and the `max_tokens` ceiling bound the text
    work; `max_pending` bounds the requests held at once (each holds its tiled images until its batch runs, up to
    images x (windows + 1) x 2.4 MB), beyond which the server answers 429; the timeout ends a request that waited
    or ran too long (504).
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    max_images_per_request: int = 4
    max_prompt_tokens: int = 4096
    max_tokens_ceiling: int = 1024
    default_max_tokens: int = 256
    request_timeout_s: float = 120.0
    max_pending: int = 128

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"ServerLimits.{name} must be positive, got {value!r}")
        if self.default_max_tokens > self.max_tokens_ceiling:
            raise ValueError(
                f"ServerLimits.default_max_tokens ({self.default_max_tokens}) is over max_tokens_ceiling "
                f"({self.max_tokens_ceiling})"
            )
