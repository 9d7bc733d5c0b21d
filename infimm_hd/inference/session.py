"""Image sessions: encode an image once, then ask many questions and hold multi-turn conversations about it.

`open_image` runs the ViT over the thumbnail and windows and projects every cross-attention block's k/v, once.
Every later question reads that context: single questions (`ask`, `stream`), several at once (`ask_batch`: the
questions share the one context row through `CrossAttentionContext.expanded`, nothing is copied), and follow-ups
(`chat`, `chat_stream`: the conversation is kept and the image token appears once, in the first user turn).

The LLM's KV cache of the shared prompt prefix is reused too (see `prefix_cache`): the template opening, system
prompt and `<image>` token for every question, and the whole conversation so far for a follow-up, so a follow-up
runs only its own question tokens before decoding. `ask_batch` does not reuse the text prefix: its prompts are left
padded to a common length, which puts the shared tokens at different positions in each row; the prefix is a few
dozen tokens, small beside the answers.

Numerics: splitting the prompt's forward into a cached prefix and the rest (or batching with padding) computes the
same function in a different order. In float32 the greedy answers equal fresh `answer` calls (the tests check it on
tiny and SmolLM2-135M); in bf16 rounding can flip a near-tie between two tokens, as in any batched or cached decoding.

>>> session = open_image(model, processor, "photo.jpg")
>>> session.ask("What is in the picture?")
>>> session.chat("What colour is it?"); session.chat("And its size?")  # a conversation
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from transformers import DynamicCache

from ..image_processing import ImageInput
from .generation import PreparedPrompt, decode_new_tokens, generation_kwargs, run_generate
from .prefix_cache import PrefixCache
from .prompts import Turn, render_prompt
from .streaming import StreamResult
from .vision_context import context_after, encode_context

# Stands in for the question when rendering the shared prefix; only the tokens up to `<image>` are kept.
_PLACEHOLDER_QUESTION = "?"


class ImageSession:
    """One encoded image and the conversation about it. Make one with `open_image`.

    Attributes:
        history: the finished (question, answer) rounds of `chat` / `chat_stream` (answers stripped of surrounding
            spaces, as the next prompt renders them).
        image_s, vision_s: seconds spent at open tiling the image and encoding it (ViT + k/v).
    """

    def __init__(self, model, processor, image: ImageInput, max_windows: int | None = None, system: str | None = None):
        self.model, self.processor, self.system = model, processor, system
        self.history: list[Turn] = []
        self._image_token_id = model.config.image_token_id
        t0 = time.perf_counter()
        vision = processor.image_processor([image], max_windows=max_windows, return_tensors="pt")
        t1 = time.perf_counter()
        one_image = torch.tensor([[self._image_token_id]])  # (1, 1): one prompt holding one <image>
        self.context = encode_context(model, one_image, vision["pixel_values"], vision["image_grids"])
        t2 = time.perf_counter()
        self.image_grid = tuple(vision["image_grids"][0].tolist())  # (rows, cols) of the windows
        self.image_s, self.vision_s = t1 - t0, t2 - t1
        self._image_prefix = self._encode_prefix()
        self._chat_prefix: PrefixCache | None = None

    # -- prompts ------------------------------------------------------------------------------------------------
    def _tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (input_ids, attention_mask) (B, T), left padded; exactly as `processor(...)` tokenises them."""
        enc = self.processor.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        found = (enc["input_ids"] == self._image_token_id).sum(-1)
        if not bool((found == 1).all()):
            raise ValueError(f"each prompt must hold exactly one <image> token, found {found.tolist()}")
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def _encode_prefix(self) -> PrefixCache:
        """Run the tokens every question starts with (up to and including `<image>`) and keep their LLM cache."""
        ids, _ = self._tokenize([render_prompt(self.processor, _PLACEHOLDER_QUESTION, self.system)])
        end = int((ids[0] == self._image_token_id).nonzero()[0, 0]) + 1
        prefix = ids[:, :end]  # (1, P)
        out = self.model(
            input_ids=prefix.to(self.model.device),
            cache=DynamicCache(config=self.model.config.text_config),
            use_cache=True,
            cross_attention_context=self.context,
            logits_to_keep=1,
        )
        return PrefixCache(ids=prefix[0], cache=out.cache)

    def _prepare(self, prompt_text: str, prefix: PrefixCache) -> PreparedPrompt:
        """One prompt, starting from the longest part of `prefix` it shares."""
        input_ids, attention_mask = self._tokenize([prompt_text])
        cache, reused = prefix.reuse_for(input_ids[0])
        seen = int((input_ids[0, :reused] == self._image_token_id).sum())
        return PreparedPrompt(input_ids, attention_mask, context_after(self.context, seen), cache, reused)

    # -- single questions ---------------------------------------------------------------------------------------
    def ask(self, question: str, **generate_kwargs: Any) -> str:
        """Answer one question about the image (no conversation history; `history` is untouched)."""
        prompt = self._prepare(render_prompt(self.processor, question, self.system), self._image_prefix)
        out = run_generate(self.model, prompt, generation_kwargs(self.processor, generate_kwargs))
        return decode_new_tokens(self.processor, out.sequences, prompt.prompt_tokens)[0]

    def ask_batch(self, questions: list[str], **generate_kwargs: Any) -> list[str]:
        """Answer several independent questions in one batched `generate`; they share the image's context row."""
        if not questions:
            raise ValueError("no questions given")
        prompts = [render_prompt(self.processor, q, self.system) for q in questions]
        input_ids, attention_mask = self._tokenize(prompts)
        prompt = PreparedPrompt(input_ids, attention_mask, self.context.expanded(len(prompts)))
        out = run_generate(self.model, prompt, generation_kwargs(self.processor, generate_kwargs))
        return decode_new_tokens(self.processor, out.sequences, prompt.prompt_tokens)

    def stream(self, question: str, **generate_kwargs: Any) -> StreamResult:
        """`ask`, streamed: iterate for text pieces; `.timings` afterwards (image and vision seconds are 0 here)."""
        started = time.perf_counter()
        prompt = self._prepare(render_prompt(self.processor, question, self.system), self._image_prefix)
        return self._stream(prompt, generate_kwargs, started)

    def _stream(self, prompt: PreparedPrompt, generate_kwargs: dict[str, Any], started: float, on_done=None):
        generation = generation_kwargs(self.processor, generate_kwargs)
        return StreamResult(
            self.processor,
            lambda streamer, cancel: run_generate(self.model, prompt, generation, streamer, cancel),
            started=started,
            image_s=0.0,
            vision_s=0.0,
            prompt_tokens=prompt.prompt_tokens,
            reused_prompt_tokens=prompt.reused_tokens,
            on_done=on_done,
        )

    # -- conversations ------------------------------------------------------------------------------------------
    def _chat_prompt(self, question: str) -> PreparedPrompt:
        text = render_prompt(self.processor, question, self.system, self.history)
        return self._prepare(text, self._chat_prefix or self._image_prefix)

    def _record_turn(self, question: str, answer: str, output) -> None:
        """Append the round and keep the cache `generate` left (prompt + answer, bar the last token) for the next."""
        self.history.append(Turn(question, answer.strip()))
        cache = output.cache
        if cache is not None and output.sequences.shape[0] == 1:
            held = cache.get_seq_length()
            self._chat_prefix = PrefixCache(ids=output.sequences[0, :held].cpu(), cache=cache)

    def chat(self, question: str, **generate_kwargs: Any) -> str:
        """Answer `question` as the next turn of the conversation, and remember the round."""
        prompt = self._chat_prompt(question)
        out = run_generate(self.model, prompt, generation_kwargs(self.processor, generate_kwargs))
        text = decode_new_tokens(self.processor, out.sequences, prompt.prompt_tokens)[0]
        self._record_turn(question, text, out)
        return text

    def chat_stream(self, question: str, **generate_kwargs: Any) -> StreamResult:
        """`chat`, streamed; the round is remembered when the stream ends (a cancelled stream keeps its partial
        answer)."""
        started = time.perf_counter()
        prompt = self._chat_prompt(question)
        on_done = lambda result: self._record_turn(question, result.text, result.output)
        return self._stream(prompt, generate_kwargs, started, on_done)

    def fork(self) -> ImageSession:
        """A second conversation about the same encoded image, starting from this one's history.

        Shares the vision context and the cached prefixes (calls only ever read them, see `prefix_cache`), so it
        costs nothing; each fork then keeps its own history. Useful for several users asking about one image, or
        for trying different follow-ups to the same turn.
        """
        twin = copy.copy(self)
        twin.history = list(self.history)
        return twin

    def reset(self) -> None:
        """Forget the conversation (the image stays encoded)."""
        self.history.clear()
        self._chat_prefix = None


def open_image(
    model, processor, image: ImageInput, max_windows: int | None = None, system: str | None = None
) -> ImageSession:
    """Encode `image` once (ViT + every block's cross-attention k/v + the shared prompt prefix) for many questions.

    `max_windows` overrides the processor's window budget; `system` replaces the chat template's system prompt for
    every question of the session.
    """
    return ImageSession(model, processor, image, max_windows=max_windows, system=system)
