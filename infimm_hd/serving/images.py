"""`image_url` values -> encoded image bytes: data URLs always, local files only when the server allows a root.

Why bytes and a header check here: the body limit already bounds the bytes, and reading only the header (PIL opens
lazily) lets a decompression bomb or a non-image be refused with a clear 400 before any pixel is decoded. Full
decoding (and the processor's own checks, e.g. a truncated file) happens when the request is tokenised.
Remote `http(s)://` URLs are never fetched: a server that fetches arbitrary URLs is an SSRF hole.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..image_processing import ImageTooLargeError, open_image_header


class ImageRequestError(ValueError):
    """An image of the request cannot be used; `param` names where it was (for the error body)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_image"):
        super().__init__(message)
        self.param = param
        self.code = code


def decode_data_url(url: str) -> bytes:
    """`data:image/<type>;base64,<data>` -> bytes.

    >>> decode_data_url("data:image/png;base64,aGk=")
    b'hi'
    """
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageRequestError("data URL has no ',' separating its header from the data", code="invalid_data_url")
    params = header[len("data:") :].split(";")
    media_type = params[0].strip().lower()
    if not media_type.startswith("image/"):
        raise ImageRequestError(
            f"data URL media type is {media_type or 'missing'!r}; expected image/* (e.g. data:image/png;base64,...)",
            code="invalid_data_url",
        )
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise ImageRequestError(
            "data URL is not base64-encoded; expected data:image/...;base64,...", code="invalid_data_url"
        )
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageRequestError(f"data URL holds invalid base64: {err}", code="invalid_base64") from err
    if not data:
        raise ImageRequestError("data URL holds no bytes", code="invalid_data_url")
    return data


def read_local_file(url: str, root: Path | None, max_bytes: int) -> bytes:
    """A `file://` URL or a plain path -> bytes, only inside `root` (after resolving `..` and symlinks)."""
    if root is None:
        raise ImageRequestError(
            "local image files are disabled; send the image as a data URL (data:image/png;base64,...) or start the "
            "server with --allow-local-files DIR",
            code="local_files_disabled",
        )
    raw = unquote(urlparse(url).path) if url.startswith("file://") else url
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = root / path
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ImageRequestError(
            f"image path {raw!r} is outside the allowed root {str(root)!r}", code="path_not_allowed"
        )
    if not resolved.is_file():
        raise ImageRequestError(f"image file {raw!r} does not exist (or is not a file)", code="file_not_found")
    size = resolved.stat().st_size
    if size > max_bytes:
        raise ImageRequestError(
            f"image file {raw!r} is {size:,} bytes, over the limit of {max_bytes:,}", code="too_large"
        )
    return resolved.read_bytes()


def load_image_url(url: str, local_root: Path | None, max_bytes: int) -> bytes:
    """Dispatch on the URL scheme; see the module docstring for what is accepted."""
    lowered = url[:16].lower()
    if lowered.startswith("data:"):
        return decode_data_url(url)
    if lowered.startswith(("http://", "https://")):
        raise ImageRequestError(
            "remote image URLs are not fetched by this server; send the image as a data URL "
            "(data:image/png;base64,...)",
            code="remote_url_not_supported",
        )
    if "://" in url[:16] and not lowered.startswith("file://"):
        raise ImageRequestError(f"unsupported image URL scheme in {url[:32]!r}; send a data URL", code="invalid_url")
    return read_local_file(url, local_root, max_bytes)


def check_image_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Read the format and size from the header only; refuse non-images and images over `max_pixels`.

    Returns (width, height). The image processor's own header check (`open_image_header`), so the server refuses
    exactly what the processor would; PIL's decompression-bomb guard counts as over the limit.
    """
    try:
        image = open_image_header(data, max_pixels)
    except ImageTooLargeError as err:
        raise ImageRequestError(f"{err} (downscale it)", code="image_too_large") from err
    except ValueError as err:
        raise ImageRequestError(str(err), code="invalid_image") from err
    return image.size
