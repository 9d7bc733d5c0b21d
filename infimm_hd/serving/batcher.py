"""Concurrent requests -> batched `model.generate` calls, with each row's tokens streamed back to its request.

The queue collects requests for up to `batch_wait_ms` (and while the previous batch runs) up to `max_batch_size`,
then runs one `generate` over them in a single worker thread, so the event loop keeps accepting requests and
answering `/health` meanwhile. Rows of a batch share the decoding mode (greedy, or the same temperature/top-p:
`generate` takes one of each); each row stops at its own `max_tokens` (a per-row stopping criterion), at EOS, or
when its request is cancelled (timeout, client gone), and the batch ends when every row has stopped.

Why a streamer of our own: transformers' `TextStreamer`/`TextIteratorStreamer` raise on batch size > 1. Ours
(`BatchStreamer`) takes the (B,) tokens of every step, routes each row to its request and turns its tokens into
text deltas (`IncrementalDecoder`) whose concatenation equals decoding the whole answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

# The Python API's decoding settings, so the server's answers equal `answer`'s and streams never rewrite sent text.
from ..inference.generation import DECODE_KWARGS
from .vision_cache import VisionTokenCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    """How requests are grouped: at most `max_batch_size` rows, collected for at most `batch_wait_ms`."""

    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    vision_cache_mb: float = 512.0  # vision-tower outputs of recent images (`vision_cache`); 0 turns it off

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.vision_cache_mb < 0:
            raise ValueError(f"vision_cache_mb must be >= 0, got {self.vision_cache_mb}")


@dataclass
class PreparedRequest:
    """One request, tokenised and tiled (by the same processor calls as the Python API), ready to batch."""

    input_ids: torch.Tensor  # (T,) prompt tokens, unpadded
    pixel_values: torch.Tensor | None  # (N, 3, S, S) every crop of this request's images, or None
    image_grids: torch.Tensor | None  # (I, 2) rows, cols of each image
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    image_keys: tuple[str, ...] = ()  # `vision_cache.image_key` of each image's bytes; empty: not cacheable

    @property
    def sampling_key(self) -> tuple:
        """Requests batch together only when `generate` would decode them with the same settings."""
        return ("greedy",) if self.temperature == 0 else ("sample", self.temperature, self.top_p)

    @property
    def num_images(self) -> int:
        return 0 if self.image_grids is None else int(self.image_grids.shape[0])


@dataclass
class Delta:
    text: str


@dataclass
class Finished:
    text: str  # the whole answer, decoded at once
    finish_reason: str  # "stop" (EOS / end of chunk) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int  # every generated token, the end token included


@dataclass
class Failed:
    message: str


class IncrementalDecoder:
    """Token ids -> text deltas that concatenate to the final decode. A delta is released only up to text that can
    no longer change: a byte-level token may end inside a UTF-8 sequence, which decodes to U+FFFD until its
    remaining bytes arrive, so a trailing U+FFFD run is held back (see `push` for invalid bytes)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def _decode(self) -> str:
        return self._tokenizer.decode(self.ids, **DECODE_KWARGS)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._decode()
        stable = text.rstrip("\ufffd")
        # Invalid bytes also decode to U+FFFD and would hold the stream back to the end; any UTF-8 sequence is
        # settled 3 tokens (>= 3 bytes) after it began, so the text of all but the last 3 tokens is final too.
        settled = self._tokenizer.decode(self.ids[:-3], **DECODE_KWARGS) if len(self.ids) > 3 else ""
        if len(settled) > len(stable) and text.startswith(settled):
            stable = settled
        if len(stable) <= len(self.emitted) or not stable.startswith(self.emitted):
            return ""  # nothing new, or a decoder that rewrites earlier text (held until it settles)
        delta = stable[len(self.emitted) :]
        self.emitted = stable
        return delta

    def finish(self) -> tuple[str, str]:
        """(last delta, whole text)."""
        text = self._decode()
        if not text.startswith(self.emitted):
            log.warning("streamed text is not a prefix of the final decode (tokenizer clean-up?): %r", self.emitted)
            return "", text
        delta, self.emitted = text[len(self.emitted) :], text
        return delta, text


