"""Fresh questions about images: `answer`, `answer_batch` and `stream`.

Every call encodes its image(s) from scratch. To ask several questions about one image, open a session instead
(`open_image`), which encodes it once.

>>> import infimm_hd
>>> model, processor = infimm_hd.build_model("tiny")
>>> from PIL import Image
>>> text = infimm_hd.answer(model, processor, Image.new("RGB", (448, 448)), "What is it?", max_new_tokens=4)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..image_processing import ImageInput
from .generation import PreparedPrompt, decode_new_tokens, generation_kwargs, run_generate
from .prompts import HistoryInput, render_prompt
from .streaming import StreamResult
from .vision_context import encode_context


def prepare_fresh(
    model,
    processor,
    images: Sequence[ImageInput],
    prompts: Sequence[str],
    max_windows: int | None = None,
) -> tuple[PreparedPrompt, float, float]:
    """Tokenise prompts (left padded), tile their images (one each) and encode them.

    Returns (prompt, image seconds, vision seconds).
    """
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} questions; pass one image per question")
    if not prompts:
        raise ValueError("no questions given")
    t0 = time.perf_counter()
    inputs = processor(
        text=list(prompts), images=[[img] for img in images], max_windows=max_windows, add_special_tokens=False
    )
    t1 = time.perf_counter()
    context = encode_context(model, inputs["input_ids"], inputs["pixel_values"], inputs["image_grids"])
    t2 = time.perf_counter()
    return PreparedPrompt(inputs["input_ids"], inputs["attention_mask"], context), t1 - t0, t2 - t1


def answer(
    model,
    processor,
    image: ImageInput,
    question: str,
    *,
    system: str | None = None,
    history: HistoryInput = (),
    max_windows: int | None = None,
    **generate_kwargs: Any,
) -> str:
    """The model's answer to `question` about `image` (PIL image, path, encoded bytes, numpy array).

    Greedy with at most 128 new tokens unless `generate_kwargs` say otherwise (`max_new_tokens=`, `do_sample=True`,
    ...). `system` replaces the template's system prompt; `history` holds earlier (question, answer) rounds.
    """
    prompt_text = render_prompt(processor, question, system, history)
    prompt, _, _ = prepare_fresh(model, processor, [image], [prompt_text], max_windows)
    out = run_generate(model, prompt, generation_kwargs(processor, generate_kwargs))
    return decode_new_tokens(processor, out.sequences, prompt.prompt_tokens)[0]


def answer_batch(
    model,
    processor,
    images: Sequence[ImageInput],
    questions: Sequence[str],
    *,
    system: str | None = None,
    max_windows: int | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """One answer per (image, question) pair, from one batched `generate` (left padding; greedy results equal
    one-by-one `answer` calls)."""
    prompts = [render_prompt(processor, q, system) for q in questions]
    prompt, _, _ = prepare_fresh(model, processor, list(images), prompts, max_windows)
    out = run_generate(model, prompt, generation_kwargs(processor, generate_kwargs))
    return decode_new_tokens(processor, out.sequences, prompt.prompt_tokens)


def stream(
    model,
    processor,
    image: ImageInput,
    question: str,
    *,
    system: str | None = None,
    history: HistoryInput = (),
    max_windows: int | None = None,
    **generate_kwargs: Any,
) -> StreamResult:
    """Like `answer`, but yields the answer's text as it is generated; `.timings` holds image, vision and prefill
    seconds, time to first token and decode tokens/s once the loop has ended.

    >>> for piece in stream(model, processor, image, "What is it?"):
    ...     print(piece, end="", flush=True)
    """
    started = time.perf_counter()
    generation = generation_kwargs(processor, generate_kwargs)
    prompt_text = render_prompt(processor, question, system, history)
    prompt, image_s, vision_s = prepare_fresh(model, processor, [image], [prompt_text], max_windows)
    return StreamResult(
        processor,
        lambda streamer, cancel: run_generate(model, prompt, generation, streamer, cancel),
        started=started,
        image_s=image_s,
        vision_s=vision_s,
        prompt_tokens=prompt.prompt_tokens,
    )
