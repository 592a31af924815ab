"""Benchmark the routing metrics suite on a synthetic trace, at Mixtral's or DeepSeek-V3's routing shape.

    .venv/bin/python bench/bench_metrics.py                           # Mixtral: 1M tokens x 32 layers, top-2 of 8
    .venv/bin/python bench/bench_metrics.py --shape deepseek-v3       # 100k tokens x 58 layers, top-8 of 256
    .venv/bin/python bench/bench_metrics.py --tokens 100000           # quicker

Builds a trace with realistic, non-uniform routing (per-layer expert
popularity, per-domain preferences, 25 % repeats of the previous token's
experts, Zipfian token ids), float16 weights (softmax over the top-k), a domain
column and no logits; saves it to Parquet with RoutingTrace.save, then times
load_trace and every metric once each with `moelab.bench.time_interleaved`
(`--repeats N` for N interleaved rounds; medians reported). Prints each step's
seconds, the total and the peak resident memory (ru_maxrss), and writes them to
bench/results/metrics_<shape>_cpu.txt.
Targets on this 2-core machine: Mixtral 1M tokens total < 30 s, peak < 4 GB;
DeepSeek-V3 shape (issue 13) 100k tokens total <= 30 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
        with np.errstate(divide="ignore"):                            # Gumbel noise in float32 (u = 0 -> -inf)
            scores = -np.log(-np.log(rng.random((T, E), dtype=np.float32)))
        scores += (pref + dom_pref)[dom].astype(np.float32)             # (tokens, E)
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


SHAPES = {                                           # (default tokens, MoE layers, routed experts, top-k)
    "mixtral": (1_000_000, 32, 8, 2),                # Mixtral-8x7B
    "deepseek-v3": (100_000, 58, 256, 8),            # DeepSeek-V3: 61 layers, the first 3 dense
}


def suite(holder: dict, path, other) -> dict:
    """{step name: fn}; load_trace first fills holder["trace"] for the others."""
    tr = lambda: holder["trace"]  # noqa: E731
    return {
        "load_trace": lambda: holder.update(trace=moelab.load_trace(path)),
        "balance": lambda: metrics.balance(tr()),
        "expert_load": lambda: metrics.expert_load(tr()),
        "capacity_drops (4x3)": lambda: metrics.capacity_drops(tr(), [1.0, 1.25, 1.5, 2.0], [512, 4096, "sequence"]),
        "repeat_rates(domain)": lambda: metrics.repeat_rates(tr(), by="domain"),
        "domain_distribution": lambda: metrics.domain_distribution(tr()),
        "coactivation": lambda: metrics.coactivation(tr()),
        "domain_specialization": lambda: metrics.domain_specialization(tr()),
        "vocab_specialization": lambda: metrics.vocab_specialization(tr()),
        "layer_transitions": lambda: metrics.layer_transitions(tr()),
        "agreement": lambda: metrics.agreement(tr(), other),
    }


def main(argv=None):
    from moelab.bench import environment, summarize, time_interleaved

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="mixtral")
    p.add_argument("--tokens", type=int, default=None, help="default: 1M (mixtral), 100k (deepseek-v3)")
    p.add_argument("--layers", type=int, default=None, help="MoE layers (default: the shape's)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians reported)")
    p.add_argument("--out", default=None, help="result file (default bench/results/metrics_<shape>_cpu.txt)")
    args = p.parse_args(argv)
    tokens, L, E, k = SHAPES[args.shape]
    tokens, L = args.tokens or tokens, args.layers or L
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"metrics_{args.shape.replace('-', '_')}_cpu.txt")
    lines = []

    def say(x):
        print(x, flush=True)
        lines.append(x)

    say(json.dumps(environment(device="cpu", dtype="n/a")))
    t0 = time.perf_counter()
    tr = synthetic_trace(tokens, L, E, k)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.parquet"
        tr.save(path)
        size_mb = path.stat().st_size / 2**20
        say(f"shape {args.shape}: {tr} ({size_mb:.0f} MiB on disk); built + saved in "
            f"{time.perf_counter() - t0:.1f}s (not timed)")
        other = perturbed(tr)
        del tr
        holder: dict = {}
        cpu: dict = {}

        def with_cpu(name, fn):                          # the process's CPU seconds too (the machine is shared)
            def run():
                c = time.process_time()
                fn()
                cpu.setdefault(name, []).append(time.process_time() - c)
            return run

        steps = {name: with_cpu(name, fn) for name, fn in suite(holder, path, other).items()}
        times = time_interleaved(steps, repeats=args.repeats, warmup=0, device="cpu")
    med, med_cpu = summarize(times)["median_s"], summarize(cpu)["median_s"]
    say(f"  {'step':<24s} {'wall s':>7s} {'CPU s':>7s}")
    for name, sec in med.items():
        say(f"  {name:<24s} {sec:7.2f} {med_cpu[name]:7.2f}")
    total, total_cpu = float(med.sum()), float(med_cpu.sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB on Linux
    say(f"  {'total':<24s} {total:7.2f} {total_cpu:7.2f}   (medians of {args.repeats} round(s); target <= 30 s: "
        f"CPU {'OK' if total_cpu <= 30 else 'OVER'}, wall {'OK' if total <= 30 else 'OVER'})")
    say(f"  peak RSS {peak:.2f} GiB (whole process, incl. building the trace)")
    say("measured on a shared 2-core machine (other jobs running): wall times include waiting for a core; CPU s are "
        "this process's own (single-threaded numpy: on a quiet core, wall ~ CPU)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
