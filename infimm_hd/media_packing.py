"""Turn a batch's flat list of crops into per-prompt key sequences for cross-attention (pure tensor functions).

Shape legend
    N   crops in the batch (all images, thumbnail first then windows row-major, images in prompt order)
    L   tokens per crop            Dv  vision width
    I   images in the batch        B   prompts          S   keys per prompt (padded to the longest prompt)

The processor hands the model every crop of every image flattened into one `pixel_values` (N, 3, 448, 448) plus
the (rows, cols) grid of each image, so the ViT batch has no padding however the window counts differ. All crop
tokens of one image form one media item; a prompt's keys are its images' tokens concatenated, and padding keys
are marked with media index 0 so they are masked out.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from .hires import window_position_embedding


def crops_per_image(image_grids: torch.Tensor) -> torch.Tensor:
    """(I, 2) (rows, cols) -> (I,) crops per image: the windows plus the thumbnail."""
    return image_grids[:, 0] * image_grids[:, 1] + 1


def add_window_positions(tokens: torch.Tensor, image_grids: torch.Tensor) -> torch.Tensor:
    """Add each crop's fixed 2D sin-cos window embedding to all of its tokens.

    tokens (N, L, Dv), image_grids (I, 2) -> (N, L, Dv). The thumbnail's embedding is zero (see `hires`).
    """
    dim = tokens.shape[-1]
    tables: dict[tuple[int, int], torch.Tensor] = {}
    per_crop = []
    for rows, cols in image_grids.tolist():
        if (rows, cols) not in tables:
            tables[(rows, cols)] = window_position_embedding(rows, cols, dim)
        per_crop.append(tables[(rows, cols)])
    pe = torch.cat(per_crop).to(device=tokens.device, dtype=tokens.dtype)  # (N, Dv)
    return tokens + pe[:, None, :]


def pack_media(
    tokens: torch.Tensor, image_grids: torch.Tensor, images_per_prompt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group crop tokens into one padded key sequence per prompt.

    Args:
        tokens: (N, L, Dv) crop tokens, crops of image 0 first (thumbnail, windows...), then image 1, ...
        image_grids: (I, 2) grid of each image, images ordered by prompt then by `<image>` position.
        images_per_prompt: (B,) number of images of each prompt (sums to I).

    Returns:
        media: (B, S, Dv) keys, zero-padded.
        key_media_index: (B, S) 1-based image number within its prompt; 0 for padding.
    """
    B = images_per_prompt.shape[0]
    L, device = tokens.shape[1], tokens.device
    keys_per_image = crops_per_image(image_grids) * L  # (I,)
    prompt_of_image = torch.repeat_interleave(torch.arange(B, device=device), images_per_prompt.to(device))
    first_image_of_prompt = torch.cumsum(images_per_prompt, 0) - images_per_prompt  # (B,)
    local_index = torch.arange(len(image_grids), device=device) - first_image_of_prompt.to(device)[prompt_of_image]
    key_index = torch.repeat_interleave(local_index + 1, keys_per_image.to(device))  # (I * keys,)

    keys_per_prompt = torch.zeros(B, dtype=torch.long, device=device)
    keys_per_prompt.index_add_(0, prompt_of_image, keys_per_image.to(device))
    flat = tokens.reshape(-1, tokens.shape[-1])  # (N * L, Dv)
    splits = keys_per_prompt.tolist()
    media = pad_sequence(list(flat.split(splits)), batch_first=True)  # (B, S, Dv)
    key_media_index = pad_sequence(list(key_index.split(splits)), batch_first=True)  # (B, S)
    return media, key_media_index