class Job:
    """A request in flight: its inputs, its event queue (read by the HTTP handler) and the worker's row state."""

    def __init__(self, request: PreparedRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.events: asyncio.Queue[Delta | Finished | Failed] = asyncio.Queue()
        self.cancelled = False  # set by the handler (timeout, client gone); read by the worker
        self.done = False  # worker side
        self.completion_tokens = 0
        self._loop = loop

    def send(self, event: Delta | Finished | Failed) -> None:
        """Thread-safe: events are put on the queue from the event loop's thread."""
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def fail(self, message: str) -> None:
        if not self.done:
            self.done = True
            self.send(Failed(message))


class BatchStreamer(BaseStreamer):
    """`generate` streamer for a whole batch: the first `put` is the (B, T) prompt (skipped), then one (B,) tensor
    per step. Rows already finished (EOS, their own max_tokens, cancelled) are skipped: `generate` pads them."""

    def __init__(self, jobs: list[Job], tokenizer, stop_ids: set[int]):
        self.jobs = jobs
        self.decoders = [IncrementalDecoder(tokenizer) for _ in jobs]
        self.stop_ids = stop_ids
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for job, decoder, token in zip(self.jobs, self.decoders, value.reshape(-1).tolist(), strict=True):
            if job.done:
                continue
            if job.cancelled:
                job.fail("cancelled")
                continue
            job.completion_tokens += 1
            if token in self.stop_ids:
                self._finish(job, decoder, "stop")
                continue
            delta = decoder.push(token)
            if delta:
                job.send(Delta(delta))
            if job.completion_tokens >= job.request.max_new_tokens:
                self._finish(job, decoder, "length")

    def end(self) -> None:
        for job, decoder in zip(self.jobs, self.decoders, strict=True):
            if not job.done:  # generate stopped before this row did (e.g. the model's max_length)
                self._finish(job, decoder, "length")

    @staticmethod
    def _finish(job: Job, decoder: IncrementalDecoder, reason: str) -> None:
        delta, text = decoder.finish()
        if delta:
            job.send(Delta(delta))
        job.done = True
        job.send(Finished(text, reason, int(job.request.input_ids.numel()), job.completion_tokens))


class RowStops(StoppingCriteria):
    """Per-row stop: a row is done at its own max_new_tokens or when its request was cancelled. `generate` checks
    this before it hands the step's tokens to the streamer, so the count comes from `input_ids`' length."""

    def __init__(self, jobs: list[Job], prompt_length: int):
        self.jobs = jobs
        self.prompt_length = prompt_length
        self.max_new = torch.tensor([job.request.max_new_tokens for job in jobs])

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        cancelled = torch.tensor([job.cancelled for job in self.jobs])
        return ((generated >= self.max_new) | cancelled).to(input_ids.device)


def collate(requests: list[PreparedRequest], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad the prompts (as the processor does for a batch) and concatenate the images in row order."""
    length = max(int(r.input_ids.numel()) for r in requests)
    input_ids = torch.full((len(requests), length), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(requests), length), dtype=torch.long)  # (B, T)
    for row, r in enumerate(requests):
        n = int(r.input_ids.numel())
        input_ids[row, length - n :] = r.input_ids
        attention_mask[row, length - n :] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    with_images = [r for r in requests if r.num_images]
    if with_images:
        batch["pixel_values"] = torch.cat([r.pixel_values for r in with_images])  # (N, 3, S, S)
        batch["image_grids"] = torch.cat([r.image_grids for r in with_images])  # (I, 2)
        batch["image_sample_index"] = torch.repeat_interleave(
            torch.arange(len(requests)), torch.tensor([r.num_images for r in requests])
        )  # (I,)
    return batch


class RequestBatcher:
    """The asyncio queue and the one generation thread. `submit` from the event loop; `start`/`stop` in lifespan."""

    def __init__(self, model, processor, config: BatchConfig = BatchConfig()):
        self.model = model
        self.processor = processor
        self.config = config
        eos = model.generation_config.eos_token_id
        self.stop_ids = set([] if eos is None else [eos] if isinstance(eos, int) else eos)
        self.batches_run = 0
        self.rows_run = 0
        mb = config.vision_cache_mb
        self.vision_cache = VisionTokenCache(int(mb * (1 << 20))) if mb > 0 else None
        self._queue: asyncio.Queue[Job] | None = None
        self._held: deque[Job] = deque()  # collected but not compatible with the batch being formed
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infimm-generate")
        self._task = asyncio.create_task(self._serve_forever(), name="infimm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in list(self._held) + self._drain():
            job.fail("the server is shutting down")
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _drain(self) -> list[Job]:
        jobs = []
        while self._queue is not None and not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    @property
    def queue_depth(self) -> int:
        return len(self._held) + (self._queue.qsize() if self._queue is not None else 0)

    def submit(self, request: PreparedRequest) -> Job:
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        job = Job(request, asyncio.get_running_loop())
        self._queue.put_nowait(job)
        return job

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if batch:
                await loop.run_in_executor(self._executor, self._generate, batch)

    async def _collect(self) -> list[Job]:
        """The next batch: the oldest waiting job, then compatible ones (held first, then the queue) until the batch
        is full or `batch_wait_ms` has passed."""
        assert self._queue is not None
        first = self._held.popleft() if self._held else await self._queue.get()
        if first.cancelled:
            return []
        batch, key = [first], first.request.sampling_key
        for job in list(self._held):
            if len(batch) < self.config.max_batch_size and job.request.sampling_key == key:
                self._held.remove(job)
                if not job.cancelled:
                    batch.append(job)
        deadline = asyncio.get_running_loop().time() + self.config.batch_wait_ms / 1000
        while len(batch) < self.config.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if job.cancelled:
                continue
            (batch if job.request.sampling_key == key else self._held).append(job)
        return batch

    def _generate(self, jobs: list[Job]) -> None:
        """Worker thread: one `generate` over the batch; an unexpected failure fails only this batch's requests."""
        try:
            requests = [job.request for job in jobs]
            batch = collate(requests, self.processor.tokenizer.pad_token_id)
            device = self.model.device
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            keys = [key for r in requests for key in r.image_keys]
            if self.vision_cache is not None and "pixel_values" in batch and len(keys) == len(batch["image_grids"]):
                tokens = self.vision_cache.tokens(self.model, keys, batch["pixel_values"], batch["image_grids"])
                context = self.model.encode_media(
                    batch["input_ids"],
                    None,
                    batch["image_grids"],
                    batch["image_sample_index"],
                    cache_kv=True,
                    vision_tokens=tokens,
                )  # the same context generate(pixel_values=...) builds, with the tower run only for new images
                batch = {
                    "input_ids": batch["input_ids"],
                    "attention_mask": batch["attention_mask"],
                    "cross_attention_context": context,
                }
            first = requests[0]
            sampling = {"do_sample": False}
            if first.temperature > 0:
                sampling = {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p}
            streamer = BatchStreamer(jobs, self.processor.tokenizer, self.stop_ids)
            self.model.generate(
                **batch,
                **sampling,
                max_new_tokens=max(r.max_new_tokens for r in requests),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([RowStops(jobs, batch["input_ids"].shape[1])]),
            )
            self.batches_run += 1
            self.rows_run += len(jobs)
        except Exception as err:  # noqa: BLE001 - a failed batch must not stop the server
            log.exception("generation failed for a batch of %d", len(jobs))
            for job in jobs:
                job.fail(f"generation failed: {type(err).__name__}: {err}")


__all__ = ["BatchConfig", "PreparedRequest", "RequestBatcher", "Delta", "Finished", "Failed", "collate"]
