"""What the benchmarks say about the machine they ran on: CPU name, AMX, thread count, and how busy it was.

Every benchmark prints where its numbers come from (`machine_line`); `machine_busy_seconds` is what
`timing.BackgroundLoad` (and the server benchmark) measure other processes' load with.
"""

from __future__ import annotations

import os
import platform

import torch


def machine_busy_seconds() -> float | None:
    """CPU-seconds all processes have spent busy since boot (from /proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often just the architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def machine_line(dtype: torch.dtype) -> str:
    """One line describing where the numbers come from."""
    return (
        f"machine: {platform.processor() or platform.machine()} ({cpu_model_name()}, {os.cpu_count()} CPUs, "
        f"AMX-bf16: {'yes' if cpu_has_amx() else 'no'}) | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | dtype {str(dtype).replace('torch.', '')}"
    )
