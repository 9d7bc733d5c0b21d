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
]
