"""CLIP normalisation: the fast path's fused batch normalisation, and the reference's per-crop `normalize`.

`_normalised_batch` is step 5 of the fast path: every crop copied once from uint8 into one float32 (N, S, S, 3)
batch in memory recycled from earlier outputs (`recycled_buffers`), then normalised in place by one fused
multiply-add pass. `normalize` is the textbook formula on one PIL crop, for the reference path and existing
callers. Shapes as in the package docstring's legend.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..hires import TilePlan
from ..recycled_buffers import OUTPUT_BUFFERS

# OpenAI-CLIP normalisation, used by EVA-CLIP and the official InfiMM code.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _normalised_batch(
    plans: list[TilePlan],
    crops: list[tuple[torch.Tensor, torch.Tensor]],
    window_size: int,
    image_mean: tuple[float, float, float],
    image_std: tuple[float, float, float],
) -> torch.Tensor:
    """Per image (thumbnail (1, 3, S, S), grid (1, 3, rows*S, cols*S)) uint8 -> pixel_values (N, 3, S, S) float32.

    Windows are cut here, as strided views of each grid, in prompt order (per image: thumbnail, then windows
    row-major). One copy per crop into one recycled float32 buffer, then one fused pass normalises all of it: the
    cheapest way measured to make the batch (package docstring, 5.).
    """
    ws = window_size
    # (N, S, S, 3) memory, handed out as an (N, 3, S, S) channels-last view: see the package docstring (5.).
    pixels_hwc = OUTPUT_BUFFERS.empty_float32((sum(p.num_crops for p in plans), ws, ws, 3))
    start = 0
    for plan, (thumbnail, grid) in zip(plans, crops, strict=True):
        pixels_hwc[start].copy_(thumbnail[0].permute(1, 2, 0))  # uint8 -> float32, (S, S, 3)
        if plan.thumbnail_only:
            start += 1
            continue
        windows = pixels_hwc[start + 1 : start + plan.num_crops].view(plan.rows, plan.cols, ws, ws, 3)
        # (rows*S, cols*S, 3) -> (rows, cols, S, S, 3): a strided view whose rows of S*3 bytes are contiguous
        grid_hwc = grid[0].permute(1, 2, 0)
        windows.copy_(grid_hwc.unflatten(0, (plan.rows, ws)).unflatten(2, (plan.cols, ws)).permute(0, 2, 1, 3, 4))
        start += plan.num_crops
    # (x / 255 - mean) / std as x * 1/(255 std) - mean/std: one fused pass over rows of S pixels x 3 channels
    scale = torch.tensor([1.0 / (255.0 * s) for s in image_std], dtype=torch.float32).repeat(ws)  # (S*3,)
    shift = torch.tensor([-m / s for m, s in zip(image_mean, image_std, strict=True)]).repeat(ws)
    rows = pixels_hwc.view(-1, ws * 3)  # (N*S, S*3)
    torch.addcmul(shift.float(), rows, scale, out=rows)
    return pixels_hwc.permute(0, 3, 1, 2)  # (N, 3, S, S), channels-last strides


def normalize(
    crop: Image.Image, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """RGB PIL crop -> (3, S, S) float32 tensor normalised with the CLIP mean/std."""
    array = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (array - m) / s
