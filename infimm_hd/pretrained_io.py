"""How an InfiMM-HD model is saved and loaded: strict `from_pretrained`, trained-only folders, and the model card.

`InfiMMHDPreTrainedModel` inherits `CheckpointIO`, so `model.save_pretrained(folder, trained_only=True)` and
`InfiMMHDForConditionalGeneration.from_pretrained(folder)` behave as before, while `modeling.py` knows nothing of
card rendering or the trained-only format. This module sits below the model and does not import it: trained-only
loading builds the model through `cls`, and the card reads the model it is given.
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel

from .model_card import render_model_card
from .trained_checkpoint import is_trained_only, load_trained, save_trained


class CheckpointIO(PreTrainedModel):
    """`PreTrainedModel` persistence with InfiMM-HD's two additions (trained-only checkpoints, a rendered card) and
    one refusal (no silently half-loaded weights). Abstract: subclasses set `config_class` and build the modules."""

    def save_pretrained(self, save_directory, *args, trained_only: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors); `trained_only=True` writes only the trainable and
        base-less tensors plus a manifest of the frozen bases (see `trained_checkpoint`), for small stage
        checkpoints. Either way a README.md model card is written unless the folder already has one."""
        if trained_only:
            save_trained(self, save_directory)
        else:
            super().save_pretrained(save_directory, *args, **kwargs)
        card = os.path.join(save_directory, "README.md")
        if not os.path.exists(card):  # never overwrite a card the user wrote
            with open(card, "w") as f:
                f.write(render_model_card(self, model_id=str(save_directory)))

    @classmethod
    def from_pretrained(cls, *args, strict: bool = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, but strict: a missing, unexpected or mis-shaped key is an error that
        names it (peers warn and silently initialise; a half-loaded VLM is worse than none). `strict=False` restores
        transformers' lenient behaviour. A trained-only folder (it has a manifest) rebuilds its bases first."""
        if args and isinstance(args[0], (str, os.PathLike)) and os.path.isdir(args[0]) and is_trained_only(args[0]):
            return load_trained(args[0], cls, dtype=kwargs.get("dtype") or kwargs.get("torch_dtype"))
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        problems = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" and v}
        if info.get("error_msgs"):
            problems["error_msgs"] = list(info["error_msgs"])
        if strict and problems:
            details = "; ".join(f"{k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}" for k, v in problems.items())
            raise ValueError(f"checkpoint does not match the model ({details}); pass strict=False to load anyway")
        return (model, info) if want_info else model
