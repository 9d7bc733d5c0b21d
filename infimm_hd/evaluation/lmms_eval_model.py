"""The `infimm_hd` model of lmms-eval: any InfiMM-HD checkpoint scored by lmms-eval's own tasks, unmodified.

    pip install lmms-eval   # the entry point in our pyproject registers the model; nothing in lmms-eval is edited
    python -m lmms_eval --model infimm_hd --model_args pretrained=FOLDER_OR_HUB_ID,max_windows=16,dtype=bf16 \
        --tasks docvqa_val --batch_size 8 --output_path runs/lmms
    accelerate launch --num_processes 8 -m lmms_eval --model infimm_hd ...   # data parallel, one GPU per process

Why an adapter beside `infimm-hd eval`: lmms-eval is where the field's numbers come from (its prompts, splits and
post-processing), so a score reported next to a peer's should come out of the same harness. `model_args`:
`pretrained` (a saved folder, a hub id, or a preset name), `dtype` (fp32 / bf16 / fp16, or torch's names; default
the checkpoint's), `max_windows` (the tiling's window budget, 0 = thumbnail only; default the model's inference
budget), `max_new_tokens` (used when a task sets none). `--batch_size` and `--device` come from lmms-eval.

Prompting. A task hands over a context string (its question with the published pre/post prompt) and the doc's
images. The images go first in the user turn and the context after them, and the turn is rendered by
`processor.apply_chat_template`: the token sequence `infimm-hd eval` and `answer()` send for the same text. A context
that writes its own `<image>` placeholders (one per image) keeps them where it put them. The model's text attends to
the latest `<image>` before it, so with several images per doc the text after the last one sees only that one: the
InfiMM-HD design, stated rather than hidden.

Requests. `generate_until`: greedy unless the task samples (`do_sample`, or `temperature` > 0), batched by
`--batch_size` within each group of equal generation settings (lmms-eval's `Collator`, longest first, results put
back in request order); the task's `until` strings stop generation and are cut from the answer, as lm-eval does.
`loglikelihood` (multiple-choice tasks): the summed log-probability of the continuation's tokens after the rendered
prompt, and whether greedy decoding would produce exactly them, where (lm-eval's rule) the continuation's tokens are
tokens(prompt + continuation) after the first len(tokens(prompt)); unlike peers that return the mean loss, this is
the log-likelihood lmms-eval's `acc` / `acc_norm` compare. Rows are batched with left padding and explicit position
ids, so a batch scores each row exactly as alone. `generate_until_multi_round`: the task's `doc_to_text` builds each
round from the previous answers, until it signals the end; one list of answers per doc.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts, unwrap_generation_output
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from ..inference.generation import DECODE_KWARGS
from ..inference.loading import DTYPES, load_model, pick_device
from ..linear_logprobs import logprobs_of
from ..processing import IMAGE_TOKEN

# torch's names, as lmms-eval users write them for other models, beside our CLI's short ones.
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "auto": None}
DEFAULT_MAX_NEW_TOKENS = 128
# Generation settings lmms-eval tasks use that this model has no use for (LLaVA's aspect-ratio mode, modalities).
IGNORED_GEN_KWARGS = ("image_aspect_ratio", "modalities", "image_sizes")
# lmms-eval 0.7.3's evaluator passes every response through `unwrap_generation_output`, which turns a (log-prob,
# is-greedy) pair into its str, and then multiple-choice scoring fails to unpack it. A `GenerationResult` passes its
# payload through untouched, so pairs travel in one where (and only where) the installed version needs it.
PAIRS_NEED_WRAPPING = unwrap_generation_output((0.0, True))[0] != (0.0, True)


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None or value == "" or value == "None":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"model_args {name}={value!r} is not an integer") from None


def _images_of(visuals: Any) -> list[Image.Image]:
    """A doc's visuals (None, one image, or a list) -> RGB images; anything else (video paths, audio) is an error
    naming what was given, since this model reads images only."""
    if visuals is None:
        return []
    items = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    images = []
    for item in items:
        if not isinstance(item, Image.Image):
            raise ValueError(
                f"infimm_hd reads images only; the task's doc_to_visual returned a {type(item).__name__} ({item!r:.80})"
            )
        images.append(item.convert("RGB"))
    return images


def user_content(context: str, num_images: int) -> list[dict[str, Any]]:
    """The user turn's content parts: the context's own `<image>` placeholders where it wrote one per image,
    otherwise every image first and then the context."""
    if num_images and context.count(IMAGE_TOKEN) == num_images:
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(context.split(IMAGE_TOKEN)):
            if i:
                parts.append({"type": "image"})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip()})
        return parts
    if context.count(IMAGE_TOKEN):
        raise ValueError(
            f"the context writes {context.count(IMAGE_TOKEN)} {IMAGE_TOKEN} placeholders for {num_images} images; "
            "write one per image or none"
        )
    return [{"type": "image"}] * num_images + [{"type": "text", "text": context}]


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (lm-eval's post-processing of `until`)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def generate_settings(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> tuple[dict[str, Any], list[str]]:
    """A task's generation_kwargs -> (`generate` keywords, stop strings)."""
    gen = dict(gen_kwargs)
    until = gen.pop("until", [])
    until = [until] if isinstance(until, str) else list(until or [])
    for key in IGNORED_GEN_KWARGS:
        gen.pop(key, None)
    temperature = float(gen.pop("temperature", 0.0) or 0.0)
    do_sample = bool(gen.pop("do_sample", temperature > 0))
    top_p = gen.pop("top_p", None)
    settings: dict[str, Any] = {
        "max_new_tokens": int(gen.pop("max_new_tokens", default_max_new_tokens)),
        "do_sample": do_sample,
        "num_beams": int(gen.pop("num_beams", 1) or 1),
    }
    if do_sample:
        settings["temperature"] = temperature or 1.0
        if top_p is not None:
            settings["top_p"] = float(top_p)
    if gen:
        raise ValueError(f"generation_kwargs {sorted(gen)} are not understood by infimm_hd")
    return settings, until


