"""
Accelerator datasheet numbers (with sources) and measured numbers for this machine.

Each `Hardware` holds what the decode roofline needs: memory capacity, memory bandwidth and
peak dense (no 2:4 sparsity) 16-bit tensor throughput, plus the names of its host link (PCIe,
for expert offloading) and peer link (NVLink) in `LINKS`, each with its source.

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
    host_link: str = ""  # key of LINKS: how host RAM reaches this device (expert offloading)
    peer_link: str = ""  # key of LINKS: device-to-device interconnect (expert-parallel all-to-all), "" if none

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
        host_link="PCIe-4.0-x16", peer_link="NVLink-3",
    ),
    "H100-SXM": Hardware(
        "NVIDIA H100 SXM 80GB", 80, 3350.0, 989.0,
        "NVIDIA H100 Tensor Core GPU datasheet: 3.35 TB/s HBM3, BF16/FP16 tensor 1,979 TFLOPS with sparsity "
        "(989 dense); https://www.nvidia.com/en-us/data-center/h100/",
        host_link="PCIe-5.0-x16", peer_link="NVLink-4",
    ),
    "H200": Hardware(
        "NVIDIA H200 SXM 141GB", 141, 4800.0, 989.0,
        "NVIDIA H200 Tensor Core GPU datasheet: 141 GB HBM3e, 4.8 TB/s, BF16/FP16 tensor 1,979 TFLOPS with "
        "sparsity (989 dense); https://www.nvidia.com/en-us/data-center/h200/",
        host_link="PCIe-5.0-x16", peer_link="NVLink-4",
    ),
    "RTX-4090": Hardware(
        "NVIDIA GeForce RTX 4090", 24, 1008.0, 165.2,
        "NVIDIA Ada GPU architecture whitepaper v2.1, Appendix A: 1,008 GB/s GDDR6X; FP16 tensor 165.2 TFLOPS "
        "dense with FP32 accumulate (330.3 with FP16 accumulate); "
        "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
        host_link="PCIe-4.0-x16",
    ),
}


@dataclass(frozen=True)
class Link:
    """A host-device or device-device link: peak bandwidth per direction, GB/s (1e9 B/s), and its source."""

    name: str
    gbs_per_direction: float
    source: str


# PCIe: PCI-SIG base specifications; per lane and direction 8 GT/s (3.0), 16 GT/s (4.0), 32 GT/s (5.0)
# with 128b/130b encoding, so x16 = 16 x rate x 128/130 / 8 bytes. Measured pinned host->device copies
# reach ~80-90 % of these. NVLink: NVIDIA datasheets give the total of both directions per GPU.
LINKS: dict[str, Link] = {
    "PCIe-3.0-x16": Link("PCIe 3.0 x16", 16 * 8 * 128 / 130 / 8,
                         "PCI Express Base Specification 3.0: 8 GT/s per lane, 128b/130b encoding -> 15.75 GB/s per direction"),
    "PCIe-4.0-x16": Link("PCIe 4.0 x16", 16 * 16 * 128 / 130 / 8,
                         "PCI Express Base Specification 4.0: 16 GT/s per lane, 128b/130b -> 31.5 GB/s per direction "
                         "(RTX 4090 and A100 are PCIe Gen 4 devices: Ada whitepaper, A100 datasheet)"),
    "PCIe-5.0-x16": Link("PCIe 5.0 x16", 16 * 32 * 128 / 130 / 8,
                         "PCI Express Base Specification 5.0: 32 GT/s per lane, 128b/130b -> 63.0 GB/s per direction "
                         "(H100 datasheet: PCIe Gen5 128 GB/s, both directions)"),
    "NVLink-3": Link("NVLink 3 (A100)", 300.0,
                     "NVIDIA A100 datasheet: NVLink 600 GB/s per GPU (both directions) -> 300 GB/s per direction"),
    "NVLink-4": Link("NVLink 4 (H100/H200)", 450.0,
                     "NVIDIA H100 datasheet: NVLink 900 GB/s per GPU (both directions) -> 450 GB/s per direction"),
}


def get_link(link) -> Link:
    """A `Link` from itself, a key of `LINKS`, or a `Hardware` (its host link).

    >>> round(get_link("PCIe-4.0-x16").gbs_per_direction, 1)
    31.5
    """
    if isinstance(link, Link):
        return link
    if isinstance(link, Hardware):
        if not link.host_link:
            raise ValueError(f"{link.name} has no host_link in the table; pass link='PCIe-4.0-x16' (one of {list(LINKS)})")
        link = link.host_link
    for key, v in LINKS.items():
        if str(link).lower() == key.lower():
            return v
    raise ValueError(f"unknown link {link!r}; use one of {list(LINKS)} or pass a moelab.compute.hardware.Link(...)")


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
