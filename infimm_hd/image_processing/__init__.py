"""Images in, crops out: decode any image input, plan its tiles, and normalise the crops for the ViT.

Shape legend
    N   crops of all images (thumbnail first, then windows row-major, image after image)
    I   images              S   window size (448)       C   working channels (1 grey or 3 RGB, uint8)

`InfiMMHDImageProcessor` is the Hugging Face image processor (saved as ``preprocessor_config.json``); the functions
`load_image`, `normalize` and `process_images` are thin wrappers kept for existing callers.

What the processor guarantees
-----------------------------
* Every input becomes 8-bit RGB the same way, whatever its type (PIL image, numpy array, torch tensor, file path,
  encoded bytes, binary file object): EXIF orientation applied; alpha (RGBA, LA, PA, palette or grey/RGB PNGs with a
  transparent colour) composited onto ``background`` instead of dropped; 16-bit images scaled by 255/65535 and
  32-bit integer images by 255/(2**31 - 1) rather than clipped; CMYK, YCbCr, HSV and LAB through PIL's conversion.
* Anything that cannot be decoded is a `ValueError` naming the image's index and the problem: unknown or random
  bytes, truncated files (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never changed), zero-size images, arrays of
  unsupported shape or value range, and images over the pixel budget. The budget is checked from the header, before
  any pixel is decoded, and PIL's own decompression-bomb warning and error become the same `ValueError`.

Fast path (what makes it cheap enough for a training data loader) and how it differs from the reference
--------------------------------------------------------------------------------------------------------
`reference_preprocess` is the straightforward path, kept as the specification: full decode, the RGB image tiled
by `hires.tile_image` with PIL (thumbnail from a padded square canvas, windows cut from the resized image), each
crop normalised on its own. `preprocess` computes the same crops with far less work:

1. The tile plan comes from the header size (EXIF orientation applied), so it is exactly the reference's plan.
2. A JPEG at least twice the size the windows need is decoded with JPEG DCT scaling (``Image.draft``: 1/2, 1/4 or
   1/8) to the smallest size still >= the resized grid, so the later resize is always a reduction; the fraction
   of a pixel the scaling leaves at the right and bottom edges is honoured by resizing with the exact scale
   factor. Other RGB/grey JPEGs are decoded by torchvision's libjpeg-turbo decoder straight into a tensor
   (1.5-3x cheaper than PIL's decode plus the copy out of PIL for a 6 MP photo; torchvision is pinned with torch
   and required by timm). torchvision 0.29 deprecates that decoder; when it is missing or fails, PIL decodes
   (bit-identical pixels), so PIL alone decides which files are accepted. Other formats decode with PIL.
3. The image is resized once to the grid size with torch's antialiased bicubic on uint8 (PIL's BICUBIC kernel,
   3-4x faster than PIL here; the more strongly reduced axis first, see `_resize`) and the windows are strided
   views of that tensor; EXIF rotations are applied to the small resized tensor, not to the decoded image.
4. The thumbnail is made from the resized grid image when that is at least twice the thumbnail's content size in
   both directions (PIL calls such a reducing gap indistinguishable from a direct resize); otherwise from the
   decoded image, on the reference's own ``side x side`` pad canvas when that is small (<= 1024 px). Otherwise
   ``"pad"`` uses a canvas of S x (2 to 4)S pixels instead of the reference's ``side**2`` (20000**2 pixels for a
   1x20000 image): the image is resized into a number of canvas rows chosen so that the reference's pad offset
   falls on a whole row, and the canvas reduced with the reference canvas's exact scale, so the image and its
   edge against the padding land where the reference puts them.
5. All crops are copied once from uint8 into one float32 batch, normalised in place by one fused multiply-add
   pass, in memory recycled from earlier outputs that are no longer referenced (`recycled_buffers`: fresh
   memory's page faults were ~30% of the time in a process that only preprocesses). Pad canvases are filled row
   by row (`_canvas`). ``pixel_values`` is (N, 3, S, S) in **channels-last memory**
   (``torch.channels_last``: stored as (N, S, S, 3)), the layout the resize produces: copying windows out of the
   interleaved RGB grid into planar NCHW memory was the single most expensive step (a de-interleaving uint8 ->
   float32 copy, ~2x slower than this layout's row copies plus the normalisation). Values are identical; every
   torch op accepts the layout, convolutions (the ViT's patch embedding) prefer it on CPU and on tensor-core GPUs,
   and ``.contiguous()`` gives NCHW memory for code that needs ``.view`` on it.

Measured against `reference_preprocess` (tests/test_image_processor.py; in 8-bit levels): windows agree to a mean
absolute difference < 0.01 and max 2 for most sizes (< 0.08 where the vertical pass runs first), and never beyond
mean 0.2 / max 7 (torch and PIL quantise the bicubic weights differently; worst for scale factors near 1); with
DCT scaling, mean < 0.3 and max < 10 on photographs (the JPEG scaling filter stands in for part of the bicubic
reduction), more on point-like content: skimage's Hubble star field at 4032x3024 gives mean 0.42 and max 17;
thumbnails, mean < 0.2 and max < 10 (the grid image as an intermediate).

Threads: the processor holds no mutable state, but PIL's decompression-bomb warning is turned into an error with
``warnings.catch_warnings``, which is process-global in Python < 3.14: use processes (data-loader workers), not
threads, to run several decodes at once.

Modules (imports run one way, down this list: each imports only modules below it, never one above)
    processor       `InfiMMHDImageProcessor` (settings, save/load, `process`, `reference_preprocess`) and the
                    functional `load_image` / `process_images`
    normalisation   CLIP mean and std, the fused batch normalisation in recycled memory (5.), `normalize`
    tiling          a plan's grid image and thumbnail from decoded pixels, the small pad canvas (3., 4.)
    scaled_decode   decoding for a plan: JPEG DCT scaling, torchvision's JPEG decoder, PIL otherwise (2.)
    decoding        input types, pixel budget, `open_image_header`, error translation, full decode (1.)
    resize          the antialiased uint8 bicubic resize
    modes           bit depths, colour modes and alpha -> 8-bit grey or RGB
    orientation     EXIF orientation of sizes and tensors
    layout          HWC / channels-last views, pad canvases, RGB PIL images
Of the rest of `infimm_hd` they import only `hires` (tile plans, the reference tiling) and `recycled_buffers`.
"""

from .decoding import DEFAULT_MAX_PIXELS, ImageInput, ImageTooLargeError, check_image_size, open_image_header
from .normalisation import CLIP_MEAN, CLIP_STD, normalize
from .processor import InfiMMHDImageProcessor, InfiMMHDImageProcessorKwargs, ProcessedImages, load_image, process_images
from .tiling import THUMBNAIL_MODES

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "THUMBNAIL_MODES",
    "ImageInput",
    "ImageTooLargeError",
    "InfiMMHDImageProcessor",
    "InfiMMHDImageProcessorKwargs",
    "ProcessedImages",
    "check_image_size",
    "load_image",
    "normalize",
    "open_image_header",
    "process_images",
]
