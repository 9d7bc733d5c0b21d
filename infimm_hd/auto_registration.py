"""Register our config and model with transformers' Auto classes, so hub folders load without remote code.

`import infimm_hd` calls `register_auto_classes()`; afterwards `AutoConfig`, `AutoModelForImageTextToText` and
`AutoModelForCausalLM` resolve `model_type: "infimm_hd"` to this package's classes. Registration is idempotent.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from .configuration import InfiMMHDConfig, InfiMMHDVisionConfig
from .modeling import InfiMMHDForConditionalGeneration


def register_auto_classes() -> None:
    AutoConfig.register(InfiMMHDConfig.model_type, InfiMMHDConfig, exist_ok=True)
    AutoConfig.register(InfiMMHDVisionConfig.model_type, InfiMMHDVisionConfig, exist_ok=True)
    AutoModelForImageTextToText.register(InfiMMHDConfig, InfiMMHDForConditionalGeneration, exist_ok=True)
    # A causal LM that also takes images: text-only callers of AutoModelForCausalLM get the same model.
    AutoModelForCausalLM.register(InfiMMHDConfig, InfiMMHDForConditionalGeneration, exist_ok=True)
