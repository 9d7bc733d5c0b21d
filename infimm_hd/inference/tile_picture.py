"""`infimm-hd show-tiles`: a picture of how an image is cut into a thumbnail and a grid of windows.

    infimm-hd show-tiles photo.jpg -o tiles.png                    # default budget: 9 windows of 448 px
    infimm-hd show-tiles photo.jpg -o tiles.png --max-windows 16   # the inference budget of the presets
    infimm-hd show-tiles photo.jpg -o tiles.png --max-windows 0    # thumbnail only

The picture has three parts:

* the image itself (scaled for display) with the window boundaries drawn where they fall on the *original* image:
  the windows are cut from the image resized to ``cols * window_size`` x ``rows * window_size``, so boundary ``c``
  lies at ``c * width / cols`` original pixels (never at ``c * window_size`` unless the image was not resized), and a
  number in each window giving its crop index (crop 0 is the thumbnail, windows follow row-major as the ViT sees them);
* a side panel with the thumbnail as the model sees it (padded to a square with the CLIP mean colour, or squashed);
* a caption with the plan: original size and aspect, grid, resized size, the per-axis resize factors (a factor
  below 1 means the image was shrunk to fit the window budget; unequal factors mean it was stretched) and the crop
  count.

Only the plan (`hires.plan_tiles`) is drawn; nothing here runs a model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..hires import CLIP_MEAN_RGB, TilePlan, plan_tiles
from ..image_processing import ImageInput, load_image

__all__ = ["GRID_COLOR", "GRID_LINE_WIDTH", "draw_tiles", "grid_lines", "main"]

GRID_COLOR = (255, 200, 0)  # amber: visible on photos of any colour, with a dark edge for light backgrounds
EDGE_COLOR = (25, 25, 25)
GRID_LINE_WIDTH = 3  # odd, so a line is centred on its boundary pixel; displays are 512-1600 px, one width fits
PANEL_COLOR = (248, 247, 244)
TEXT_COLOR = (30, 30, 30)
MUTED_TEXT = (95, 95, 95)
MIN_DISPLAY_SIDE = 512  # small images are enlarged (nearest) so labels and lines stay legible
MAX_DISPLAY_SIDE = 1600  # large photos are shrunk so the PNG stays a sensible size


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px; the fixed bitmap font when Pillow was built without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def display_scale(width: int, height: int, max_side: int = MAX_DISPLAY_SIDE) -> float:
    """Factor from original to displayed pixels: 1 for ordinary sizes, < 1 for big photos, > 1 for tiny images."""
    longest = max(width, height)
    if longest > max_side:
        return max_side / longest
    if longest < MIN_DISPLAY_SIDE:
        return MIN_DISPLAY_SIDE / longest
    return 1.0


def grid_lines(plan: TilePlan, scale: float = 1.0) -> tuple[list[int], list[int]]:
    """Interior window boundaries in displayed pixels: (x of each column boundary, y of each row boundary).

    The windows tile the image resized to the grid, which maps onto the whole original image, so boundary ``c`` of
    ``cols`` is at ``c * width / cols`` original pixels, times `scale`.

    >>> grid_lines(plan_tiles(1344, 896))
    ([448, 896], [448])
    >>> grid_lines(plan_tiles(1000, 500))  # resized to 896x448: the boundary is at the original image's middle
    ([500], [])
    """
    xs = [round(c * plan.width / plan.cols * scale) for c in range(1, plan.cols)]
    ys = [round(r * plan.height / plan.rows * scale) for r in range(1, plan.rows)]
    return xs, ys


def _line_box(center: int, width: int) -> tuple[int, int]:
    """First and last pixel of a `width`-px line centred on pixel `center` (inclusive, as PIL draws rectangles)."""
    first = center - width // 2
    return first, first + width - 1


def _caption(plan: TilePlan, max_windows: int, thumbnail_mode: str) -> list[str]:
    """The plan in words: sizes, grid, resize factors, crops."""
    w, h = plan.width, plan.height
    head = f"original {w}x{h} (aspect {w / h:.2f})"
    if plan.thumbnail_only:
        return [
            f"{head}; thumbnail only (max_windows=0): the model sees 1 crop of {plan.window_size} px",
            f"thumbnail: {'padded to a square with the mean colour' if thumbnail_mode == 'pad' else 'squashed'}",
        ]
    rw, rh = plan.resized_size
    sx, sy = rw / w, rh / h
    stretch = sx / sy - 1
    shape = "kept" if abs(stretch) < 5e-4 else f"stretched {stretch:+.1%} in x vs y"
    return [
        f"{head} -> {plan.rows} row{'s' * (plan.rows > 1)} x {plan.cols} col{'s' * (plan.cols > 1)} of "
        f"{plan.window_size}-px windows, resized to {rw}x{rh} (aspect {rw / rh:.2f}, {shape})",
        f"resize x {sx:.3f}, y {sy:.3f}; {plan.num_crops} crops to the ViT: thumbnail (crop 0) + "
        f"{plan.num_windows} window{'s' * (plan.num_windows > 1)} "
        f"({'crop 1' if plan.num_windows == 1 else f'crops 1-{plan.num_windows}, row-major'}); "
        f"budget max_windows={max_windows}",
    ]


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap of one caption line to `width` px."""
    lines, current = [], ""
    for word in text.split(" "):
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + [current]


