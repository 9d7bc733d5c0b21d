"""infimm-hd: high-resolution vision-language models in the InfiMM-HD design.

>>> import infimm_hd
>>> model, processor = infimm_hd.build_model("tiny")
"""

from .auto_registration import register_auto_classes
from .configuration import InfiMMHDConfig, InfiMMHDVisionConfig
from .modeling import InfiMMHDForConditionalGeneration
from .presets import build_model, from_components
from .processing import InfiMMHDProcessor

register_auto_classes()

__all__ = [
    "InfiMMHDConfig",
    "InfiMMHDVisionConfig",
    "InfiMMHDForConditionalGeneration",
    "InfiMMHDProcessor",
    "build_model",
    "from_components",
    "answer",
    "answer_batch",
    "stream",
    "open_image",
]

# The inference API is imported on first use, so `import infimm_hd` stays fast.
_INFERENCE_EXPORTS = ("answer", "answer_batch", "stream", "open_image")


def __getattr__(name: str):
    if name in _INFERENCE_EXPORTS:
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'infimm_hd' has no attribute {name!r}")
