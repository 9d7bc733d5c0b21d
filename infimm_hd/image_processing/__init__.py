"""Images in, crops out: the image processor and its helpers (see `processor` for the documentation).

The module `infimm_hd/image_processing.py` became this package; its public names are re-exported here, so
``from infimm_hd.image_processing import X`` keeps working.
"""

from .processor import (
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_MAX_PIXELS,
    THUMBNAIL_MODES,
    ImageInput,
    ImageTooLargeError,
    InfiMMHDImageProcessor,
    InfiMMHDImageProcessorKwargs,
    ProcessedImages,
    check_image_size,
    load_image,
    normalize,
    open_image_header,
    process_images,
)

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
