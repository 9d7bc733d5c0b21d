"""Inference on images: answers, streaming, image sessions, the CLI commands and pictures.

* `answer`, `answer_batch`, `stream` (`answer.py`): fresh questions, the image encoded on every call.
* `open_image` -> `ImageSession` (`session.py`): encode once, then ask, batch, stream and chat.
* `commands.py`: the `infimm-hd ask` / `infimm-hd chat` subcommands.
"""

from .answer import answer, answer_batch, stream
from .prompts import Turn, chat_messages, render_prompt
from .session import ImageSession, open_image
from .streaming import StreamResult, Timings

__all__ = [
    "ImageSession",
    "StreamResult",
    "Timings",
    "Turn",
    "answer",
    "answer_batch",
    "chat_messages",
    "open_image",
    "render_prompt",
    "stream",
]
