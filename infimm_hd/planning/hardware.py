"""The GPUs a plan can be made for: memory, dense peak throughput, and link bandwidths.

Figures are the vendors' datasheet values (dense, no sparsity): H100 SXM5 989.4 TFLOP/s bf16 and 494.7 tf32, NVLink 4
at 900 GB/s per GPU (both directions: 450 GB/s each way); A100 SXM4 312 bf16 / 156 tf32, NVLink 3 at 600 GB/s;
H200 SXM: H100's compute with 141 GB. Memory is what `torch.cuda.get_device_properties` reports (an "80 GB" card
gives 79.6 GiB); a plan fits when its predicted peak stays under `usable_fraction` of it, leaving room for the
CUDA context, NCCL buffers and the caching allocator's fragmentation, which the planner does not model.
Inter-node figures assume one 400 Gb/s (H100/H200) or 200 Gb/s (A100) InfiniBand NIC per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense tensor-core peak
    fp32_tflops: float  # tf32 tensor-core peak (what fp32 matmuls use with allow_tf32)
    intra_node_gbs: float  # NVLink, one direction, GB/s
    inter_node_gbs: float  # InfiniBand per GPU, one direction, GB/s

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    def peak_flops(self, dtype: str) -> float:
        return (self.bf16_tflops if dtype == "bf16" else self.fp32_tflops) * 1e12


GPUS = {
    "h100": GpuSpec("NVIDIA H100 SXM5 80GB", 79.6, 989.4, 494.7, 450.0, 50.0),
    "h200": GpuSpec("NVIDIA H200 SXM 141GB", 139.8, 989.4, 494.7, 450.0, 50.0),
    "a100-80gb": GpuSpec("NVIDIA A100 SXM4 80GB", 79.2, 312.0, 156.0, 300.0, 25.0),
    "a100-40gb": GpuSpec("NVIDIA A100 SXM4 40GB", 39.4, 312.0, 156.0, 300.0, 25.0),
}
USABLE_FRACTION = 0.92


def gpu(name: str) -> GpuSpec:
    key = name.lower().replace("_", "-")
    if key in ("a100", "a100-80"):
        key = "a100-80gb"
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; choose one of: {', '.join(GPUS)}")
    return GPUS[key]
