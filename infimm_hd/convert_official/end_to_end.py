"""`convert`: an official checkpoint folder or file in, a `save_pretrained` safetensors folder out.

Ties the stages together (read, pick or infer the config, build on meta, convert strictly, assign, save, copy the
tokenizer) and keeps the checkpoint in memory only once. The command line is a thin layer over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..configuration import InfiMMHDConfig
from .checkpoint_reading import load_official_checkpoint
from .config_translation import infer_config, official_config
from .report import ConversionReport
from .state_dict_conversion import _build_model, _convert
from .tokenizer_files import _copy_tokenizer


# -- end to end ------------------------------------------------------------------------------------------------------
def _config_for(
    state: Mapping[str, Tensor], config_json: Mapping[str, Any] | None, config: InfiMMHDConfig | Mapping | None
) -> InfiMMHDConfig:
    if isinstance(config, InfiMMHDConfig):
        return config
    if config is not None:
        return official_config(config, state)
    if config_json is not None:
        return official_config(config_json, state)
    return infer_config(state)


def convert(
    src: str | Path, dst: str | Path, *, config: InfiMMHDConfig | Mapping[str, Any] | None = None
) -> ConversionReport:
    """Convert an official checkpoint (hub-style folder or single `.bin`) into a `save_pretrained` folder at `dst`.

    The config comes from `config` (ours, or an official `config.json` dict), else from `SRC/config.json`, else from
    the tensor shapes (`infer_config`). The model is built with parameters on the meta device and the checkpoint's
    tensors assigned to it (strict: every key consumed and filled), then saved as safetensors; tokenizer files are
    copied when present. `dst` must be empty or absent. Returns what was converted.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} already exists and is not an empty folder")
    official, config_json = load_official_checkpoint(src)
    ours = _config_for(official, config_json, config)

    model = _build_model(ours)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    state, report = _convert(official, ours, expected)
    del official
    model.load_state_dict(state, strict=True, assign=True)
    del state
    on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"tensors left on the meta device after loading: {on_meta[:10]}")
    model.vision_tower.init_non_persistent_buffers()

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, max_shard_size="5GB")
    pickled = sorted(p.name for p in dst.rglob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
    if pickled:
        raise RuntimeError(f"save_pretrained wrote pickle files {pickled}; only safetensors are expected")
    if src.is_dir():
        report.tokenizer_files = _copy_tokenizer(src, dst, ours)
    return report
