"""Stream the full metrics suite over trace folders larger than the in-memory suite handles.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_stream_metrics.py                  # 5M, 10M, 20M x 32 layers
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_stream_metrics.py --sizes 200000 400000 --base 100000  # quick

Writes synthetic traces (32 layers, top-2 of 8, skewed per-layer popularity,
per-domain shifts, 25 % repeats of the previous token's experts, Zipfian token
ids, a domain column) as folders of parts of one run, in `write_trace`'s layout
(the tracer's). The first 4 parts (4M tokens) are generated; later parts repeat
them with new sequence ids, so writing 20M tokens costs compression, not sampling. Each measurement runs in a fresh
subprocess so its peak RSS (ru_maxrss) is its own:

  in-memory  load_trace + every metric, on `--base` tokens (1M)
  streamed   one `moelab.metrics.stream.run` pass for all metrics but agreement,
             plus a streamed agreement pass (the trace against itself: two
             sources read in lockstep), on each size

Prints times, tokens/s, peak RSS, time per token relative to the smallest size
(linear = 1.0) and the 20M / in-memory throughput ratio; writes
bench/results/stream_metrics_cpu.txt; deletes the synthetic files.
Targets (issue 14): peak RSS <= 2 GB and flat, time linear, streamed throughput
at the largest size within 2x of the in-memory suite's at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOMAINS = np.array(["arxiv", "github", "pubmed", "philpapers", "dm_math"])
L, E, K, SEQ = 32, 8, 2, 2048
PART = 1 << 20                                        # tokens per written part (512 whole sequences)
DISTINCT = 4                                          # parts generated; later parts repeat them as new sequences

SUITE = {
    "balance": {}, "expert_load": {},
    "capacity_drops": {"capacity_factors": [1.0, 1.25, 1.5, 2.0], "batch_sizes": [512, 4096, "sequence"]},
    "repeat_rates": {"by": "domain"}, "domain_distribution": {}, "coactivation": {},
    "domain_specialization": {}, "vocab_specialization": {}, "layer_transitions": {},
}


def part(rng, start: int, n: int, prefs, dom_prefs):
    """Tokens start..start+n of the synthetic run: (experts (n, L, K) uint8, sequence, token_id, domain)."""
    g = start + np.arange(n)
    seq = g // SEQ
    dom = (seq * 2654435761 % 2**32) % len(DOMAINS)                 # a fixed domain per sequence
    ex = np.empty((n, L, K), np.uint8)
    first_pos = g % SEQ == 0
    for l in range(L):
        logits = prefs[l][None, :] + dom_prefs[l][dom]                # (n, E)
        p = np.exp(logits - logits.max(1, keepdims=True))
        cdf = np.cumsum(p / p.sum(1, keepdims=True), 1)
        e0 = (rng.random((n, 1)) > cdf).sum(1).clip(0, E - 1)         # inverse-CDF first choice
        e1 = (e0 + 1 + rng.integers(0, E - 1, n)) % E                 # a different second choice
        top = np.stack([e0, e1], 1).astype(np.uint8)
        rep = (rng.random(n) < 0.25) & ~first_pos
        rep[0] = False
        idx = np.flatnonzero(rep)
        top[idx] = top[idx - 1]                                       # locality (within the part)
        ex[:, l] = top
    tok = np.minimum(rng.zipf(1.3, size=n), 32000) - 1
    return ex, seq, tok, DOMAINS[dom]


def write_folder(path: Path, tokens: int, seed: int = 0):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import moelab
    from moelab.store import to_arrow_table

    rng = np.random.default_rng(seed)
    prefs = [np.log(rng.dirichlet(np.full(E, 4.0))) for _ in range(L)]
    dom_prefs = [0.3 * rng.standard_normal((len(DOMAINS), E)) for _ in range(L)]
    tables = []
    for i, s in enumerate(range(0, tokens, PART)):
        n = min(PART, tokens - s)
        if i < DISTINCT or n < PART:
            ex, seq, tok, dom = part(rng, s, n, prefs, dom_prefs)
            pos = np.arange(s, s + n) % SEQ
            t = moelab.RoutingTrace.from_arrays(ex, num_experts=E, sequence=seq, position=pos, token_id=tok,
                                                domain=dom)
            table = to_arrow_table(t, shard=0, run="bench")
            if i < DISTINCT:
                tables.append(table)
        else:                                                     # a generated part again, as later sequences
            base = tables[i % DISTINCT]
            seq = base.column("sequence").to_numpy() + (i - i % DISTINCT) * (PART // SEQ)
            table = base.set_column(base.schema.get_field_index("sequence"), "sequence",
                                    pa.array(seq, base.schema.field("sequence").type))
        path.mkdir(parents=True, exist_ok=True)                   # write_trace's layout, at a faster zstd level
        pq.write_table(table, path / f"part-{i:05d}.parquet", compression="zstd", compression_level=1)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(mode: str, path: str, tokens: int):
    import moelab
    from moelab import metrics
    from moelab.metrics import stream

    from moelab.bench import time_interleaved

    def step():
        if mode == "write":
            write_folder(Path(path), tokens)
        elif mode == "memory":
            tr = moelab.load_trace(path)
            for name, kw in SUITE.items():
                getattr(metrics, name)(tr, **kw)
            metrics.agreement(tr, tr)
        else:
            from moelab.scan import scan_trace

            src = scan_trace(path)
            stream.run(src, SUITE)
            metrics.agreement(src, scan_trace(path))

    c0 = cpu_seconds()
    wall = time_interleaved({mode: step}, repeats=1, warmup=0, device="cpu")[mode][0]   # one run: fresh process
    print(json.dumps({"wall": wall, "seconds": cpu_seconds() - c0, "peak_gib": peak_gib()}))


def child(mode: str, path: Path, tokens: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(path), str(tokens)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5_000_000, 10_000_000, 20_000_000])
    p.add_argument("--base", type=int, default=1_000_000, help="tokens of the in-memory suite")
    p.add_argument("--tmp", default=tempfile.gettempdir())
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "stream_metrics_cpu.txt"))
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], int(args.worker[2]))

    lines = []

    def say(s):
        print(s, flush=True)
        lines.append(s)

    from moelab.bench import environment

    say(json.dumps(environment(device="cpu", dtype="n/a")))
    say(f"bench_stream_metrics: {L} layers, top-{K} of {E}, sequences of {SEQ}, parts of {PART} tokens; "
        f"{platform.processor() or platform.machine()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say(f"suite: {', '.join(SUITE)}, agreement (streamed: one pass for the suite + one lockstep agreement pass)")
    work = Path(tempfile.mkdtemp(prefix="moelab-bench-stream-", dir=args.tmp))
    rows = []
    try:
        base = work / "base"
        w = child("write", base, args.base)
        mem = child("memory", base, args.base)
        mem_tps = args.base / mem["seconds"]
        say(f"in-memory  {args.base:>11,} tokens  {mem['seconds']:7.1f} s CPU ({mem['wall']:6.1f} s wall)  "
            f"{mem_tps:11,.0f} tok/s  "
            f"peak RSS {mem['peak_gib']:.2f} GiB   (written in {w['seconds']:.0f} s)")
        shutil.rmtree(base)
        for n in args.sizes:
            path = work / f"t{n}"
            w = child("write", path, n)
            size = sum(f.stat().st_size for f in path.rglob("*.parquet")) / 2**30
            r = child("stream", path, n)
            shutil.rmtree(path)
            rows.append((n, r))
            say(f"streamed   {n:>11,} tokens  {r['seconds']:7.1f} s CPU ({r['wall']:6.1f} s wall)  "
                f"{n / r['seconds']:11,.0f} tok/s  "
                f"peak RSS {r['peak_gib']:.2f} GiB   ({size:.2f} GiB on disk, written in {w['seconds']:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n0, r0 = rows[0]
    per0 = r0["seconds"] / n0
    say("times are process CPU seconds (user + sys) of each subprocess: this machine is shared, so wall time "
        "includes waiting for a core; tok/s = tokens / CPU s")
    say("time per token relative to the smallest size (1.00 = linear): "
        + ", ".join(f"{n / 1e6:g}M {r['seconds'] / n / per0:.2f}" for n, r in rows))
    nl, rl = rows[-1]
    ratio = mem_tps / (nl / rl["seconds"])
    peaks = [r["peak_gib"] for _, r in rows]
    say(f"in-memory tok/s at {args.base / 1e6:g}M / streamed tok/s at {nl / 1e6:g}M = {ratio:.2f} (target <= 2)")
    say(f"streamed peak RSS {min(peaks):.2f}-{max(peaks):.2f} GiB (target <= 2 GB, flat in tokens)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
