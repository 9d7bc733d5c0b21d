"""Text + images -> model inputs: one `<image>` token per image in the text, crops and grids for the vision side.

Vision goes through cross-attention, so nothing is expanded into the token stream: a prompt keeps exactly the
`<image>` tokens its author wrote, and the processor checks that each prompt has as many images as `<image>` tokens
before anything runs (and that tokenisation or truncation did not drop one). Padding is on the left, so batched
generation and single-prompt generation see the same positions.

Chat: `apply_chat_template` takes the standard message format
(`{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "..."}]}`), writes `<image>` where
each image part stands, and renders with the LLM tokenizer's own chat template when it has one (e.g. SmolLM2's),
otherwise with the paper's Vicuna-style template (`VICUNA_CHAT_TEMPLATE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase
from transformers.processing_utils import ProcessorMixin

from .image_processing import ImageInput, InfiMMHDImageProcessor
from .linear_cross_entropy import IGNORE_INDEX

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"

# The paper's format (official demo): system prompt, " USER: <image>question ASSISTANT: answer<|endofchunk|>", rounds
# joined by spaces; generation stops on <|endofchunk|>.
VICUNA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% set rest = messages[1:] %}"
    "{% else %}A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if message['role'] == 'user' %} USER: {{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %} ASSISTANT: {{ message['content'] }}<|endofchunk|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def add_multimodal_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Register `<|endofchunk|>` and `<image>` as special tokens (no-op when present); returns their ids."""
    missing = [t for t in (END_OF_CHUNK_TOKEN, IMAGE_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.convert_tokens_to_ids(END_OF_CHUNK_TOKEN)


def flatten_message(message: dict[str, Any]) -> tuple[dict[str, str], list[Any]]:
    """A message with a content list -> the same message with string content (`<image>` where each image part
    stands) and the images it carried (`image`, `path` or local `url` fields; an empty `{"type": "image"}` part
    yields `None`, to be filled by the caller's `images`)."""
    content = message.get("content", "")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}, []
    parts, images = [], []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append(part.get("text", ""))
        elif kind == "image":
            parts.append(IMAGE_TOKEN)
            source = part.get("image", part.get("path", part.get("url")))
            if isinstance(source, str) and source.startswith(("http://", "https://")):
                raise ValueError(f"image URL {source!r}: this processor reads local files only; download it first")
            if isinstance(source, str) and source.startswith("file://"):
                source = source[len("file://") :]
            images.append(source)
        else:
            raise ValueError(f"unsupported content part type {kind!r} (expected 'text' or 'image')")
    return {"role": message["role"], "content": "".join(parts)}, images


class InfiMMHDProcessor(ProcessorMixin):
    """Tokenizer + `InfiMMHDImageProcessor`. `processor(text=[...], images=[[img], [img, img], []])` -> inputs.

    Returns `input_ids`, `attention_mask` and, when there are images, `pixel_values` (N, 3, S, S), `image_grids`
    (I, 2) and `image_sample_index` (I,) (the prompt of each image, checked again by the model).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None, **kwargs):
        if tokenizer is None:
            raise ValueError("InfiMMHDProcessor needs a tokenizer")
        image_processor = image_processor if image_processor is not None else InfiMMHDImageProcessor()
        self.image_token_id, self.end_of_chunk_token_id = add_multimodal_tokens(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        if chat_template is None:
            chat_template = tokenizer.chat_template or VICUNA_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput] | Sequence[Sequence[ImageInput]] | None = None,
        text: str | Sequence[str] | None = None,
        max_windows: int | None = None,
        return_tensors: str = "pt",
        **tokenizer_kwargs,
    ) -> BatchFeature:
        """Tokenise prompts and tile their images.

        `images` is one list per prompt (or, for a single prompt, one image or a flat list); the i-th image of a
        prompt belongs to its i-th `<image>` token. `max_windows` overrides the window budget (e.g. the training
        budget of 9).
        """
        if text is None:
            raise ValueError("text is required: write one <image> in it where each image belongs")
        prompts = [text] if isinstance(text, str) else list(text)
        per_prompt = self._images_per_prompt(images, len(prompts))
        counts = [p.count(IMAGE_TOKEN) for p in prompts]
        for i, (n_tok, imgs) in enumerate(zip(counts, per_prompt, strict=True)):
            if n_tok != len(imgs):
                raise ValueError(
                    f"prompt {i} has {n_tok} {IMAGE_TOKEN} tokens but {len(imgs)} images were given for it; "
                    f"write one {IMAGE_TOKEN} where each image belongs"
                )
        tokenizer_kwargs.setdefault("padding", True)
        tokenizer_kwargs.pop("images_kwargs", None)
        encoded = self.tokenizer(prompts, return_tensors=return_tensors, **tokenizer_kwargs)
        found = (torch.as_tensor(encoded["input_ids"]) == self.image_token_id).sum(-1).tolist()
        if found != counts:
            raise ValueError(
                f"after tokenisation the prompts hold {found} {IMAGE_TOKEN} tokens, expected {counts} "
                "(was the text truncated?)"
            )
        data = dict(encoded)
        flat = [img for imgs in per_prompt for img in imgs]
        if flat:
            if any(img is None for img in flat):
                raise ValueError("an image part of the conversation has no image: pass it in `images`")
            vision = self.image_processor(flat, max_windows=max_windows, return_tensors="pt")
            data["pixel_values"] = vision["pixel_values"]
            data["image_grids"] = vision["image_grids"]
            data["image_sample_index"] = torch.repeat_interleave(
                torch.arange(len(prompts)), torch.tensor([len(x) for x in per_prompt])
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _images_per_prompt(images, num_prompts: int) -> list[list[ImageInput]]:
        if images is None:
            return [[] for _ in range(num_prompts)]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if images and all(isinstance(x, (list, tuple)) for x in images):
            if len(images) != num_prompts:
                raise ValueError(f"got image lists for {len(images)} prompts but {num_prompts} prompts")
            return [list(x) for x in images]
        if num_prompts != 1:
            if len(images) == 0:
                return [[] for _ in range(num_prompts)]
            raise ValueError("with several prompts, pass images as one list per prompt: [[img], [img, img], []]")
        return [list(images)]

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]] | list[list[dict[str, Any]]],
        chat_template: str | None = None,
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        images: Sequence[Sequence[ImageInput]] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        return_labels: bool = False,
        **template_kwargs,
    ):
        """Render conversations (standard message format) to prompts, and optionally tokenise them with their images.

        Images come from the image parts themselves (`{"type": "image", "image": PIL | path | bytes}`) or, for empty
        image parts, from `images` (one list per conversation). `return_labels=True` (with `tokenize=True`) adds
        `labels`: the tokens of the assistant turns (their end marker included), -100 everywhere else (system and
        user text, `<image>`, padding).
        """
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        template = chat_template or self.chat_template

        def render(messages: list[dict[str, str]], generation_prompt: bool, final: bool = False) -> str:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=template,
                tokenize=False,
                add_generation_prompt=generation_prompt,
                continue_final_message=final,
                **template_kwargs,
            )

        texts, found_images, spans = [], [], []
        for conv in conversations:
            flat, imgs = zip(*(flatten_message(m) for m in conv), strict=True) if conv else ((), ())
            flat = list(flat)
            texts.append(render(flat, add_generation_prompt, continue_final_message))
            found_images.append([img for part in imgs for img in part])
            if return_labels:
                spans.append(self._assistant_spans(flat, texts[-1], render))
        if images is not None:
            found_images = [self._fill_images(f, list(given)) for f, given in zip(found_images, images, strict=True)]
        if not tokenize:
            return texts if batched else texts[0]
        kwargs = dict(processor_kwargs or {})
        kwargs.setdefault("add_special_tokens", False)  # the template wrote BOS/markers already
        if return_labels:
            kwargs["return_offsets_mapping"] = True
        out = self(images=found_images, text=texts, return_tensors=return_tensors or "pt", **kwargs)
        if return_labels:
            offsets = out.pop("offset_mapping")  # (B, T, 2) character span of each token
            out["labels"] = self._labels(out["input_ids"], out["attention_mask"], offsets, spans)
        return out if return_dict else out["input_ids"]

    @staticmethod
    def _assistant_spans(flat: list[dict[str, str]], text: str, render) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in `text`: from the end of the rendering up to the turn (with the
        generation prompt) to the end of the rendering that includes it. Templates render conversations
        incrementally, so each partial rendering is a prefix of the whole; a template that does not is rejected."""
        spans = []
        for i, message in enumerate(flat):
            if message["role"] != "assistant":
                continue
            start = len(render(flat[:i], True))
            end = len(render(flat[: i + 1], False))
            if text[:end] != render(flat[: i + 1], False) or start > end:
                raise ValueError("this chat template does not render conversations incrementally; cannot place labels")
            spans.append((start, end))
        return spans

    def _labels(self, input_ids, attention_mask, offsets, spans) -> torch.Tensor:
        """-100 except for tokens that start inside an assistant span (never `<image>` or padding)."""
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for b, row_spans in enumerate(spans):
            starts = offsets[b, :, 0]
            ends = offsets[b, :, 1]
            inside = torch.zeros_like(input_ids[b], dtype=torch.bool)
            for s, e in row_spans:
                inside |= (starts >= s) & (starts < e) & (ends > starts)
            keep = inside & attention_mask[b].bool() & (input_ids[b] != self.image_token_id)
            labels[b, keep] = input_ids[b, keep]
        return labels

    @staticmethod
    def _fill_images(found: list[Any], given: list[Any]) -> list[Any]:
        empty = [i for i, img in enumerate(found) if img is None]
        if len(empty) != len(given):
            raise ValueError(f"the conversation has {len(empty)} empty image parts but {len(given)} images were given")
        for i, img in zip(empty, given, strict=True):
            found[i] = img
        return found

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grids", "image_sample_index"]

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, sequence, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(sequence, **kwargs)
