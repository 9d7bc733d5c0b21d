"""Where did the answer look? The answer's cross-attention, mapped back onto the original image.

Shape legend
    T   tokens of prompt + answer    A   answer tokens (query rows kept)    H   cross-attention heads
    Dh  head dim                     S   keys of the image = K * L           K   crops: thumbnail + rows * cols windows
    L   tokens per crop (extra tokens such as CLS first, then g * g patches)  g   patch grid side of one crop
    Hi, Wi  the original image's height and width (EXIF orientation applied)

What is measured
----------------
One forward pass over ``prompt + answer`` (no generation). For each gated cross-attention block a forward hook on its
`MaskedCrossAttention` receives the exact ``(x, k, v, masks)`` the block used and recomputes, from the block's own
``norm`` and ``to_q``, the softmax it applies: ``softmax(q k^T / sqrt(Dh))`` under the same mask, in float32. These
are the model's weights (``probs @ v`` reproduces the block's attention output; tests/test_pictures.py checks it), not
a gradient or rollout approximation, and the normal forward is untouched: the hook only reads.

The rows kept are the positions that *produced* the answer: the last prompt token (which predicts answer token 1)
through the second-to-last answer token. That is where the model looked while choosing each answer token; the
last answer token's own query only predicts what comes after the answer. The kept probabilities are summed over
heads, rows and cross-attention layers into one mass per key (the total is ``H * A * layers``, every row sums to 1).

From keys to pixels
-------------------
Keys are laid out crop by crop (``media_packing``): crop 0 is the thumbnail, crops 1.. the windows row-major, each
``L`` tokens with the ViT's extra tokens first (the CLS token when ``keep_cls``) and then its ``g x g`` patches
row-major. Extra tokens summarise a whole crop and have no place, so their mass is dropped (reported in
`AnswerAttention.extra_token_mass`). Each patch is a rectangle of the original image:

* window patches: the windows tile the image resized to ``cols * ws x rows * ws``, which covers the whole original
  image, so together they form one ``rows*g x cols*g`` grid of equal cells over the original image;
* thumbnail patches: a ``g x g`` grid over the thumbnail's canvas; with ``thumbnail_mode="pad"`` the canvas is the
  image centred on a ``max(Wi, Hi)`` square (the reference offset ``(side - Wi) // 2``), so the grid is laid over that
  square and mass on the padding falls outside the image and is dropped (`AnswerAttention.outside_image_mass`); with
  ``"squash"`` the grid covers exactly the image.

Each patch's mass is spread uniformly over its rectangle, with exact fractional overlaps, so the mass landing on
the image is conserved: a pixel gets ``sum over patches covering it of mass * overlap / patch area`` (the *mass per
pixel area* of the thumbnail and of the windows, summed). The windows' cells are ``rows * cols`` times smaller than
the thumbnail's, so at equal mass a window's attention is that much denser: the map shows where attention mass
concentrates, not which crop was consulted. The returned map is normalised to **sum to 1** (a distribution over
pixels); `save_attention_overlay` rescales to its maximum for display.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from ..cross_attention_context import CrossAttentionInputs
from ..hires import TilePlan
from ..image_processing import ImageInput, load_image
from ..xattn import MaskedCrossAttention
from .prompts import render_prompt

__all__ = [
    "AnswerAttention",
    "answer_attention_map",
    "answer_cross_attention",
    "cross_attention_probabilities",
    "keys_to_pixels",
    "save_attention_overlay",
]


@dataclass
class AnswerAttention:
    """The answer's cross-attention and what is needed to place it on the image.

    Attributes:
        probs: layer index -> (H, A, S) float32 softmax weights of the kept query rows (see the module docstring).
        plan: the image's tiling plan (original size, grid, window size).
        grid_size: g, patches per side of one crop.
        tokens_per_crop: L, keys per crop (extra tokens first, then g * g patches).
        thumbnail_mode: "pad" or "squash", how the thumbnail was made.
        answer_ids: (A,) the answer's token ids as fed to the model.
    """

    probs: dict[int, torch.Tensor]
    plan: TilePlan
    grid_size: int
    tokens_per_crop: int
    thumbnail_mode: str
    answer_ids: list[int]

    def key_mass(self) -> torch.Tensor:
        """(S,) float64: the probabilities summed over heads, answer rows and layers."""
        return sum(p.double().sum(dim=(0, 1)) for p in self.probs.values())

    @property
    def extra_token_mass(self) -> float:
        """Share of the total mass on the crops' extra tokens (CLS), which the map leaves out."""
        mass = self.key_mass().view(self.plan.num_crops, self.tokens_per_crop)
        return float(mass[:, : self.tokens_per_crop - self.grid_size**2].sum() / mass.sum())

    @property
    def outside_image_mass(self) -> float:
        """Share of the total mass on thumbnail patches' padding (outside the image), which the map leaves out."""
        mass = self.key_mass()
        _, on_image = keys_to_pixels(mass, self.plan, self.grid_size, self.tokens_per_crop, self.thumbnail_mode)
        patches = mass.view(self.plan.num_crops, self.tokens_per_crop)[:, -(self.grid_size**2) :].sum()
        return float((patches - on_image) / mass.sum())


