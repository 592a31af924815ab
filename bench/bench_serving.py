"""Time every serving simulator on a 1M-token x 32-layer top-2-of-8 trace (target: <= 10 s each).

    $ python bench/bench_serving.py                 # writes bench/results/serving_cpu.txt
    $ python bench/bench_serving.py --tokens 100000 # a quick look

The trace is the Mixtral-like synthetic router (moelab.serving.mixtral_like_trace), whose generation
is timed too. One run, wall-clock seconds (time.perf_counter), OMP_NUM_THREADS as set by the caller.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from moelab.serving import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, expert_load,
                            imbalance, imbalance_over_windows, mixtral_like_trace, predict_from_previous_layer,
                            simulate_cache)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serving_cpu.txt"))
    a = ap.parse_args()
    lines = [f"# bench_serving: {a.tokens:,} tokens x {a.layers} layers, top-2 of 8, cache C={a.capacity}",
             f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()[0]:.1f}"]

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        lines.append(f"{name:<42s} {dt:7.2f} s   {'ok' if dt <= 10 else 'OVER 10 s'}")
        print(lines[-1], flush=True)
        return out

    tr = timed("synthetic generator (mixtral_like_trace)", lambda: mixtral_like_trace(a.tokens, a.layers, seq_len=1024))
    ex = tr.experts
    for pol in ("lru", "lfu", "belady"):
        r = timed(f"cache {pol}", lambda: simulate_cache(ex, a.capacity, pol, num_experts=8))
        lines.append(f"    mean hit rate {r.hit_rate.mean():.4f}")
    pred = timed("predictor: previous layer's first choice", lambda: predict_from_previous_layer(ex, num_experts=8))
    r = timed("cache prefetch (previous-layer predictor)", lambda: simulate_cache(ex, a.capacity, "prefetch",
                                                                                   num_experts=8, predicted=pred))
    lines.append(f"    mean hit rate {r.hit_rate.mean():.4f}, prefetch loads/token {r.prefetch_loads.sum() / a.tokens:.2f}")
    ld = timed("EP: expert_load", lambda: expert_load(ex, 8))
    timed("EP: imbalance, contiguous + EPLB (G=4, 12 slots)",
          lambda: (imbalance(ld, contiguous_placement(8, 4), 4), imbalance(ld, balanced_placement(ld, 4, 12), 4)))
    timed("EP: imbalance over 4096-token windows", lambda: imbalance_over_windows(ex, 4, 4096, num_experts=8))
    timed("EP: dispatch bytes per token", lambda: dispatch_bytes_per_token(ex, contiguous_placement(8, 4), 4, 4096,
                                                                           num_experts=8))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
