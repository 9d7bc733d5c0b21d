"""infimm-hd: high-resolution vision-language models in the InfiMM-HD design.

>>> import infimm_hd
>>> model, processor = infimm_hd.build_model("tiny")
"""

from .configuration import InfiMMHDConfig, InfiMMHDVisionConfig
from .modeling import InfiMMHDForConditionalGeneration
from .presets import build_model, from_components
from .processing import InfiMMHDProcessor

__all__ = [
    "InfiMMHDConfig",
    "InfiMMHDVisionConfig",
    "InfiMMHDForConditionalGeneration",
    "InfiMMHDProcessor",
    "build_model",
    "from_components",
]
