"""Which device and dtype to run on, chosen from what this machine does.

    >>> from moelab.device import choose_cpu_dtype
    >>> choose_cpu_dtype(fp32_gflops=51.0, bf16_gflops=1.3)[0]       # AVX2-only CPU: bf16 is emulated
    'float32'
    >>> choose_cpu_dtype(fp32_gflops=60.0, bf16_gflops=150.0)[0]     # AVX512-BF16 / AMX: native bf16
    'bfloat16'

On CPUs with native bf16 (AVX512-BF16, AMX) a bf16 matmul is ~2.5x faster than
fp32; on AVX2-only CPUs it is ~40x slower (1.3 against 51 GFLOP/s measured on
an AMD EPYC). So the CPU default is measured, not assumed: `cpu_matmul_speeds`
times one small matmul in each dtype (~0.3 s), and the verdict is cached per
CPU model and torch version in `~/.cache/moelab/cpu_dtype.json`
(`MOELAB_CACHE` moves it). On CUDA the default is float16. `MOELAB_DTYPE`
or an explicit dtype always wins. fp16 on CPU is slow everywhere.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

BF16_MIN_SPEEDUP = 1.2   # bf16 must beat fp32 by this factor to be the CPU default


def choose_cpu_dtype(fp32_gflops: float, bf16_gflops: float) -> tuple[str, str]:
    """(dtype name, reason) from measured matmul speeds. Pure: the tests inject speeds."""
    if fp32_gflops <= 0 or bf16_gflops <= 0:
        raise ValueError(f"speeds must be positive; got fp32={fp32_gflops!r}, bf16={bf16_gflops!r} GFLOP/s")
    ratio = bf16_gflops / fp32_gflops
    if ratio >= BF16_MIN_SPEEDUP:
        return "bfloat16", f"bf16 matmul runs {ratio:.1f}x fp32 on this CPU ({bf16_gflops:.0f} vs {fp32_gflops:.0f} GFLOP/s)"
    return "float32", (f"bf16 matmul runs {ratio:.2f}x fp32 on this CPU ({bf16_gflops:.1f} vs {fp32_gflops:.1f} "
                       "GFLOP/s): no native bf16, so fp32")


def cpu_matmul_speeds(n: int = 256, budget_s: float = 0.15) -> dict[str, float]:
    """GFLOP/s of an n x n matmul in fp32 and bf16 on one thread (each timed for about `budget_s`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
            a @ b                                            # warm-up
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < budget_s:
                a @ b
                reps += 1
            out[name] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
        return out
    finally:
        torch.set_num_threads(threads)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    root = Path(os.environ.get("MOELAB_CACHE", Path.home() / ".cache" / "moelab"))
    return root / "cpu_dtype.json"


def cpu_default_dtype(*, measure=cpu_matmul_speeds) -> tuple[str, str]:
    """(dtype name, reason) for this CPU: measured once per CPU model and torch version, then cached."""
    import torch

    key = f"{_cpu_name()} | torch {torch.__version__} | {torch.backends.cpu.get_cpu_capability()}"
    f = _cache_file()
    try:
        cached = json.loads(f.read_text())
        if cached.get("key") == key:
            return cached["dtype"], cached["reason"] + " (cached)"
    except (OSError, ValueError, KeyError):
        pass
    speeds = measure()
    dtype, reason = choose_cpu_dtype(speeds["float32"], speeds["bfloat16"])
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"key": key, "dtype": dtype, "reason": reason, "speeds": speeds}))
    except OSError:
        pass  # a read-only home: measure again next time
    return dtype, reason


def resolve_device_dtype(device: str = "auto", dtype: str | None = None, *, verbose: bool = True):
    """('cpu' | 'cuda' | ..., torch dtype): the explicit choice, else CUDA fp16, else the measured CPU default.

    Prints the choice and why (set verbose=False to silence).
    """
    import torch

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "", "auto") else device
    dtype = dtype or os.environ.get("MOELAB_DTYPE") or None
    if dtype:
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
        name, why = str(dtype), "asked for (argument or MOELAB_DTYPE)"
    elif dev.startswith("cuda"):
        name, why = "float16", "the default on CUDA"
    else:
        name, why = cpu_default_dtype()
    if verbose:
        print(f"moelab: device={dev} dtype={name}: {why}")
    return dev, getattr(torch, name)