class InfiMMHDLmms(lmms):
    """lmms-eval's `simple` model interface over `from_pretrained` (see the module docstring)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        dtype: str | None = None,
        max_windows: int | str | None = None,
        max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS,
        batch_size: int | str | None = 1,
        device: str | None = None,
        max_batch_size: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise TypeError(
                f"infimm_hd model_args {sorted(unknown)} are not known; use pretrained, dtype, max_windows, "
                "max_new_tokens"
            )
        if dtype is not None:
            dtype = DTYPE_ALIASES.get(str(dtype), str(dtype))
            if dtype is not None and dtype not in DTYPES:
                raise ValueError(f"model_args dtype={dtype!r}: choose one of {sorted(DTYPES)}")
        if str(batch_size).startswith("auto"):
            raise ValueError("infimm_hd needs a numeric --batch_size (no automatic search)")
        self.batch_size_per_process = _int_or_none(batch_size, "batch_size") or 1
        self.max_windows = _int_or_none(max_windows, "max_windows")
        self.default_max_new_tokens = _int_or_none(max_new_tokens, "max_new_tokens") or DEFAULT_MAX_NEW_TOKENS
        # Under `accelerate launch` / torchrun every process takes its own GPU; lmms-eval shards the docs by rank.
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        if device in (None, "auto", "cuda") and torch.cuda.is_available() and self._world_size > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        elif device in ("cuda", "cuda:0") and not torch.cuda.is_available():
            raise ValueError(f"--device {device} was asked for but this machine has no CUDA device; pass --device cpu")
        self._model, self.processor = load_model(pretrained, dtype, device)
        self._device = pick_device(device)
        self.tokenizer = self.processor.tokenizer

    # -- what lmms-eval reads --------------------------------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_process

    # -- shared steps --------------------------------------------------------------------------------------------
    def _prompt(self, context: str, num_images: int) -> str:
        messages = [{"role": "user", "content": user_content(context, num_images)}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _inputs(self, texts: list[str], images: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
        """Tokenised (left padded) prompts with their tiled images, on the model's device and dtype."""
        inputs = self.processor(
            text=texts, images=images, max_windows=self.max_windows, add_special_tokens=False, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    @torch.no_grad()
    def _generate(
        self, contexts: list[str], images: list[list[Image.Image]], settings: dict[str, Any], until: list[str]
    ) -> list[GenerationResult]:
        """One batched `generate` -> one answer per context, cut at the stop strings."""
        inputs = self._inputs([self._prompt(c, len(i)) for c, i in zip(contexts, images, strict=True)], images)
        stop = {"stop_strings": until, "tokenizer": self.tokenizer} if until else {}
        pad = self.tokenizer.pad_token_id
        out = self.model.generate(**inputs, pad_token_id=pad, **settings, **stop)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new, **DECODE_KWARGS)
        prompt_tokens = inputs["attention_mask"].sum(-1).tolist()
        new_tokens = (new != pad).sum(-1).tolist() if pad is not None else [new.shape[1]] * len(texts)
        return [
            GenerationResult(cut_at_stop(t, until).strip(), TokenCounts(input_tokens=p, output_tokens=n))
            for t, p, n in zip(texts, prompt_tokens, new_tokens, strict=True)
        ]

    # -- lmms-eval's request types ---------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        if not requests:
            return []
        collator = lmms_utils.Collator(
            [r.args for r in requests], lambda a: (-len(self.tokenizer.encode(a[0])), a[0]), grouping=True
        )
        results: list[GenerationResult] = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="infimm_hd generate_until")
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            contexts, gen_kwargs, doc_to_visual, doc_ids, tasks, splits = zip(*chunk, strict=True)
            images = [
                _images_of(to_visual(self._doc(t, s, d)))
                for to_visual, d, t, s in zip(doc_to_visual, doc_ids, tasks, splits, strict=True)
            ]
            settings, until = generate_settings(gen_kwargs[0], self.default_max_new_tokens)
            results.extend(self._generate(list(contexts), images, settings, until))
            bar.update(len(chunk))
        bar.close()
        return collator.get_original(results)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        results = []
        for request in tqdm(requests, disable=self.rank != 0, desc="infimm_hd multi-round"):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            settings, until = generate_settings(gen_kwargs, self.default_max_new_tokens)
            visuals: Any = doc_to_visual(doc)
            answers: list[str] = []
            round_info = None
            for round_idx in range(10_000):  # the task ends the conversation; the bound only stops a runaway task
                if round_idx:
                    visuals, context, finished, answers, round_info = doc_to_text(
                        doc, previous_output=list(answers), round_idx=round_idx, previous_round_info=round_info
                    )
                    if finished:
                        break
                (reply,) = self._generate([context], [_images_of(visuals)], settings, until)
                answers = [*answers, reply.text]
            results.append(list(answers))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]] | list[GenerationResult]:
        """(summed log-prob, is greedy) per request; see `PAIRS_NEED_WRAPPING` for the wrapper."""
        pairs = self.score_continuations(requests)
        return [GenerationResult(pair) for pair in pairs] if PAIRS_NEED_WRAPPING else pairs  # type: ignore[arg-type]

    @torch.no_grad()
    def score_continuations(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        rows = [self._scoring_row(r.args) for r in requests]
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # similar lengths share a batch
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        bar = tqdm(total=len(rows), disable=self.rank != 0, desc="infimm_hd loglikelihood")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            scored = self._score_batch([rows[i] for i in batch])
            for i, value in zip(batch, scored, strict=True):
                results[i] = value
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    def _scoring_row(self, args: tuple) -> tuple[str, str, list[Image.Image]]:
        """(prompt text, continuation, images) of one loglikelihood request. Two-element requests ("", choice)
        are lm-eval's unconditional scores for `acc_mutual_info`: no image, and the bare context as the prompt."""
        if len(args) == 2:
            context, continuation = args
            return context, continuation, []
        context, target, doc_to_visual, doc_id, task, split = args
        doc = self._doc(task, split, doc_id)
        continuation = target if isinstance(target, str) else target(doc)
        if not isinstance(continuation, str):
            continuation = str(continuation)
        images = _images_of(doc_to_visual(doc))
        return self._prompt(context, len(images)), continuation, images

    def _score_batch(self, rows: list[tuple[str, str, list[Image.Image]]]) -> list[tuple[float, bool]]:
        """Summed log-prob of each continuation and whether it is the greedy one, in one forward."""
        prompts, continuations, images = zip(*rows, strict=True)
        prompt_lengths = [len(self.tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
        inputs = self._inputs([p + c for p, c in zip(prompts, continuations, strict=True)], list(images))
        ids, mask = inputs["input_ids"], inputs["attention_mask"]  # (B, T), left padded
        lengths = mask.sum(-1).tolist()
        scored = [total - prompt for total, prompt in zip(lengths, prompt_lengths, strict=True)]  # K_i per row
        if min(scored) < 1:
            empty = [c for c, k in zip(continuations, scored, strict=True) if k < 1]
            raise ValueError(f"loglikelihood continuation(s) {empty!r:.120} add no token after the prompt")
        keep = max(scored)
        # Left padding shifts the text; explicit positions make every row score as it would alone (RoPE LLMs are
        # shift-invariant anyway, absolute-position ones are not).
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**inputs, position_ids=positions, logits_to_keep=keep + 1).logits[:, :-1]  # (B, K, V)
        targets = ids[:, -keep:]  # (B, K): logits[:, j] predicts targets[:, j]
        token_logprobs = logprobs_of(logits, targets)  # (B, K) float32
        greedy = logits.argmax(-1) == targets  # (B, K)
        return [(float(token_logprobs[row, -k:].sum()), bool(greedy[row, -k:].all())) for row, k in enumerate(scored)]
