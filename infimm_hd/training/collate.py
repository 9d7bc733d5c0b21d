"""One conversation -> model inputs with labels (through the processor), and samples -> a right-padded batch.

Shape legend
    B   samples in the batch    T   longest sample's tokens     S   window size
    N   crops of all images     I   images of the batch

The processor pads on the left (generation); training pads on the right so every sample starts at position 0
and its padding sits after its last target. Tokenisation, labels and tiling are the processor's own
(`apply_chat_template(..., return_labels=True)`), so a batch holds exactly what the processor gives for each
conversation, only padded differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from ..linear_cross_entropy import IGNORE_INDEX
from ..processing import InfiMMHDProcessor


def render_length(processor: InfiMMHDProcessor, messages: list[dict[str, Any]], num_images: int) -> int:
    """Tokens the conversation will have, from its text alone (no image is touched).

    Why: it is cheap, so the loader can bucket and drop over-long samples before paying for any image decode.
    Raises `ValueError` when the rendered text does not hold one `<image>` token per image.
    """
    text = processor.apply_chat_template(messages)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template wrote BOS already
    found = sum(1 for i in ids if i == processor.image_token_id)
    if found != num_images:
        raise ValueError(f"the rendered conversation holds {found} <image> tokens for {num_images} images")
    return len(ids)


def encode_sample(
    processor: InfiMMHDProcessor, messages: list[dict[str, Any]], images: Sequence[Any], max_windows: int
) -> dict[str, torch.Tensor]:
    """Tokenise one conversation and tile its images (`images` fill its image parts in order; encoded bytes are fine).

    Returns `input_ids`, `attention_mask`, `labels` (1, T) and, with images, `pixel_values` (N, 3, S, S) and
    `image_grids` (I, 2). `max_windows=0` asks for thumbnails only.
    """
    out = processor.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_labels=True,
        images=[list(images)],
        processor_kwargs={"max_windows": max_windows},
    )
    return {k: v for k, v in out.items() if k != "image_sample_index"}  # one sample: the index is all zeros


def collate(samples: Sequence[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad `encode_sample` outputs into one batch.

    Returns `input_ids`, `attention_mask`, `labels` (B, T) (pads: `pad_token_id`, 0, -100), `num_tokens` (the
    targets a shifted next-token loss scores: labels[:, 1:] != -100), `num_samples`, and, when some sample has an
    image, `pixel_values` (N, 3, S, S), `image_grids` (I, 2) and `image_sample_index` (I,).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    lengths = [int(s["input_ids"].shape[-1]) for s in samples]
    batch_size, width = len(samples), max(lengths)
    input_ids = torch.full((batch_size, width), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((batch_size, width), dtype=torch.long)  # (B, T)
    labels = torch.full((batch_size, width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for b, (sample, n) in enumerate(zip(samples, lengths, strict=True)):
        input_ids[b, :n] = sample["input_ids"][0]
        attention_mask[b, :n] = sample["attention_mask"][0]
        labels[b, :n] = sample["labels"][0]
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "num_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        "num_samples": batch_size,
    }
    with_images = [(b, s) for b, s in enumerate(samples) if "pixel_values" in s]
    if with_images:
        batch["pixel_values"] = _concat([s["pixel_values"] for _, s in with_images])  # (N, 3, S, S)
        batch["image_grids"] = torch.cat([s["image_grids"] for _, s in with_images]).long()  # (I, 2)
        batch["image_sample_index"] = torch.cat(  # (I,) the sample each image belongs to
            [torch.full((len(s["image_grids"]),), b, dtype=torch.long) for b, s in with_images]
        )
    return batch


def _concat(crops: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat` along dim 0, straight into shared memory inside a DataLoader worker.

    Why: a batch's crops are large (10 crops of 448 px = 24 MB per image) and a worker's output is moved to shared
    memory to reach the main process; concatenating there skips that extra copy (torch's `default_collate` does
    the same).
    """
    if get_worker_info() is None:
        return torch.cat(crops)
    first = crops[0]
    numel = sum(c.numel() for c in crops)
    storage = first._typed_storage()._new_shared(numel, device=first.device)
    out = first.new(storage).view(numel // first[0].numel(), *first.shape[1:])
    return torch.cat(crops, out=out)
