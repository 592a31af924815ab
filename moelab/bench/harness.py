"""The timing harness every moelab benchmark uses: interleaved repeats, medians, where it ran.

    >>> from moelab.bench import time_interleaved, summarize
    >>> times = time_interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, repeats=3)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 3)
    >>> list(summarize(times).columns)
    ['median_s', 'min_s', 'max_s', 'iqr_s', 'repeats']

Timing rules (`time_interleaved`): every variant gets `warmup` untimed calls first; then
`repeats` rounds, each round timing every variant once, in a rotated order, so slow drift
(thermal throttling, a neighbour's job, frequency scaling) hits all variants equally instead
of whichever ran last. Report medians (`summarize`). On CUDA, `torch.cuda.synchronize()`
brackets each timed call so the clock measures the kernels, not their launch.

A variant is a callable `fn`, a pair `(setup, fn)` or a `Variant(fn, setup=, context=)`:
`setup()` runs untimed before each call (e.g. cropping a KV cache back), and `context()`
returns a context manager entered before and exited after each call, both untimed (e.g.
`lambda: moelab.trace(model)`, to time a forward with the hooks on but not their set-up).

`environment` records where and how a benchmark ran; `save_results` writes a results table
with it (.csv or .json under bench/results/).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Variant", "sync", "time_once", "time_interleaved", "summarize", "environment", "save_results"]


@dataclass(frozen=True)
class Variant:
    """One thing to time: `fn()`, after an untimed `setup()`, inside an untimed `context()`."""

    fn: Callable
    setup: Callable | None = None
    context: Callable | None = None     # () -> context manager


def _as_variant(v) -> Variant:
    if isinstance(v, Variant):
        return v
    if isinstance(v, tuple):
        if len(v) != 2 or not callable(v[1]):
            raise TypeError(f"a variant tuple must be (setup, fn); got {v!r}")
        return Variant(fn=v[1], setup=v[0])
    if not callable(v):
        raise TypeError(f"a variant must be callable, (setup, fn) or Variant; got {v!r}")
    return Variant(fn=v)


def sync(device) -> None:
    """Wait for the device: CUDA synchronizes, CPU returns at once; None syncs if this process uses CUDA."""
    import torch

    if device is None:  # unknown: sync if this process has used CUDA at all
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def time_once(variant, device=None) -> float:
    """Seconds of one call of a variant (setup and context untimed, device synchronized around the call)."""
    v = _as_variant(variant)
    if v.setup:
        v.setup()
    ctx = v.context() if v.context else None
    if ctx is not None:
        ctx.__enter__()
    try:
        sync(device)
        t0 = time.perf_counter()
        v.fn()
        sync(device)
        return time.perf_counter() - t0
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


def time_interleaved(fns: dict, repeats: int = 5, warmup: int = 1, device=None) -> dict[str, list[float]]:
    """Wall-clock seconds of each variant, `repeats` interleaved rounds after `warmup` calls.

    fns: {name: fn | (setup, fn) | Variant}.
    device: "cuda..." synchronizes around every timed call; "cpu" never; None does if CUDA is in use.
    Returns {name: [seconds per repeat]}.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    variants = {k: _as_variant(v) for k, v in fns.items()}
    names = list(variants)
    if not names:
        return {}
    for name in names:  # warm-up: allocator, kernel selection, caches
        for _ in range(warmup):
            time_once(variants[name], device)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(time_once(variants[name], device))
    return times


def summarize(times: dict[str, list[float]]):
    """Median / min / max / interquartile range per variant, as a DataFrame indexed by name."""
    import pandas as pd

    rows = {}
    for k, v in times.items():
        a = np.asarray(v)
        q1, q3 = np.percentile(a, [25, 75])
        rows[k] = dict(median_s=float(np.median(a)), min_s=float(a.min()), max_s=float(a.max()),
                       iqr_s=float(q3 - q1), repeats=len(a))
    return pd.DataFrame(rows).T


def environment(device="cpu", dtype="bf16") -> dict:
    """Where and how a benchmark ran: device name, library versions, dtype, date."""
    import torch
    import transformers

    dev = str(device)
    if dev.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(dev))
    else:
        name = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return dict(
        device=dev, device_name=name, torch=torch.__version__, transformers=transformers.__version__,
        dtype=str(dtype), date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        python=platform.python_version(),
    )


def save_results(df, path, meta: dict | None = None):
    """Save a results DataFrame to .csv (metadata as columns on every row) or .json ({"meta", "rows"}).

    meta defaults to `df.attrs["meta"]` (set by run_moe_vs_dense) or `environment()`.
    """
    from pathlib import Path

    p = Path(path)
    meta = meta or df.attrs.get("meta") or environment()
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".json":
        rows = json.loads(df.to_json(orient="records"))
        p.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    elif p.suffix == ".csv":
        out = df.copy()
        for k, v in meta.items():   # lists and dicts as one JSON string per row (pandas would broadcast a list)
            out[f"meta_{k}"] = v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)
        out.to_csv(p, index=False)
    else:
        raise ValueError(f"save_results: unknown extension in {str(path)!r}; use .csv or .json")
    return p
