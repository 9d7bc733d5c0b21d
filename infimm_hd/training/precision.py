"""Whether this machine multiplies bf16 natively, for ``mixed_precision="auto"``.

Why: bf16 autocast pays off only where the hardware has bf16 matrix units: CUDA GPUs from Ampere on, x86 CPUs with
AVX512-BF16 or AMX, Arm CPUs with the BF16 extension. Elsewhere torch emulates bf16 matmuls, and a training step gets
slower, not faster: on a 2-core AMD EPYC with AVX2 only (2026-12-05), one SFT step of SmolLM2-135M inside
InfiMM-HD (4 x 256 tokens, LLM and cross-attention training) took 188 s under bf16 autocast against 7.0 s in
float32, 27x slower. So "auto" picks bf16 where it is native and float32 elsewhere, and a user's first try on an
ordinary CPU is not the slow path.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

import torch

MixedPrecision = Literal["auto", "bf16", "no"]


def _cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (x86 "flags", Arm "Features"); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16() -> bool:
    """x86: AVX512-BF16 or AMX-BF16; Arm: the BF16 extension (Linux's ``bf16`` feature)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None and probe() for probe in probes):
        return True
    flags = _cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def native_bf16() -> bool:
    """Whether bf16 matmuls are native where training runs: the GPU if any (as accelerate picks), else the CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_native_bf16()


def resolve_mixed_precision(choice: str) -> Literal["bf16", "no"]:
    """ "auto" -> "bf16" where bf16 is native (`native_bf16`), else "no"; "bf16" and "no" as they are."""
    if choice == "auto":
        return "bf16" if native_bf16() else "no"
    if choice not in ("bf16", "no"):
        raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {choice!r}")
    return choice  # type: ignore[return-value]