def cross_attention_probabilities(
    attn: MaskedCrossAttention, x: torch.Tensor, k: torch.Tensor, xattn: CrossAttentionInputs, rows: slice
) -> torch.Tensor:
    """The softmax weights `attn` applies, recomputed from its own modules for the query rows `rows`.

    x (B, T, D) text hidden states entering the block, k (Bc, H, S, Dh) its keys -> (B, H, len(rows), S) float32.
    Same masking as the block: `xattn.mask` (B, 1, T, S) on the dense path; on the varlen (FlashAttention) path,
    which has no dense mask, every non-padding key (exact for a single-image prompt, the only case used here).
    """
    B, Bc = x.shape[0], k.shape[0]
    q = attn.to_q(attn.norm(x[:, rows])).to(k.dtype)  # (B, A, H*Dh)
    q = rearrange(q, "b a (h d) -> b h a d", h=attn.heads).float()
    keys = k.float().repeat_interleave(B // Bc, dim=0)  # (B, H, S, Dh): prompt copies share a context row
    scores = q @ keys.transpose(-1, -2) * attn.head_dim**-0.5  # (B, H, A, S), SDPA's default scale
    if xattn.mask is not None:
        allowed = xattn.mask[:, :, rows]  # (B, 1, A, S)
    else:
        allowed = (xattn.context.key_media_index_per_row() > 0)[:, None, None, :]  # (B, 1, 1, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _answer_ids(processor, answer: str | Sequence[int]) -> list[int]:
    """The answer as token ids: given ids are used as they are (exact), text is tokenised without special tokens."""
    if isinstance(answer, str):
        ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        ids = [int(i) for i in answer]
    if not ids:
        raise ValueError("the answer is empty: the map shows where an answer's tokens looked, so pass some answer")
    return ids


@torch.no_grad()
def answer_cross_attention(
    model,
    processor,
    image: ImageInput,
    question: str,
    answer: str | Sequence[int],
    max_windows: int | None = None,
    system: str | None = None,
) -> AnswerAttention:
    """Run one forward over the prompt (as `answer` renders it) plus `answer`, recording every block's weights.

    `answer` is the answer text, or its token ids (exact: the ids `generate` produced, avoiding a re-tokenisation
    that may split the text differently). `max_windows` and `system` are those `answer` was called with, so the
    prompt is token for token the one that produced the answer.
    """
    image_processor = processor.image_processor
    pil = image_processor.load_image(image)  # oriented RGB: the map is over this image
    prompt = render_prompt(processor, question, system)
    inputs = processor(images=[pil], text=prompt, max_windows=max_windows, add_special_tokens=False)
    answer_ids = _answer_ids(processor, answer)
    prompt_ids = inputs["input_ids"][0]  # (P,)
    device = model.device
    input_ids = torch.cat([prompt_ids, torch.tensor(answer_ids, dtype=prompt_ids.dtype)])[None].to(device)  # (1, T)
    rows = slice(len(prompt_ids) - 1, input_ids.shape[1] - 1)  # the A positions that predict the answer's tokens

    probs: dict[int, torch.Tensor] = {}

    def recorder(layer_idx: int):
        def hook(module: MaskedCrossAttention, args: tuple, output: torch.Tensor) -> None:
            x, k, _, xattn = args
            probs[layer_idx] = cross_attention_probabilities(module, x, k, xattn, rows)[0].cpu()  # (H, A, S)

        return hook

    handles = [block.attn.register_forward_hook(recorder(idx)) for idx, block in model.cross_attention_blocks().items()]
    try:
        model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=inputs["pixel_values"].to(device),
            image_grids=inputs["image_grids"].to(device),
            use_cache=False,
            logits_to_keep=1,  # only the attention is wanted; skip the vocabulary-sized logits of every position
        )
    finally:
        for handle in handles:
            handle.remove()
    if len(probs) != len(model.config.cross_attention_layers):
        raise RuntimeError(
            f"recorded {len(probs)} of {len(model.config.cross_attention_layers)} cross-attention blocks; "
            "was the model run without the image?"
        )
    tower = model.vision_tower
    plan = image_processor.plan_image(pil, max_windows=max_windows)
    return AnswerAttention(
        probs=probs,
        plan=plan,
        grid_size=tower.grid_size,
        tokens_per_crop=tower.tokens_per_crop,
        thumbnail_mode=image_processor.thumbnail_mode,
        answer_ids=answer_ids,
    )


