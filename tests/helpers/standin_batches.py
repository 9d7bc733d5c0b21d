"""A deterministic stand-in for the streaming loader, for the training-loop tests.

Sample i is a pure function of (seed, i): random tokens with right padding, one image placed after BOS with a 1x1, 1x2
or 2x1 window grid, and a random prompt prefix masked out of the labels (so batches hold different label-token counts
and per-token normalisation is actually exercised). Rank r of W serves micro-batch position p as the global samples
[(p * W + r) * B, (p * W + r + 1) * B): so 2 ranks x B and 1 rank x 2 micro-batches x B see the same global batches.
"""

from __future__ import annotations

from typing import Any

import torch

GRIDS = ((1, 1), (1, 2), (2, 1))
WINDOW = 448


def make_sample(seed: int, index: int, image_token_id: int, seq_len: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    length = int(torch.randint(seq_len - 6, seq_len + 1, (), generator=g))
    ids = torch.zeros(seq_len, dtype=torch.long)  # pad id 0
    ids[:length] = torch.randint(3, 250, (length,), generator=g)
    ids[0], ids[1] = 1, image_token_id  # BOS, then the image
    prompt = int(torch.randint(2, seq_len // 2, (), generator=g))
    labels = ids.clone()
    labels[:prompt] = -100
    labels[length:] = -100
    rows, cols = GRIDS[int(torch.randint(0, len(GRIDS), (), generator=g))]
    pixels = 0.5 * torch.randn(1 + rows * cols, 3, WINDOW, WINDOW, generator=g)  # (crops, 3, S, S): thumbnail + windows
    mask = (torch.arange(seq_len) < length).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels, "grid": (rows, cols)}


def collate(samples: list[dict[str, Any]], text_only: bool = False) -> dict[str, Any]:
    """Stack samples into a batch; `text_only` replaces each `<image>` token by a plain token and drops the images
    (the loader's text-only batches have no image keys at all)."""
    labels = torch.stack([s["labels"] for s in samples])  # (B, T)
    if text_only:
        ids = torch.stack([s["input_ids"] for s in samples])
        ids[:, 1] = 5
        mask = torch.stack([s["attention_mask"] for s in samples])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels} | _counts(labels, len(samples))
    return {
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
        "labels": labels,
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),  # (N, 3, S, S)
        "image_grids": torch.tensor([s["grid"] for s in samples]),  # (I, 2)
        "image_sample_index": torch.arange(len(samples)),  # (I,): one image per sample
    } | _counts(labels, len(samples))


def _counts(labels: torch.Tensor, num_samples: int) -> dict[str, int]:
    return {"num_tokens": int((labels[:, 1:] != -100).sum()), "num_samples": num_samples}


class StandInBatches:
    """Infinite iterator with `state_dict()` / `load_state_dict()`; records the positions it served in `served`.

    fail_at: raise RuntimeError when asked for this position (a crash in the middle of a step).
    text_only_every: every k-th global micro-batch (global index = position * world_size + rank) is text-only.
    """

    def __init__(
        self,
        image_token_id: int,
        batch_size: int = 2,
        seq_len: int = 24,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        fail_at: int | None = None,
        text_only_every: int = 0,
    ) -> None:
        self.image_token_id, self.batch_size, self.seq_len = image_token_id, batch_size, seq_len
        self.rank, self.world_size, self.seed, self.fail_at = rank, world_size, seed, fail_at
        self.text_only_every = text_only_every
        self.position = 0
        self.served: list[int] = []

    def __iter__(self) -> StandInBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.fail_at is not None and self.position == self.fail_at:
            raise RuntimeError(f"simulated crash at data position {self.position}")
        index = self.position * self.world_size + self.rank  # global micro-batch index
        first = index * self.batch_size
        samples = [make_sample(self.seed, first + j, self.image_token_id, self.seq_len) for j in range(self.batch_size)]
        every = self.text_only_every
        batch = collate(samples, text_only=bool(every) and index % every == every - 1)
        self.served.append(self.position)
        self.position += 1
        batch["stats"] = {"skipped_corrupt": self.position // 3, "skipped_too_long": 0}
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(f"data state of rank {state['rank']}/{state['world_size']} given to {self.rank}")
        self.position = state["position"]
