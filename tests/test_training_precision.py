"""mixed_precision="auto": bf16 only where the hardware multiplies it natively."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch

from infimm_hd.training import precision
from infimm_hd.training.config import TrainConfig


def test_explicit_choices_pass_through_and_bad_ones_are_named():
    assert precision.resolve_mixed_precision("bf16") == "bf16"
    assert precision.resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="mixed_precision must be 'auto', 'bf16' or 'no', got 'fp8'"):
        TrainConfig(output_dir="x", max_steps=1, mixed_precision="fp8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_resolved_when_the_config_is_made(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    config = TrainConfig(output_dir="x", max_steps=1)  # the default is "auto"
    assert config.mixed_precision == ("bf16" if native else "no")
    assert TrainConfig(output_dir="x", max_steps=1, mixed_precision="bf16").mixed_precision == "bf16"


@pytest.mark.parametrize(
    ("machine", "flags", "native"),
    [
        ("x86_64", {"avx2", "fma"}, False),
        ("x86_64", {"avx2", "avx512f", "avx512_bf16"}, True),
        ("x86_64", {"avx512f", "amx_tile", "amx_bf16"}, True),
        ("aarch64", {"fp", "asimd", "sve"}, False),
        ("aarch64", {"fp", "asimd", "bf16", "i8mm"}, True),
    ],
)
def test_cpu_detection_from_the_flags_linux_reports(monkeypatch, machine, flags, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    assert precision.cpu_has_native_bf16() is native


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(), reason="reads x86 Linux CPU flags"
)
def test_this_cpu_agrees_with_its_own_flags():
    """torch's probes and the kernel's flags must tell the same story on the machine running the tests."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert precision.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
