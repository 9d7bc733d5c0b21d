"""Fitted unit laws cached on disk, keyed by the model config and the probe settings.

Why: paper-13b's probes run a 13B-wide copy on the CPU for minutes per stage; a plan should not repeat them.
`$INFIMM_HD_CACHE` (default ~/.cache/infimm_hd) holds one small JSON per (config, stage settings, probe version).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from ..configuration import InfiMMHDConfig
from ..training.trainable import TrainableSpec
from .probe import probe_unit_laws
from .shape_laws import FLOP_BASIS, MEMORY_BASIS, WORK_BASIS, ShapeLaw, UnitLaws

PROBE_VERSION = 5  # bump when what a probe measures changes: cached laws of older versions are not read


def _cache_file(config: InfiMMHDConfig, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps([config.to_json_string(), key, PROBE_VERSION], sort_keys=True).encode())
    root = Path(os.environ.get("INFIMM_HD_CACHE", Path.home() / ".cache" / "infimm_hd"))
    return root / "probe_laws" / f"{digest.hexdigest()[:24]}.json"


def _laws_to_json(laws: UnitLaws) -> dict:
    coefficients = {
        "flops": {k: v.coefficients for k, v in laws.flops.items()},
        "retained": {k: v.coefficients for k, v in laws.retained.items()},
        "forward_work": {k: v.coefficients for k, v in laws.forward_work.items()},
        "backward_work": {k: v.coefficients for k, v in laws.backward_work.items()},
        "head_work": laws.head_work.coefficients,
        "stem_work": laws.stem_work.coefficients,
    }
    return {"coefficients": coefficients, "grad_bytes": laws.grad_bytes, "window": laws.window,
            "gradient_checkpointing": laws.gradient_checkpointing}  # fmt: skip


def _laws_from_json(data: dict) -> UnitLaws:
    c = data["coefficients"]

    def laws(group: dict, bases: dict) -> dict[str, ShapeLaw]:
        return {k: ShapeLaw(k, tuple(v), bases[k], 0.0) for k, v in group.items()}

    return UnitLaws(
        flops=laws(c["flops"], FLOP_BASIS),
        retained=laws(c["retained"], MEMORY_BASIS),
        forward_work=laws(c["forward_work"], WORK_BASIS),
        backward_work=laws(c["backward_work"], WORK_BASIS),
        head_work=ShapeLaw("head", tuple(c["head_work"]), WORK_BASIS["head"], 0.0),
        stem_work=ShapeLaw("stem", tuple(c["stem_work"]), WORK_BASIS["stem"], 0.0),
        grad_bytes=data["grad_bytes"],
        window=data["window"],
        gradient_checkpointing=data["gradient_checkpointing"],
    )


def cached_unit_laws(
    config: InfiMMHDConfig, trainable: TrainableSpec, window: int, gradient_checkpointing: bool, windows: bool
) -> UnitLaws:
    """`probe_unit_laws`, read from / written to the cache (see the module docstring)."""
    key = {"trainable": asdict(trainable), "window": window, "checkpointing": gradient_checkpointing,
           "windows": windows}  # fmt: skip
    path = _cache_file(config, key)
    if path.is_file():
        return _laws_from_json(json.loads(path.read_text()))
    laws = probe_unit_laws(config, trainable, window, gradient_checkpointing, windows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_laws_to_json(laws)))
    os.replace(tmp, path)
    return laws
