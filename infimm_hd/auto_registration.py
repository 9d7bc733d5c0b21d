"""Register our config and model with transformers' Auto classes, so hub folders load without remote code.

`import infimm_hd` calls `register_auto_classes()`; afterwards `AutoConfig`, `AutoModelForImageTextToText` and
`AutoModelForCausalLM` resolve `model_type: "infimm_hd"` to this package's classes, and `AutoProcessor` /
`AutoImageProcessor` to its processors. Registration is idempotent.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration import InfiMMHDConfig, InfiMMHDVisionConfig
from .image_processing import InfiMMHDImageProcessor
from .modeling import InfiMMHDForConditionalGeneration
from .processing import InfiMMHDProcessor


def register_auto_classes() -> None:
    AutoConfig.register(InfiMMHDConfig.model_type, InfiMMHDConfig, exist_ok=True)
    AutoConfig.register(InfiMMHDVisionConfig.model_type, InfiMMHDVisionConfig, exist_ok=True)
    AutoModelForImageTextToText.register(InfiMMHDConfig, InfiMMHDForConditionalGeneration, exist_ok=True)
    # A causal LM that also takes images: text-only callers of AutoModelForCausalLM get the same model.
    AutoModelForCausalLM.register(InfiMMHDConfig, InfiMMHDForConditionalGeneration, exist_ok=True)
    # One class serves both backends: it decodes with torchvision when available and falls back to PIL itself.
    AutoImageProcessor.register(
        InfiMMHDConfig,
        slow_image_processor_class=InfiMMHDImageProcessor,
        fast_image_processor_class=InfiMMHDImageProcessor,
        exist_ok=True,
    )
    AutoProcessor.register(InfiMMHDConfig, InfiMMHDProcessor, exist_ok=True)
