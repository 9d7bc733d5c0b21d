"""`InfiMMHDImageProcessor`, the Hugging Face image processor, and the functional wrappers kept for callers.

The class holds and validates the settings (saved as ``preprocessor_config.json``, whose ``image_processor_type``
is the class name: `auto_registration` maps it back to this class, wherever the class lives) and runs the steps
the other modules of the package hold: open the input (`decoding`), plan its tiles (`hires.plan_tiles`), decode
as small as the plan allows (`scaled_decode`), make the grid image and thumbnail (`tiling`), and normalise every
crop into one batch (`normalisation`). `reference_preprocess` is the straightforward path, kept as the
specification. The package docstring says what is guaranteed and how the fast path differs from the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from ..hires import TilePlan, plan_tiles, tile_image
from .decoding import DEFAULT_MAX_PIXELS, ImageInput, _flatten, _image_errors, _load_full_rgb, _open_input, _Opened
from .normalisation import CLIP_MEAN, CLIP_STD, _normalised_batch, normalize
from .scaled_decode import _decode_for_plan, _Decoded
from .tiling import THUMBNAIL_MODES, _tile_decoded


@dataclass
class ProcessedImages:
    """pixel_values (N, 3, S, S), image_grids (I, 2) as (rows, cols), and the plans that made them."""

    pixel_values: torch.Tensor
    image_grids: torch.Tensor
    plans: list[TilePlan]


class InfiMMHDImageProcessorKwargs(ImagesKwargs, total=False):
    """The settings of `InfiMMHDImageProcessor`, so `from_pretrained(..., max_windows=16)` can override them."""

    window_size: int
    max_windows: int
    thumbnail_mode: str
    max_pixels: int | None
    background: tuple[int, int, int] | list[int]


class InfiMMHDImageProcessor(BaseImageProcessor):
    """InfiMM-HD image processor: each image -> a thumbnail + a grid of ``window_size`` windows, CLIP-normalised.

    ``processor(images)`` / ``processor.preprocess(images, max_windows=None, return_tensors="pt")`` returns a
    `BatchFeature` with ``pixel_values`` (N, 3, S, S) float32 in channels-last memory (per image: thumbnail, then
    windows row-major) and ``image_grids`` (I, 2) long (rows, cols). See the package docstring for the accepted
    inputs and guarantees.

    Args:
        window_size: side ``S`` of every crop (the vision encoder's input size).
        max_windows: window budget of the tiling plan (the training budget); a call may override it (e.g. with the
            model's larger inference budget).
        thumbnail_mode: ``"pad"`` (aspect kept, padded with the mean colour) or ``"squash"``.
        image_mean, image_std: per-channel normalisation (OpenAI-CLIP by default).
        max_pixels: largest image (width * height, as declared by its header) that is decoded; ``None`` disables
            the budget (PIL's ``Image.MAX_IMAGE_PIXELS`` still applies to encoded inputs).
        background: RGB colour transparent pixels are composited onto.
    """

    model_input_names = ["pixel_values", "image_grids"]
    valid_kwargs = InfiMMHDImageProcessorKwargs

    # Class-level defaults: `BaseImageProcessor.to_dict` keeps an explicit None only when the class default is not
    # None, so `max_pixels=None` survives a save/load round trip.
    window_size: int = 448
    max_windows: int = 9
    thumbnail_mode: str = "pad"
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] = (255, 255, 255)

    def __init__(
        self,
        window_size: int = 448,
        max_windows: int = 9,
        thumbnail_mode: str = "pad",
        image_mean: tuple[float, ...] | list[float] = CLIP_MEAN,
        image_std: tuple[float, ...] | list[float] = CLIP_STD,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        background: tuple[int, ...] | list[int] = (255, 255, 255),
        **kwargs: Any,
    ) -> None:
        """Validate and store the settings; unknown keys (e.g. from a newer config) are kept as attributes."""
        kwargs.pop("image_processor_type", None)  # written by `to_dict`, not a setting
        super().__init__(**kwargs)
        self.window_size = _positive_int(window_size, "window_size")
        self.max_windows = _window_budget(max_windows)
        if thumbnail_mode not in THUMBNAIL_MODES:
            raise ValueError(f"unknown thumbnail_mode {thumbnail_mode!r}; expected one of {THUMBNAIL_MODES}")
        self.thumbnail_mode = thumbnail_mode
        self.image_mean = _triple(image_mean, "image_mean", float)
        self.image_std = _triple(image_std, "image_std", float)
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        self.max_pixels = None if max_pixels is None else _positive_int(max_pixels, "max_pixels")
        self.background = _triple(background, "background", int)
        if not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background must be an RGB colour with components in 0..255, got {self.background}")

    # -- public API ---------------------------------------------------------------------------------------------

    def preprocess(
        self, images: Any, max_windows: int | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Images (one, a list, nested lists, or a 4-D batch array) -> ``pixel_values`` and ``image_grids``.

        ``max_windows`` overrides the window budget for this call. ``return_tensors``: ``"pt"`` (default; also
        used for None) or ``"np"``.
        """
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        processed = self.process(images, max_windows=max_windows)
        data: dict[str, Any] = {"pixel_values": processed.pixel_values, "image_grids": processed.image_grids}
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def process(self, images: Any, max_windows: int | None = None) -> ProcessedImages:
        """Like `preprocess`, but returns a `ProcessedImages` that also holds each image's `TilePlan`."""
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        ws = self.window_size
        plans: list[TilePlan] = []
        crops: list[tuple[torch.Tensor, torch.Tensor]] = []  # per image: thumbnail (1,3,S,S), grid (1,3,rS,cS)
        for index, image in enumerate(_flatten(images)):
            with _image_errors(index):
                opened = self._open(image)
                plan = plan_tiles(opened.width, opened.height, window_size=ws, max_windows=budget)
                # A thumbnail-only plan makes its thumbnail exactly as the default windowed plan would, so the
                # thumbnail-only ablation and the low-resolution stages see the very pixels windowed runs see.
                shape = plan_tiles(opened.width, opened.height, ws, max(1, self.max_windows)) if budget == 0 else plan
                decoded = self._decode(opened, shape)
            grid, thumbnail = self._tile(decoded, opened, shape)
            plans.append(plan)
            crops.append((thumbnail, grid))

        pixel_values = _normalised_batch(plans, crops, ws, self.image_mean, self.image_std)  # (N, 3, S, S)
        grids = torch.tensor([[p.rows, p.cols] for p in plans], dtype=torch.long).view(-1, 2)
        return ProcessedImages(pixel_values, grids, plans)

    def reference_preprocess(self, images: Any, max_windows: int | None = None) -> ProcessedImages:
        """The straightforward path, kept as the specification `process` is tested against.

        Full decode, `ImageOps.exif_transpose`, RGB conversion, `hires.tile_image` (PIL, padded canvas) and
        `normalize` per crop. Slow, and the pad canvas is ``side**2`` pixels: meant for tests, not training.
        """
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        pixel_values: list[torch.Tensor] = []
        plans: list[TilePlan] = []
        for index, image in enumerate(_flatten(images)):
            with _image_errors(index):
                pil = self._load_rgb(image)
            plan = plan_tiles(pil.width, pil.height, window_size=self.window_size, max_windows=budget)
            tiles = tile_image(pil, plan, thumbnail_mode=self.thumbnail_mode, fill=self.pad_fill)
            pixel_values.extend(normalize(tile, self.image_mean, self.image_std) for tile in tiles)
            plans.append(plan)
        ws = self.window_size
        stacked = torch.stack(pixel_values) if pixel_values else torch.empty(0, 3, ws, ws)
        grids = torch.tensor([[p.rows, p.cols] for p in plans], dtype=torch.long).view(-1, 2)
        return ProcessedImages(stacked, grids, plans)

    def load_image(self, image: ImageInput) -> Image.Image:
        """Any supported input -> an RGB PIL image (fully decoded, oriented, alpha composited, budget checked)."""
        with _image_errors(None):
            return self._load_rgb(image)

    def plan_image(self, image: ImageInput, max_windows: int | None = None) -> TilePlan:
        """The tiling plan of an image from its header alone (no pixel decoding for encoded inputs).

        Why: a data pipeline can budget crops (and so cross-attention keys) per sample before decoding anything.
        """
        budget = self.max_windows if max_windows is None else _window_budget(max_windows)
        with _image_errors(None):
            opened = self._open(image)
        return plan_tiles(opened.width, opened.height, window_size=self.window_size, max_windows=budget)

    @property
    def pad_fill(self) -> tuple[int, int, int]:
        """Colour of the thumbnail padding: the mean as 8-bit RGB, truncated like the official ``expand2square``."""
        r, g, b = (int(m * 255) for m in self.image_mean)
        return (r, g, b)

    # -- steps (each held by the module named) ------------------------------------------------------------------

    def _open(self, image: Any) -> _Opened:
        """Identify the input and read its size and orientation; encoded inputs are not decoded yet (`decoding`)."""
        return _open_input(image, self.background, self.max_pixels)

    def _decode(self, opened: _Opened, plan: TilePlan) -> _Decoded:
        """Decode the pixels as small as the plan allows (JPEG DCT scaling), in stored orientation (`scaled_decode`)."""
        return _decode_for_plan(opened, plan, self.background)

    def _load_rgb(self, image: Any) -> Image.Image:
        """Full-resolution decode as an RGB PIL image, orientation by `ImageOps.exif_transpose` (reference path)."""
        return _load_full_rgb(image, self.background, self.max_pixels)

    def _tile(self, decoded: _Decoded, opened: _Opened, plan: TilePlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded pixels -> (grid (1, 3, rows*S, cols*S), thumbnail (1, 3, S, S)), uint8 and oriented (`tiling`)."""
        return _tile_decoded(decoded, opened, plan, self.window_size, self.thumbnail_mode, self.pad_fill)


# ---------------------------------------------------------------------------------------------------------------
# Setting validators
# ---------------------------------------------------------------------------------------------------------------


def _window_budget(value: Any) -> int:
    """A window budget: a non-negative int, where 0 means thumbnail only (no windows)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"max_windows must be an integer >= 0 (0 = thumbnail only), got {value!r}")
    return int(value)


def _positive_int(value: Any, name: str) -> int:
    """A strictly positive int (bools and floats rejected), naming the setting in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _triple(value: Any, name: str, kind: type) -> tuple[Any, Any, Any]:
    """Three numbers as a tuple of ``kind`` (JSON turns tuples into lists; this turns them back)."""
    try:
        items = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be 3 numbers, got {value!r}") from err
    if len(items) != 3:
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
    return items


# ---------------------------------------------------------------------------------------------------------------
# Functional API (kept for existing callers)
# ---------------------------------------------------------------------------------------------------------------


def load_image(image: ImageInput) -> Image.Image:
    """Any supported input as an RGB PIL image; a clear `ValueError` for what cannot be decoded or is empty."""
    return InfiMMHDImageProcessor().load_image(image)


def process_images(
    images: list[ImageInput],
    window_size: int = 448,
    max_windows: int = 9,
    thumbnail_mode: str = "pad",
) -> ProcessedImages:
    """Decode, tile and normalise a flat list of images (in prompt order); see `InfiMMHDImageProcessor`."""
    processor = InfiMMHDImageProcessor(window_size=window_size, max_windows=max_windows, thumbnail_mode=thumbnail_mode)
    return processor.process(images)
