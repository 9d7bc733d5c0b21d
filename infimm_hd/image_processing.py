"""Images in, crops out: decode any image input, plan its tiles, and normalise the crops for the ViT.

Shape legend
    N   crops of all images (thumbnail first, then windows row-major, image after image)
    I   images              S   window size (448)

This module is the pure core of the image processor: the Hugging Face `BaseImageProcessor` wrapper (EXIF, every PIL
mode, pixel budgets, saving) builds on it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .hires import TilePlan, plan_tiles, tile_image

# OpenAI-CLIP normalisation, used by EVA-CLIP and the official InfiMM code.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageInput = Image.Image | np.ndarray | torch.Tensor | str | Path | bytes


def load_image(image: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image; a clear `ValueError` for what cannot be decoded or is empty."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        image = path.read_bytes()
    if isinstance(image, bytes):
        try:
            image = Image.open(io.BytesIO(image))
            image.load()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot decode image bytes ({len(image)} bytes): {err}") from err
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)  # CHW -> HWC
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ValueError(f"image array has zero size: shape {image.shape}")
        if image.dtype != np.uint8:
            scale = 255.0 if image.max() <= 1.0 else 1.0
            image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
        image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"unsupported image input of type {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has zero size: {image.width}x{image.height}")
    return image if image.mode == "RGB" else image.convert("RGB")


def normalize(
    crop: Image.Image, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """RGB PIL crop -> (3, S, S) float32 tensor normalised with the CLIP mean/std."""
    array = torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (array - m) / s


@dataclass
class ProcessedImages:
    """pixel_values (N, 3, S, S), image_grids (I, 2) as (rows, cols), and the plans that made them."""

    pixel_values: torch.Tensor
    image_grids: torch.Tensor
    plans: list[TilePlan]


def process_images(
    images: list[ImageInput],
    window_size: int = 448,
    max_windows: int = 9,
    thumbnail_mode: str = "pad",
) -> ProcessedImages:
    """Decode, tile and normalise a flat list of images (in prompt order)."""
    crops: list[torch.Tensor] = []
    plans: list[TilePlan] = []
    for image in images:
        pil = load_image(image)
        plan = plan_tiles(pil.width, pil.height, window_size=window_size, max_windows=max_windows)
        crops.extend(normalize(c) for c in tile_image(pil, plan, thumbnail_mode=thumbnail_mode))
        plans.append(plan)
    if not crops:
        empty = torch.empty(0, 3, window_size, window_size)
        return ProcessedImages(empty, torch.empty(0, 2, dtype=torch.long), [])
    grids = torch.tensor([[p.rows, p.cols] for p in plans], dtype=torch.long)
    return ProcessedImages(torch.stack(crops), grids, plans)
