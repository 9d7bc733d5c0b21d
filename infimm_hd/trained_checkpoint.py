"""Small checkpoints: save only what training changed, plus a manifest naming the frozen bases to reload.

A stage checkpoint of a 13B InfiMM-HD model is mostly the frozen LLM (and, in some stages, the frozen ViT). Saving
all of it at every stage costs tens of GB per checkpoint; OpenFlamingo saves only trainable tensors but then loads
them with `strict=False` and floods users with key warnings. Here a trained-only folder holds

* `config.json` (the full model config, as a normal save),
* `trained.safetensors`: every parameter that is trainable or has no reloadable base (e.g. a randomly initialised
  ViT), by its full model key,
* `infimm_hd_manifest.json`: the bases (`BaseSource` per component: loader, id or path, revision, GGUF file) and
  the saved keys,

and `from_pretrained` on such a folder rebuilds the bases, adds the multimodal tokens exactly as `from_components`
did, and loads the saved tensors strictly: every saved key must exist in the model, and every model key is either
saved or comes from a base.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from .base_sources import BaseSource, load_base_llm
from .configuration import InfiMMHDConfig
from .multimodal_vocab import add_multimodal_vocab
from .vision_tower import VisionTower

if TYPE_CHECKING:
    from collections.abc import Callable

MANIFEST = "infimm_hd_manifest.json"
TRAINED_WEIGHTS = "trained.safetensors"
FORMAT = "infimm-hd-trained-only/1"


def always_saved(name: str, sources: dict[str, BaseSource]) -> bool:
    """A parameter no base can rebuild: a cross-attention block's, or one of a component without a base."""
    component = name.split(".", 1)[0]  # "language_model" or "vision_tower"
    return ".cross_attn." in name or sources.get(component, BaseSource()).loader == "none"


def trained_keys(model, sources: dict[str, BaseSource]) -> list[str]:
    """Keys to save: trainable parameters plus everything `always_saved`."""
    return [name for name, param in model.named_parameters() if param.requires_grad or always_saved(name, sources)]


def save_trained(model, save_directory: str | Path) -> Path:
    """Write config + trained tensors + manifest. Returns the folder."""
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    sources = getattr(model, "base_sources", None) or {}
    keys = trained_keys(model, sources)
    params = dict(model.named_parameters())
    tensors = {k: params[k].detach().contiguous().cpu() for k in keys}
    model.config.save_pretrained(folder)
    save_file(tensors, folder / TRAINED_WEIGHTS, metadata={"format": "pt"})
    manifest = {
        "format": FORMAT,
        "bases": {name: asdict(src) for name, src in sources.items()},
        "saved_keys": sorted(keys),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def is_trained_only(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def load_trained(
    folder: str | Path, model_class: Callable[..., PreTrainedModel], dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Rebuild a model saved by `save_trained`: bases from the manifest, then the saved tensors, strictly.

    `model_class(config, language_model=..., vision_tower=...)` builds the model: the caller's class (the model's own
    `from_pretrained` passes `cls`), so this format module does not import the model it loads.
    """
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder / MANIFEST}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
    config = InfiMMHDConfig.from_pretrained(folder)
    sources = {name: BaseSource(**src) for name, src in manifest["bases"].items()}
    saved = load_file(folder / TRAINED_WEIGHTS)
    if sorted(saved) != manifest["saved_keys"]:
        raise ValueError(f"{TRAINED_WEIGHTS} does not hold the keys its manifest lists")

    llm_source = sources.get("language_model", BaseSource())
    if llm_source.loader == "none":
        llm = AutoModelForCausalLM.from_config(config.text_config)
    else:
        llm, tokenizer = load_base_llm(llm_source, dtype)
        image_id, eoc_id = add_multimodal_vocab(llm, tokenizer)
        if (image_id, eoc_id) != (config.image_token_id, config.end_of_chunk_token_id):
            raise ValueError(
                f"the base tokenizer gives <image>={image_id}, <|endofchunk|>={eoc_id} but the checkpoint was "
                f"trained with {config.image_token_id}, {config.end_of_chunk_token_id}"
            )
    if sources.get("vision_tower", BaseSource()).loader != "none":
        raise ValueError("vision-tower bases are not supported yet: save the tower with the trained weights")
    tower = VisionTower(config.vision_config)
    model = model_class(config, language_model=llm, vision_tower=tower)
    model.base_sources = sources

    # Strict in both directions: every saved tensor has a home, and every parameter without a base was saved.
    params = dict(model.named_parameters())
    missing = sorted({k for k in params if always_saved(k, sources)} - set(saved))
    unexpected = sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(f"trained checkpoint mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in saved.items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"unexpected keys in {TRAINED_WEIGHTS}: {result.unexpected_keys[:8]}")
    if dtype is not None:
        model.to(dtype)
    return model.eval()