def _spread(edges: np.ndarray, pixels: int) -> np.ndarray:
    """(C+1,) cell edges in pixel units -> (C, pixels): the share of each cell lying on each pixel ``[p, p+1)``.

    Rows sum to 1 for cells inside ``[0, pixels]``, to less for cells hanging off the image (the part off it is lost).
    """
    lo, hi = edges[:-1, None], edges[1:, None]  # (C, 1)
    p = np.arange(pixels, dtype=np.float64)[None, :]  # (1, pixels)
    overlap = np.clip(np.minimum(hi, p + 1) - np.maximum(lo, p), 0.0, None)  # (C, pixels)
    return overlap / (hi - lo)


def keys_to_pixels(
    key_mass: torch.Tensor | np.ndarray,
    plan: TilePlan,
    grid_size: int,
    tokens_per_crop: int,
    thumbnail_mode: str = "pad",
) -> tuple[np.ndarray, float]:
    """(S,) mass per key -> ((Hi, Wi) float64 mass per pixel, total mass that landed on the image).

    Unnormalised and mass-conserving: the map sums to the patch mass, less the thumbnail padding's share (see the
    module docstring for the geometry).

    >>> from infimm_hd.hires import plan_tiles
    >>> plan = plan_tiles(896, 448)  # 1 x 2 windows
    >>> mass = np.zeros((3, 5)); mass[2, 1:] = 1.0  # 3 crops of CLS + 2x2 patches; all on the right window
    >>> heat, total = keys_to_pixels(mass.ravel(), plan, grid_size=2, tokens_per_crop=5)
    >>> float(heat[:, :448].sum()), float(heat[:, 448:].sum()), total
    (0.0, 4.0, 4.0)
    """
    mass = np.asarray(key_mass, dtype=np.float64)
    g, L = grid_size, tokens_per_crop
    if mass.shape != (plan.num_crops * L,):
        raise ValueError(
            f"key mass has shape {mass.shape} but the plan's {plan.num_crops} crops x {L} tokens need "
            f"({plan.num_crops * L},); is the plan the one the image was processed with?"
        )
    if g * g > L:
        raise ValueError(f"tokens_per_crop {L} is less than the {g}x{g} patch grid")
    patches = mass.reshape(plan.num_crops, L)[:, L - g * g :].reshape(plan.num_crops, g, g)  # (K, g, g), extras off
    W, H = plan.width, plan.height

    if thumbnail_mode == "pad":
        side = max(W, H)
        x_edges = np.linspace(0, side, g + 1) - (side - W) // 2
        y_edges = np.linspace(0, side, g + 1) - (side - H) // 2
    elif thumbnail_mode == "squash":
        x_edges, y_edges = np.linspace(0, W, g + 1), np.linspace(0, H, g + 1)
    else:
        raise ValueError(f"unknown thumbnail_mode {thumbnail_mode!r}; expected 'pad' or 'squash'")
    heat = _spread(y_edges, H).T @ patches[0] @ _spread(x_edges, W)  # (Hi, g) @ (g, g) @ (g, Wi)

    if not plan.thumbnail_only:
        windows = rearrange(patches[1:], "(r c) i j -> (r i) (c j)", r=plan.rows, c=plan.cols)  # (rows*g, cols*g)
        x_edges = np.linspace(0, W, plan.cols * g + 1)
        y_edges = np.linspace(0, H, plan.rows * g + 1)
        heat = heat + _spread(y_edges, H).T @ windows @ _spread(x_edges, W)  # (Hi, Wi)
    return heat, float(heat.sum())


