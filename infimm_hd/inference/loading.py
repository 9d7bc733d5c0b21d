"""`--model` for the command line: a preset name, a saved folder, or a Hugging Face hub id -> (model, processor)."""

from __future__ import annotations

import torch

PRESETS = ("tiny", "smollm2-135m")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str | None) -> torch.device:
    """`None`/"auto" -> the GPU when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(name: str, dtype: str | None = None, device: str | None = None):
    """(model in eval mode, processor) for a preset (`tiny`, `smollm2-135m`: random vision tower and fusion
    blocks, for trying the tools) or anything `from_pretrained` reads (a folder written by `save_pretrained`, a hub
    id). `dtype` is one of `DTYPES` (default: the checkpoint's own, float32 for presets)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..auto_registration import register_auto_classes
    from ..presets import build_model

    register_auto_classes()  # folders and hub ids resolve to our classes without trust_remote_code
    torch_dtype = DTYPES[dtype] if dtype else None
    if name in PRESETS:
        model, processor = build_model(name)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
    else:
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
        processor = AutoProcessor.from_pretrained(name)
    return model.to(pick_device(device)).eval(), processor
