"""
Accelerator datasheet numbers (with sources) and measured numbers for this machine.

Each `Hardware` holds what the decode roofline needs: memory capacity, memory bandwidth and
peak dense (no 2:4 sparsity) 16-bit tensor throughput.

Units: GPU memory is marketed as "80GB" but is 80 GiB (nvidia-smi on an A100 80GB reports
81920 MiB), so `memory_gib` is in GiB (2**30 bytes). Bandwidth is in GB/s (1e9 bytes/s) and
throughput in TFLOP/s (1e12), as in the datasheets. Everything else in moelab.compute
reports bytes or GB (1e9).

RTX 4090: the Ada whitepaper lists FP16 tensor throughput 330.3 TFLOP/s with FP16 accumulate
and 165.2 TFLOP/s with FP32 accumulate (dense). PyTorch fp16/bf16 matmuls accumulate in FP32,
so we use 165.2. (82.6 TFLOP/s is the non-tensor FP32 rate.)
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """One device: capacity, bandwidth, peak 16-bit dense matmul rate, and where they come from.

    >>> GPUS["A100-80GB-SXM"].bandwidth_gbs
    2039.0
    """

    name: str
    memory_gib: float  # capacity, GiB (2**30 bytes)
    bandwidth_gbs: float  # peak memory bandwidth, GB/s (1e9 bytes/s)
    peak_tflops: float  # peak dense bf16/fp16 tensor-core TFLOP/s (FP32 accumulate)
    source: str  # datasheet name / URL, or "measured"

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    @property
    def memory_gb(self) -> float:
        """Capacity in GB (1e9 bytes), the unit moelab.compute reports sizes in."""
        return self.memory_bytes / 1e9


GPUS: dict[str, Hardware] = {
    "A100-80GB-SXM": Hardware(
        "NVIDIA A100 80GB SXM", 80, 2039.0, 312.0,
        "NVIDIA A100 Tensor Core GPU datasheet (2021): 2,039 GB/s HBM2e, BF16/FP16 tensor 312 TFLOPS dense; "
        "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    ),
    "H100-SXM": Hardware(
        "NVIDIA H100 SXM 80GB", 80, 3350.0, 989.0,
        "NVIDIA H100 Tensor Core GPU datasheet: 3.35 TB/s HBM3, BF16/FP16 tensor 1,979 TFLOPS with sparsity "
        "(989 dense); https://www.nvidia.com/en-us/data-center/h100/",
    ),
    "H200": Hardware(
        "NVIDIA H200 SXM 141GB", 141, 4800.0, 989.0,
        "NVIDIA H200 Tensor Core GPU datasheet: 141 GB HBM3e, 4.8 TB/s, BF16/FP16 tensor 1,979 TFLOPS with "
        "sparsity (989 dense); https://www.nvidia.com/en-us/data-center/h200/",
    ),
    "RTX-4090": Hardware(
        "NVIDIA GeForce RTX 4090", 24, 1008.0, 165.2,
        "NVIDIA Ada GPU architecture whitepaper v2.1, Appendix A: 1,008 GB/s GDDR6X; FP16 tensor 165.2 TFLOPS "
        "dense with FP32 accumulate (330.3 with FP16 accumulate); "
        "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
    ),
}


def get_hardware(gpu) -> Hardware:
    """A `Hardware` from itself or a key of `GPUS` (case-insensitive).

    >>> get_hardware("h100-sxm").memory_gib
    80
    """
    if isinstance(gpu, Hardware):
        return gpu
    for key, hw in GPUS.items():
        if str(gpu).lower() == key.lower():
            return hw
    raise ValueError(f"unknown gpu {gpu!r}; use one of {list(GPUS)} or pass a moelab.compute.Hardware(...)")


def measure_host_bandwidth(size_mb: float = 256.0, repeats: int = 5) -> float:
    """Measured host memory bandwidth in GB/s: best of `repeats` copies of a `size_mb` MB buffer.

    A copy reads and writes every byte, so bytes moved = 2 * size. Use a buffer much larger
    than the last-level cache (the default 256 MB is), or this measures the cache.

    >>> measure_host_bandwidth(size_mb=8, repeats=2) > 0
    True
    """
    import torch

    n = int(size_mb * 1e6) // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: fault in the pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best / 1e9


def measure_host_matmul_flops(n: int = 1024, dtype: str = "float32", repeats: int = 3) -> float:
    """Measured matmul rate of this machine's CPU in TFLOP/s (best of `repeats` n x n x n matmuls).

    >>> measure_host_matmul_flops(n=128, repeats=1) > 0
    True
    """
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def this_machine(size_mb: float = 256.0, n: int = 1024, dtype: str = "float32") -> Hardware:
    """This machine's CPU + RAM as a `Hardware`, bandwidth and matmul rate measured now.

    >>> this_machine(size_mb=8, n=128).source.startswith("measured")
    True
    """
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = float("nan")
    bw = measure_host_bandwidth(size_mb)
    tf = measure_host_matmul_flops(n, dtype)
    return Hardware(
        f"this machine ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", mem_gib, bw, tf,
        f"measured: torch copy of {size_mb:g} MB (read+write) and {n}^3 {dtype} matmul",
    )
