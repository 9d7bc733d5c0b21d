"""Reading the official checkpoint from disk: a hub-style folder (single file or `*.index.json` shards) or one file.

Kept apart because this is the only code that touches the (untrusted, pickled) weight files: every `torch.load`
is `weights_only=True`, memory-mapped when the file allows, and the result must be a flat name -> tensor dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


# -- reading the official checkpoint ---------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    """`torch.load` restricted to tensors and containers (`weights_only=True`), memory-mapped when the file allows.

    Memory mapping keeps a 36 GB file on disk until each tensor is read; legacy (pre-zip) files cannot be mapped and
    are read normally.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    """One `.bin`/`.pt`/`.pth` (safe torch.load) or `.safetensors` file as a flat name -> tensor dict."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    loaded = _torch_load(path)
    if not isinstance(loaded, Mapping):
        raise TypeError(f"{path} holds a {type(loaded).__name__}, not a state dict (name -> tensor mapping)")
    bad = [key for key, value in loaded.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if bad:
        raise TypeError(f"{path} is not a flat state dict: entries {bad[:5]} are not str -> Tensor")
    return dict(loaded)


def _read_sharded(index_path: Path) -> dict[str, Tensor]:
    """A `*.index.json` checkpoint: every shard it names, checked against its `weight_map`."""
    weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        for key, value in _read_weight_file(index_path.parent / shard).items():
            if key in state:
                raise ValueError(f"tensor {key!r} appears in more than one shard of {index_path}")
            state[key] = value
    missing = sorted(set(weight_map) - set(state))
    extra = sorted(set(state) - set(weight_map))
    if missing or extra:
        raise ValueError(
            f"{index_path}: shards disagree with the weight_map (missing {missing[:5]}, extra {extra[:5]})"
        )
    return state


def load_official_checkpoint(src: str | Path) -> tuple[dict[str, Tensor], dict | None]:
    """The official state dict and its `config.json` (None when absent) from a hub-style folder or a single file.

    A folder holds `config.json` (optional) and one of `pytorch_model.bin.index.json` (shards),
    `pytorch_model.bin`, `model.safetensors.index.json` or `model.safetensors`; a file is a `.bin` or `.safetensors`.
    """
    src = Path(src)
    if src.is_file():
        return _read_weight_file(src), None
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is neither a checkpoint folder nor a weight file")
    config_path = src / "config.json"
    config_json = json.loads(config_path.read_text()) if config_path.is_file() else None
    for name in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
        if (src / name).is_file():
            return _read_sharded(src / name), config_json
    for name in ("pytorch_model.bin", "model.safetensors"):
        if (src / name).is_file():
            return _read_weight_file(src / name), config_json
    raise FileNotFoundError(
        f"{src} holds no weights: expected pytorch_model.bin, pytorch_model.bin.index.json, model.safetensors or "
        "model.safetensors.index.json"
    )
