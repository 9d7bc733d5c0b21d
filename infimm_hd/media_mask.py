"""Which text token may look at which vision key: pure functions over token ids and key media indices.

Shape legend
    B   text rows in the batch          T   text tokens in this forward call
    S   vision keys per context row     (all crop tokens of all images of a sample, padded)

Every `<image>` token opens a media item; the images of a sample are numbered 1, 2, ... in the order of their
`<image>` tokens. A token's *text time* is the number of `<image>` tokens at or before it (the `<image>` token itself
belongs to its image, as in the official code). With `only_attend_immediate_media` a token attends only to the keys of
media `text_time`; otherwise to every media `<= text_time`. Tokens with text time 0 (before any image, or in a
sample without images) attend to nothing and must get exactly zero from the whole gated block.
"""

from __future__ import annotations

import torch


def text_time(input_ids: torch.Tensor, image_token_id: int, media_seen: torch.Tensor | None = None) -> torch.Tensor:
    """Media index each token attends to (0 = none yet).

    `media_seen` (B,) counts the `<image>` tokens already consumed by earlier calls (KV-cached decoding), so a
    decode step keeps attending to the last image of its prompt.

    >>> text_time(torch.tensor([[7, 9, 7, 1, 9, 2]]), image_token_id=9).tolist()
    [[0, 1, 1, 1, 2, 2]]
    """
    times = (input_ids == image_token_id).long().cumsum(dim=-1)  # (B, T)
    if media_seen is not None:
        times = times + media_seen.to(times.device)[:, None]
    return times


def cross_attention_mask(
    times: torch.Tensor, key_media_index: torch.Tensor, only_immediate: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean attention mask and the rows that attend to anything.

    Args:
        times: (B, T) text time of each token (see `text_time`).
        key_media_index: (B, S) media number of each key, 1-based; 0 marks padding keys.
        only_immediate: attend to the latest image only (paper) or to every image so far.

    Returns:
        mask: (B, 1, T, S) True where the token may attend to the key. Rows with no allowed key are set to all
            True so the softmax stays finite; `row_has_media` zeroes their output afterwards.
        row_has_media: (B, T, 1) True for tokens that have an image to look at.
    """
    t = times[:, :, None]  # (B, T, 1)
    k = key_media_index[:, None, :]  # (B, 1, S)
    allowed = (k == t) if only_immediate else ((k <= t) & (k > 0))  # (B, T, S)
    allowed = allowed & (t > 0)
    row_has_media = allowed.any(dim=-1, keepdim=True)  # (B, T, 1)
    mask = allowed | ~row_has_media  # finite softmax on empty rows; their output is discarded
    return mask[:, None], row_has_media