def _thumbnail_view(image: Image.Image, side: int, thumbnail_mode: str) -> Image.Image:
    """The thumbnail as the model sees it, at `side` px: the image centred on a mean-colour square, or squashed.

    Same geometry as `hires.tile_image`, computed at display size (a 20000x1 strip's 20000-px canvas is never built).
    """
    w, h = image.size
    if thumbnail_mode == "squash":
        return image.resize((side, side), Image.Resampling.BICUBIC)
    fit = side / max(w, h)
    inner = image.resize((max(1, round(w * fit)), max(1, round(h * fit))), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (side, side), CLIP_MEAN_RGB)
    canvas.paste(inner, ((side - inner.width) // 2, (side - inner.height) // 2))
    return canvas


def draw_tiles(
    image: ImageInput,
    window_size: int = 448,
    max_windows: int = 9,
    thumbnail_mode: str = "pad",
    max_display_side: int = MAX_DISPLAY_SIDE,
) -> Image.Image:
    """The tiling plan drawn over `image`: window grid with crop numbers, thumbnail panel, caption. RGB.

    `image` is anything `image_processing.load_image` reads (EXIF orientation applied, as the processor does). The
    image sits at the top left; at display scale 1 (images whose longest side is 512-1600 px) a boundary at
    original pixel ``x`` is drawn centred on column ``x`` of the returned picture (see `grid_lines`).
    """
    if thumbnail_mode not in ("pad", "squash"):
        raise ValueError(f"unknown thumbnail_mode {thumbnail_mode!r}; expected 'pad' or 'squash'")
    image = load_image(image)
    plan = plan_tiles(image.width, image.height, window_size=window_size, max_windows=max_windows)
    scale = display_scale(plan.width, plan.height, max_display_side)
    dw, dh = max(1, round(plan.width * scale)), max(1, round(plan.height * scale))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    shown = image if scale == 1 else image.resize((dw, dh), resample)

    unit = max(dw, dh) / 100  # sizes of lines, fonts and margins follow the displayed image
    line = GRID_LINE_WIDTH
    margin = max(12, round(unit * 1.5))
    thumb_side = int(min(448, max(160, 0.45 * dh)))
    side_w = thumb_side + 2 * margin
    body_font, small_font = _font(max(14, round(unit * 1.4))), _font(max(12, round(unit * 1.1)))
    text_w = dw + side_w - 2 * margin
    caption = [w for text in _caption(plan, max_windows, thumbnail_mode) for w in _wrap(text, body_font, text_w)]
    line_h = round(body_font.size * 1.35) if hasattr(body_font, "size") else 16
    caption_h = 2 * margin + line_h * len(caption)
    canvas = Image.new("RGB", (dw + side_w, max(dh, thumb_side + 6 * line_h) + caption_h), PANEL_COLOR)
    canvas.paste(shown, (0, 0))

    # Window boundaries: a dark edge, then the amber line on top, so the grid reads on light and dark photos alike.
    draw = ImageDraw.Draw(canvas)
    xs, ys = ([], []) if plan.thumbnail_only else grid_lines(plan, scale)
    for x in xs:
        a, b = _line_box(x, line)
        draw.rectangle((a - 1, 0, b + 1, dh - 1), fill=EDGE_COLOR)
    for y in ys:
        a, b = _line_box(y, line)
        draw.rectangle((0, a - 1, dw - 1, b + 1), fill=EDGE_COLOR)
    for x in xs:
        a, b = _line_box(x, line)
        draw.rectangle((a, 0, b, dh - 1), fill=GRID_COLOR)
    for y in ys:
        a, b = _line_box(y, line)
        draw.rectangle((0, a, dw - 1, b), fill=GRID_COLOR)
    draw.rectangle((0, 0, dw - 1, dh - 1), outline=GRID_COLOR if not plan.thumbnail_only else EDGE_COLOR, width=line)

    # Crop numbers on translucent badges (drawn on an overlay so the photo shows through them).
    if not plan.thumbnail_only:
        overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        badge = ImageDraw.Draw(overlay)
        cell = min(dw / plan.cols, dh / plan.rows)
        label_font = _font(int(min(max(12, cell * 0.12), 64)))
        col_edges, row_edges = [0, *xs, dw], [0, *ys, dh]
        for index in range(plan.num_windows):
            r, c = divmod(index, plan.cols)
            text = str(index + 1)
            pad = max(3, label_font.size // 5) if hasattr(label_font, "size") else 3
            left, top = col_edges[c] + line + 2 * pad, row_edges[r] + line + 2 * pad
            box = badge.textbbox((left, top), text, font=label_font)
            badge.rounded_rectangle(
                (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), radius=pad, fill=(0, 0, 0, 150)
            )
            badge.text((left, top), text, font=label_font, fill=(255, 255, 255, 255))
        canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
        draw = ImageDraw.Draw(canvas)

    # Side panel: the thumbnail, crop 0.
    px, py = dw + margin, margin
    draw.text((px, py), "thumbnail = crop 0", font=body_font, fill=TEXT_COLOR)
    py += line_h + margin // 2
    canvas.paste(_thumbnail_view(image, thumb_side, thumbnail_mode), (px, py))
    draw.rectangle((px - 1, py - 1, px + thumb_side, py + thumb_side), outline=EDGE_COLOR)
    py += thumb_side + margin // 2
    how = "whole image, padded to a square" if thumbnail_mode == "pad" else "whole image, squashed to a square"
    for text in (f"{window_size}x{window_size}: {how}", "windows: numbered in ViT order"):
        for wrapped in _wrap(text, small_font, thumb_side):
            draw.text((px, py), wrapped, font=small_font, fill=MUTED_TEXT)
            py += line_h

    # Caption under everything.
    cy = canvas.height - caption_h + margin
    draw.line((margin, cy - margin // 2, canvas.width - margin, cy - margin // 2), fill=(210, 208, 200), width=1)
    for text in caption:
        draw.text((margin, cy), text, font=body_font, fill=TEXT_COLOR)
        cy += line_h
    return canvas


def main(argv: list[str] | None = None) -> int:
    """`infimm-hd show-tiles IMAGE -o tiles.png [--max-windows N] [--window-size N]`; 2 on a bad image or option."""
    parser = argparse.ArgumentParser(
        prog="infimm-hd show-tiles",
        description="Draw how an image is cut into a thumbnail and a grid of windows (PNG).",
    )
    parser.add_argument("image", help="image file (any format Pillow reads)")
    parser.add_argument("-o", "--output", required=True, help="where to write the picture (e.g. tiles.png)")
    parser.add_argument("--max-windows", type=int, default=9, help="window budget; 0 = thumbnail only (default 9)")
    parser.add_argument("--window-size", type=int, default=448, help="crop side in pixels (default 448)")
    parser.add_argument("--thumbnail-mode", choices=("pad", "squash"), default="pad")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    if not Path(args.image).is_file():
        print(f"error: cannot read image {args.image!r}: no such file", file=sys.stderr)
        return 2
    try:
        image = load_image(args.image)
    except (ValueError, OSError) as err:
        print(f"error: cannot read image {args.image!r}: {err}", file=sys.stderr)
        return 2
    try:
        picture = draw_tiles(image, args.window_size, args.max_windows, args.thumbnail_mode)
        plan = plan_tiles(image.width, image.height, args.window_size, args.max_windows)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        picture.save(args.output)
    except (ValueError, OSError) as err:  # unknown extension, missing folder, read-only place
        print(f"error: cannot write {args.output!r}: {err}", file=sys.stderr)
        return 2
    grid = "thumbnail only" if plan.thumbnail_only else f"{plan.rows}x{plan.cols} windows of {plan.window_size} px"
    print(f"wrote {args.output}: {plan.width}x{plan.height} -> {grid} ({plan.num_crops} crops)")
    return 0