def answer_attention_map(
    model,
    processor,
    image: ImageInput,
    question: str,
    answer: str | Sequence[int],
    max_windows: int | None = None,
    system: str | None = None,
) -> np.ndarray:
    """(Hi, Wi) float32 map over the original image of where `answer`'s tokens attended; sums to 1.

    Summed over heads, the answer's query rows and every cross-attention layer, then mapped through the windows and
    the thumbnail (module docstring). `answer` may be text or the generated token ids.
    """
    record = answer_cross_attention(model, processor, image, question, answer, max_windows, system)
    heat, total = keys_to_pixels(
        record.key_mass(), record.plan, record.grid_size, record.tokens_per_crop, record.thumbnail_mode
    )
    if not total > 0:
        raise RuntimeError("no cross-attention mass landed on the image (all of it on CLS tokens or padding)")
    return (heat / total).astype(np.float32)


# -- drawing ----------------------------------------------------------------------------------------------------

# matplotlib's "inferno" sampled at 0, 1/16, ..., 1 (8-bit RGB), for the PIL-only fallback; within ~6 levels of it.
_INFERNO = np.array(
    [
        [0, 0, 4], [11, 7, 36], [33, 12, 74], [61, 9, 101], [87, 16, 110], [113, 25, 110], [138, 34, 106],
        [163, 44, 97], [188, 55, 84], [210, 70, 68], [228, 90, 49], [241, 115, 29], [249, 142, 9], [252, 172, 17],
        [249, 203, 53], [242, 234, 105], [252, 255, 164],
    ],
    dtype=np.float64,
)  # fmt: skip


def _colormap(values: np.ndarray) -> np.ndarray:
    """(...) values in [0, 1] -> (..., 3) uint8 RGB: matplotlib's inferno when installed, else its stops above."""
    try:
        from matplotlib import colormaps

        return (colormaps["inferno"](values)[..., :3] * 255).round().astype(np.uint8)
    except ImportError:
        stops = np.linspace(0, 1, len(_INFERNO))
        rgb = [np.interp(values, stops, _INFERNO[:, c]) for c in range(3)]
        return np.stack(rgb, axis=-1).round().astype(np.uint8)


def relative_density(heat: np.ndarray) -> np.ndarray:
    """(Hi, Wi) map -> the same map in multiples of uniform attention (1 = every pixel equally attended).

    Why this unit: it is independent of image size and of how the map was normalised, and it reads directly
    ("this region got 5x its share"), where a raw per-pixel probability of a 6 MP photo is a meaningless 1e-7.
    """
    total = heat.sum()
    if not total > 0:
        raise ValueError("the heat map is all zeros; nothing to draw")
    return heat * (heat.size / total)


