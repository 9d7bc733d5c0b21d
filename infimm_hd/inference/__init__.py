"""Inference on images: answers, streaming, image sessions, the CLI commands and pictures.

* `answer`, `answer_batch`, `stream` (`answer.py`): fresh questions, the image encoded on every call.
* `open_image` -> `ImageSession` (`session.py`): encode once, then ask, batch, stream and chat.
* `commands.py`: the `infimm-hd ask` / `infimm-hd chat` subcommands (`loading.py`: `--model` presets and folders).
* `attention_map.py`, `tile_picture.py`: where an answer looked, and the tiling grid, as PNG pictures (imported on
  use, not here).
* Inside: `prompts.py` (every entry point formats questions through the chat template), `vision_context.py` (ViT +
  every block's k/v, eagerly), `prefix_cache.py` (reused text KV cache), `generation.py`, `streaming.py`.
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
