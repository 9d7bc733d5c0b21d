"""Text + images -> model inputs: one `<image>` token per image in the text, crops and grids for the vision side.

Vision goes through cross-attention, so nothing is expanded into the token stream: a prompt keeps exactly the
`<image>` tokens its author wrote, and the processor checks that each prompt has as many images as `<image>` tokens
before anything runs. Padding is on the left, so batched generation and single-prompt generation see the same
positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BatchFeature, PreTrainedTokenizerBase

from .image_processing import ImageInput, process_images

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"


def add_multimodal_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Register `<|endofchunk|>` and `<image>` as special tokens (no-op when present); returns their ids."""
    missing = [t for t in (END_OF_CHUNK_TOKEN, IMAGE_TOKEN) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.convert_tokens_to_ids(END_OF_CHUNK_TOKEN)


class InfiMMHDProcessor:
    """Tokenizer + image tiling. `processor(text=[...], images=[[img], [img, img], []])` -> model inputs.

    Attributes:
        tokenizer: the LLM's tokenizer with `<image>` and `<|endofchunk|>` added.
        window_size, max_windows, thumbnail_mode: the tiling settings (from the model config).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        window_size: int = 448,
        max_windows: int = 9,
        thumbnail_mode: str = "pad",
    ):
        self.tokenizer = tokenizer
        self.image_token_id, self.end_of_chunk_token_id = add_multimodal_tokens(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.window_size = window_size
        self.max_windows = max_windows
        self.thumbnail_mode = thumbnail_mode

    def __call__(
        self,
        text: str | Sequence[str],
        images: ImageInput | Sequence[ImageInput] | Sequence[Sequence[ImageInput]] | None = None,
        max_windows: int | None = None,
        return_tensors: str = "pt",
        **tokenizer_kwargs,
    ) -> BatchFeature:
        """Tokenise prompts and tile their images.

        `images` is one list per prompt (or, for a single prompt, one image or a flat list). The i-th image of a
        prompt belongs to its i-th `<image>` token. `max_windows` overrides the window budget (e.g. the training
        budget of 9).
        """
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
        encoded = self.tokenizer(prompts, return_tensors=return_tensors, **tokenizer_kwargs)
        found = (encoded["input_ids"] == self.image_token_id).sum(-1).tolist()
        if found != counts:
            raise ValueError(
                f"after tokenisation the prompts hold {found} {IMAGE_TOKEN} tokens, expected {counts} "
                "(was the text truncated?)"
            )
        data = dict(encoded)
        flat = [img for imgs in per_prompt for img in imgs]
        if flat:
            processed = process_images(
                flat,
                window_size=self.window_size,
                max_windows=max_windows or self.max_windows,
                thumbnail_mode=self.thumbnail_mode,
            )
            data["pixel_values"] = processed.pixel_values
            data["image_grids"] = processed.image_grids
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
        if all(isinstance(x, (list, tuple)) for x in images):
            if len(images) != num_prompts:
                raise ValueError(f"got image lists for {len(images)} prompts but {num_prompts} prompts")
            return [list(x) for x in images]
        if num_prompts != 1:
            raise ValueError("with several prompts, pass images as one list per prompt: [[img], [img, img], []]")
        return [list(images)]

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, sequence, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(sequence, **kwargs)
