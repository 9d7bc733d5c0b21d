"""Streaming answers: text pieces as they are generated, plus where the time went.

Built on transformers' own streamer machinery: `TextIteratorStreamer` (the standard way to stream `generate`) with
`generate` on a worker thread; a subclass stamps the prompt and every new token as `generate` hands them over, and
a stopping criterion lets the consumer cancel (a client that went away). Errors on the worker thread are re-raised
in the consumer, not left to hang the queue.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, TextIteratorStreamer

from .generation import DECODE_KWARGS


@dataclass
class Timings:
    """Where one answer's time went, in seconds (all wall clock).

    image_s: read, decode and tile the image (0 in a session: done at open).
    vision_s: the ViT and every block's cross-attention k/v (0 in a session).
    prefill_s: `generate` start -> first new token (the prompt forward and the first token's choice).
    time_to_first_token_s: the call -> first new token (image + vision + prefill + set-up).
    decode_s: first -> last new token.
    """

    image_s: float
    vision_s: float
    prefill_s: float
    time_to_first_token_s: float
    decode_s: float
    total_s: float
    new_tokens: int
    prompt_tokens: int
    reused_prompt_tokens: int

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, per second of decoding (NaN with fewer than 2 tokens)."""
        if self.new_tokens < 2 or self.decode_s <= 0:
            return math.nan
        return (self.new_tokens - 1) / self.decode_s

    def to_dict(self) -> dict[str, float]:
        return asdict(self) | {"decode_tokens_per_s": self.decode_tokens_per_s}


class TimedTextStreamer(TextIteratorStreamer):
    """`TextIteratorStreamer` that records when `generate` started (the prompt arrives) and when each token came."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, skip_prompt=True, **kwargs)
        self.generate_started: float | None = None
        self.token_times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if self.next_tokens_are_prompt:
            self.generate_started = now
        else:
            self.token_times.extend([now] * value.numel())
        super().put(value)


class _Cancel(StoppingCriteria):
    """Stops every row once `event` is set (checked after each generated token)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class StreamResult(Iterator[str]):
    """Iterate for the answer's text pieces; afterwards `.text` (their concatenation), `.timings` and `.output`.

    `generate` starts on a worker thread as soon as this object is made. `close()` (or leaving a `with` block)
    cancels the generation after the current token.

    Why a class and not a generator: the timings and the raw `generate` output must be readable after the loop,
    and a generator cannot carry attributes.
    """

    def __init__(
        self,
        processor,
        run: Callable[[TimedTextStreamer, StoppingCriteria], Any],
        started: float,
        image_s: float,
        vision_s: float,
        prompt_tokens: int,
        reused_prompt_tokens: int = 0,
        on_done: Callable[[StreamResult], None] | None = None,
    ):
        self._streamer = TimedTextStreamer(processor.tokenizer, **DECODE_KWARGS)
        self._special_ids = frozenset(processor.tokenizer.all_special_ids)
        self._cancel = _Cancel()
        self._run = run
        self._started = started
        self._image_s, self._vision_s = image_s, vision_s
        self._prompt_tokens, self._reused = prompt_tokens, reused_prompt_tokens
        self._on_done = on_done
        self._pieces: list[str] = []
        self._error: BaseException | None = None
        self._finished = False
        self.output: Any = None
        self.timings: Timings | None = None
        self._thread = threading.Thread(target=self._work, name="infimm-hd-generate", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self.output = self._run(self._streamer, self._cancel)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
            self._error = err
            self._streamer.text_queue.put(self._streamer.stop_signal)

    def __next__(self) -> str:
        while not self._finished:
            try:
                piece = next(self._streamer)
            except StopIteration:
                self._finish()
                break
            if piece:
                self._pieces.append(piece)
                return piece
        raise StopIteration

    def _finish(self) -> None:
        self._thread.join()
        self._finished = True
        if self._error is not None:
            raise self._error
        end = time.perf_counter()
        times, begun = self._streamer.token_times, self._streamer.generate_started or self._started
        first = times[0] if times else end
        self.timings = Timings(
            image_s=self._image_s,
            vision_s=self._vision_s,
            prefill_s=first - begun,
            time_to_first_token_s=first - self._started,
            decode_s=(times[-1] - times[0]) if times else 0.0,
            total_s=end - self._started,
            new_tokens=len(times),
            prompt_tokens=self._prompt_tokens,
            reused_prompt_tokens=self._reused,
        )
        if self._on_done is not None:
            self._on_done(self)

    @property
    def text(self) -> str:
        """The answer so far (all of it once iteration has ended)."""
        return "".join(self._pieces)

    @property
    def answer_ids(self) -> list[int]:
        """The generated token ids of the answer, special tokens (EOS, padding) dropped as `.text` drops them.

        Why: a re-tokenisation of `.text` may split it differently from what the model produced (an attention map
        over the answer wants the very tokens). Available once iteration has ended.
        """
        if not self._finished or self.output is None:
            raise RuntimeError("answer_ids are known once the generation has ended: iterate or call consume() first")
        new = self.output.sequences[0, self._prompt_tokens :].tolist()
        return [token for token in new if token not in self._special_ids]

    def consume(self) -> str:
        """Run to the end and return the whole answer."""
        for _ in self:
            pass
        return self.text

    def close(self) -> None:
        """Stop generating after the current token and wait for the worker (the partial answer stays in `.text`)."""
        if self._finished:
            return
        self._cancel.event.set()
        for _ in self:
            pass

    def __enter__(self) -> StreamResult:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
