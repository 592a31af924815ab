"""Benchmark the routing metrics on a Mixtral-sized synthetic trace.

    .venv/bin/python bench/bench_metrics.py                 # 1M tokens x 32 layers, top-2 of 8
    .venv/bin/python bench/bench_metrics.py --tokens 100000 # quicker

Builds a trace with realistic, non-uniform routing (per-layer expert
popularity, per-domain preferences, 20-30 % repeats of the previous token's
experts), float16 weights, a domain column and no logits; saves it to Parquet
with RoutingTrace.save, then times load_trace and every metric. Prints each
step's seconds, the total and the peak resident memory (ru_maxrss).
Target on a 2-core machine: total < 30 s, peak < 4 GB.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import moelab  # noqa: E402
from moelab import metrics  # noqa: E402

DOMAINS = np.array(["arxiv", "github", "pubmed", "philpapers", "dm_math"])


def synthetic_trace(tokens: int, layers: int = 32, experts: int = 8, k: int = 2, seq_len: int = 2048, seed: int = 0):
    rng = np.random.default_rng(seed)
    T, L, E = tokens, layers, experts
    sequence = np.arange(T) // seq_len
    dom_of_seq = rng.integers(0, len(DOMAINS), size=int(sequence[-1]) + 1)
    dom = dom_of_seq[sequence]                                        # (tokens,)
    token_id = np.minimum(rng.zipf(1.3, size=T), 32000) - 1           # Zipfian vocabulary
    ex = np.empty((T, L, k), np.uint8 if E <= 256 else np.int16)      # (tokens, layers, k)
    weights = np.empty((T, L, k), np.float32)
    first_pos = np.r_[True, sequence[1:] != sequence[:-1]]
    rows = np.arange(T)[:, None]
    for l in range(L):
        pref = np.log(rng.dirichlet(np.full(E, 4.0)))                   # layer popularity
        dom_pref = 0.3 * rng.standard_normal((len(DOMAINS), E))        # domain shift
        scores = rng.gumbel(size=(T, E)).astype(np.float32) + (pref + dom_pref[dom]).astype(np.float32)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < E else np.tile(np.arange(E), (T, 1))
        s = scores[rows, top]                                          # (tokens, k)
        order = np.argsort(-s, axis=1)
        top, s = np.take_along_axis(top, order, 1), np.take_along_axis(s, order, 1)
        repeat = (rng.random(T) < 0.25) & ~first_pos
        idx = np.flatnonzero(repeat)
        top[idx] = top[idx - 1]                                        # locality: copy previous token
        ex[:, l] = top
        w = np.exp(s - s[:, :1])
        weights[:, l] = w / w.sum(1, keepdims=True)                    # softmax over the top-k
    weights = weights.astype(np.float16)
    return moelab.RoutingTrace.from_arrays(
        ex, weights, num_experts=E, sequence=sequence, token_id=token_id, domain=DOMAINS[dom]
    )


def perturbed(trace, frac: float = 0.1, seed: int = 1):
    """A copy whose first choice is changed on `frac` of (token, layer) entries."""
    rng = np.random.default_rng(seed)
    ex = trace.experts.copy()                                          # (tokens, layers, k)
    flip = rng.random(ex.shape[:2]) < frac
    old = ex[..., 0].astype(np.int64)
    new = np.where(flip, (old + 1 + rng.integers(0, trace.num_experts - 1, flip.shape)) % trace.num_experts, old)
    for r in range(1, ex.shape[2]):                                    # keep ids distinct: swap with a clash
        clash = flip & (ex[..., r] == new)
        ex[..., r][clash] = old[clash]
    ex[..., 0] = new
    return dataclasses.replace(trace, experts=ex)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--layers", type=int, default=32)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    tr = synthetic_trace(args.tokens, args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.parquet"
        tr.save(path)
        size_mb = path.stat().st_size / 2**20
        print(f"built + saved {tr} ({size_mb:.0f} MiB) in {time.perf_counter() - t0:.1f}s (not timed below)")
        other = perturbed(tr)
        del tr

        times = {}

        def step(name, fn):
            s = time.perf_counter()
            out = fn()
            times[name] = time.perf_counter() - s
            print(f"  {name:<24s} {times[name]:7.2f} s")
            return out

        trace = step("load_trace", lambda: moelab.load_trace(path))
    step("balance", lambda: metrics.balance(trace))
    step("expert_load", lambda: metrics.expert_load(trace))
    step("capacity_drops (4x3)", lambda: metrics.capacity_drops(trace, [1.0, 1.25, 1.5, 2.0], [512, 4096, "sequence"]))
    step("repeat_rates(domain)", lambda: metrics.repeat_rates(trace, by="domain"))
    step("domain_distribution", lambda: metrics.domain_distribution(trace))
    step("coactivation", lambda: metrics.coactivation(trace))
    step("domain_specialization", lambda: metrics.domain_specialization(trace))
    step("vocab_specialization", lambda: metrics.vocab_specialization(trace))
    step("layer_transitions", lambda: metrics.layer_transitions(trace))
    step("agreement", lambda: metrics.agreement(trace, other))
    total = sum(times.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB on Linux
    print(f"  {'total':<24s} {total:7.2f} s   (target < 30 s)")
    print(f"  peak RSS {peak:.2f} GiB (whole process, incl. building the trace; target < 4 GB)")


if __name__ == "__main__":
    main()