def blend_heat(image: Image.Image, heat: np.ndarray, lo: float, hi: float) -> Image.Image:
    """The image dimmed to grey under the heat map's colours, `lo`..`hi` mapped to the whole colour scale.

    heat (Hi, Wi). Opacity grows with the heat (15% to 75%), so cold regions keep their detail. Why grey: the colour
    scale stays readable on any photo.
    """
    if heat.shape != (image.height, image.width):
        raise ValueError(f"heat map is {heat.shape} but the image is {(image.height, image.width)} (H, W)")
    rel = np.clip((heat - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(heat.shape, 0.5)  # (Hi, Wi)
    grey = np.asarray(image.convert("L"), dtype=np.float64)[..., None] * 0.7  # (Hi, Wi, 1)
    alpha = (0.15 + 0.6 * rel)[..., None]  # (Hi, Wi, 1)
    out = grey * (1 - alpha) + _colormap(rel).astype(np.float64) * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")


def _ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Five (position in [0, 1], label) colour-bar ticks for the range lo..hi, in multiples of uniform."""
    step = (hi - lo) / 4
    digits = 1 if step <= 0 else min(4, max(1, -math.floor(math.log10(step))))  # neighbouring labels differ
    return [(f, f"{lo + f * (hi - lo):.{digits}f}x") for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def save_attention_overlay(image: ImageInput, heat: np.ndarray, path: str | Path, title: str | None = None) -> Path:
    """Write the heat map blended over the image with a colour bar to `path` (PNG); returns the path.

    heat (Hi, Wi) as returned by `answer_attention_map` (any positive scale). The colour bar is in multiples of
    uniform attention (`relative_density`) and spans the map's own minimum to maximum, so a nearly flat map (an
    untrained model) shows its small differences with labels that say how small they are. With matplotlib
    installed the figure is drawn by it (no pyplot state is touched); otherwise with PIL only, same colours.
    `title` (e.g. the question and answer) is written above the picture, wrapped to its width and cut after
    `TITLE_LINES` lines (a long answer must not make the figure wider than the image).
    """
    image = load_image(image)
    density = relative_density(np.asarray(heat, dtype=np.float64))
    lo, hi = float(density.min()), float(density.max())
    blended = blend_heat(image, density, lo, hi)
    path = Path(path)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError:
        _save_overlay_pil(blended, path, _title_lines(title, max(20, image.width // 8)), _ticks(lo, hi))
        return path
    dpi = 100
    scale = min(1.0, 1200 / max(image.size))  # at most 12 inches across
    img_w, img_h = image.width * scale / dpi, image.height * scale / dpi
    lines = _title_lines(title, max(30, int(img_w * 13)))  # ~13 characters per inch at 11 pt
    title_h = 0.1 + 0.2 * len(lines) if lines else 0.0
    fig_w, fig_h = img_w + 1.3, img_h + title_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, img_w / fig_w, img_h / fig_h))
    ax.imshow(np.asarray(blended), interpolation="antialiased")
    ax.set_axis_off()
    if lines:
        fig.text(0.005, 1 - 0.5 * title_h / fig_h, "\n".join(lines), fontsize=11, va="center")
    cax = fig.add_axes(((img_w + 0.12) / fig_w, 0.0, 0.18 / fig_w, img_h / fig_h))
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1e-9), cmap="inferno"), cax=cax)
    bar.set_label("attention density (x uniform)")
    bar.set_ticks([lo + f * (hi - lo) for f, _ in _ticks(lo, hi)], labels=[t for _, t in _ticks(lo, hi)])
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return path


TITLE_LINES = 3


def _title_lines(title: str | None, width: int) -> list[str]:
    """`title` wrapped to `width` characters, at most `TITLE_LINES` lines, the last one ending in an ellipsis if cut."""
    if not title:
        return []
    lines = textwrap.wrap(" ".join(title.split()), width=width) or [title.strip()]
    if len(lines) > TITLE_LINES:
        lines = lines[:TITLE_LINES]
        lines[-1] = lines[-1][: width - 3].rstrip() + "..."
    return lines


def _font(size: int):
    """Pillow's bundled font at `size` px; the bitmap font when Pillow has no FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _legend(height: int, font, ticks: list[tuple[float, str]]) -> Image.Image:
    """A vertical colour bar (maximum at the top) with `ticks`, as a PIL image `height` px tall."""
    bar_w, pad = 22, 10
    width = bar_w + 3 * pad + max(int(font.getlength(label)) for _, label in ticks) + 6
    legend = Image.new("RGB", (width, height), (255, 255, 255))
    top, bottom = pad, max(pad + 2, height - pad)
    ramp = np.linspace(1, 0, bottom - top)[:, None].repeat(bar_w, axis=1)  # (h, bar_w)
    legend.paste(Image.fromarray(_colormap(ramp), "RGB"), (pad, top))
    draw = ImageDraw.Draw(legend)
    draw.rectangle((pad - 1, top - 1, pad + bar_w, bottom), outline=(40, 40, 40))
    for frac, label in ticks:
        y = round(bottom - frac * (bottom - top))
        draw.line((pad + bar_w, y, pad + bar_w + 4, y), fill=(40, 40, 40))
        draw.text((pad + bar_w + 7, y - 7), label, font=font, fill=(40, 40, 40))
    return legend


def _save_overlay_pil(blended: Image.Image, path: Path, lines: list[str], ticks: list[tuple[float, str]]) -> None:
    """The PIL-only figure: title strip, blended image, colour bar (x uniform) on the right."""
    font = _font(14)
    title_h = 8 + 18 * len(lines) if lines else 0
    legend = _legend(blended.height, font, ticks)
    canvas = Image.new("RGB", (blended.width + legend.width, blended.height + title_h), (255, 255, 255))
    canvas.paste(blended, (0, title_h))
    canvas.paste(legend, (blended.width, title_h))
    if lines:
        ImageDraw.Draw(canvas).text((6, 4), "\n".join(lines), font=font, fill=(20, 20, 20), spacing=4)
    canvas.save(path)
