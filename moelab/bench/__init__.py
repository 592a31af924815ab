"""Benchmarks: one timing harness, the MoE-vs-dense experiment, the tracer-overhead experiment.

    >>> from moelab.bench import time_interleaved, summarize, environment, save_results
    >>> len(time_interleaved({"a": lambda: None}, repeats=2)["a"])
    2

* `moelab.bench.harness`        `time_interleaved` (warm-up, rotated rounds), `summarize`
                                (medians), `environment`, `save_results`: used by every benchmark,
                                `bench/*.py` included
* `moelab.bench.moe_vs_dense`   `run_moe_vs_dense`, `run_full_size`, `ratio_table`, `BenchConfig`
* `moelab.bench.tracer_overhead` traced / plain forward time and corpus-tracing throughput
* `moelab.bench.cli`            `moelab bench moe-vs-dense ...` (`main`)

Results go to small files under bench/results/; nothing here asserts a time.
"""

from .harness import Variant, environment, save_results, summarize, sync, time_interleaved, time_once
from .moe_vs_dense import (EXPERTS_IMPLEMENTATIONS, TORCH_DTYPES, BenchConfig, add_ratios,
                           check_experts_implementations, ratio_table, run_full_size, run_moe_vs_dense,
                           scale_to_layers)


def main(argv=None):
    """`moelab bench moe-vs-dense` (see `moelab.bench.cli.main`)."""
    from .cli import main as _main

    return _main(argv)


__all__ = ["Variant", "environment", "save_results", "summarize", "sync", "time_interleaved", "time_once",
           "EXPERTS_IMPLEMENTATIONS", "TORCH_DTYPES", "BenchConfig", "add_ratios", "check_experts_implementations",
           "ratio_table", "run_full_size", "run_moe_vs_dense", "scale_to_layers", "main"]
