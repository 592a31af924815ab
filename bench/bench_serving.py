"""Time every serving simulator on a 1M-token x 32-layer top-2-of-8 trace (target: <= 10 s each).

    $ OMP_NUM_THREADS=1 python bench/bench_serving.py                 # writes bench/results/serving_cpu.json
    $ OMP_NUM_THREADS=1 python bench/bench_serving.py --tokens 100000 --out /tmp/s.json   # a quick look

The trace is the Mixtral-like synthetic router (moelab.serving.mixtral_like_trace), whose generation
is timed too. Timing: moelab.bench.time_interleaved (one round, no warm-up: each call takes seconds) for
wall-clock seconds, plus the process's CPU seconds (time.process_time) for each simulator; the result
file records the environment, OMP_NUM_THREADS and the load average before and after, so a reader can
tell a quiet machine from a loaded one.
"""

import argparse
import json
import os
import time
from pathlib import Path

import pandas  # noqa: F401  (imported before timing: its first import is not a simulator's cost)

from moelab.bench import environment, summarize, time_interleaved
from moelab.serving import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, expert_load,
                            imbalance, imbalance_over_windows, mixtral_like_trace, predict_from_previous_layer,
                            simulate_cache)

TARGET_S = 10.0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--note", default="", help="free text stored in the result file (e.g. 'machine under load')")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serving_cpu.json"))
    a = ap.parse_args(argv)
    load_before = os.getloadavg()
    out = {}

    def gen():
        out["trace"] = mixtral_like_trace(a.tokens, a.layers, seq_len=1024, seed=0)

    cpu = {}

    def cpu_timed(name, fn):  # CPU seconds of this process next to the harness's wall clock: on a shared,
        def run():            # loaded machine wall time mostly measures the neighbours
            c = time.process_time()
            fn()
            cpu.setdefault(name, []).append(time.process_time() - c)
        return run

    fns = {f"cache {p}": (lambda p=p: out.__setitem__(p, simulate_cache(ex, a.capacity, p, num_experts=8)))
           for p in ("lru", "lfu", "belady")}
    fns["cache prefetch (previous-token predictor)"] = lambda: out.__setitem__(
        "prefetch-prev", simulate_cache(ex, a.capacity, "prefetch", num_experts=8))
    fns["cache prefetch (previous-layer predictor)"] = lambda: out.__setitem__(
        "prefetch", simulate_cache(ex, a.capacity, "prefetch", num_experts=8, predicted=out["pred"]))
    fns["predictor: previous layer's first choice"] = lambda: predict_from_previous_layer(ex, num_experts=8)
    fns["EP: expert_load"] = lambda: expert_load(ex, 8)
    fns["EP: imbalance, contiguous + EPLB (G=4, 12 slots)"] = lambda: (
        imbalance(ld, contiguous_placement(8, 4), 4), imbalance(ld, balanced_placement(ld, 4, 12), 4))
    fns["EP: imbalance over 4096-token windows (G=4, 12 slots)"] = lambda: imbalance_over_windows(
        ex, 4, 4096, num_experts=8, num_slots=12)
    fns["EP: dispatch bytes per token (contiguous)"] = lambda: dispatch_bytes_per_token(
        ex, contiguous_placement(8, 4), 4, 4096, num_experts=8)
    fns["EP: dispatch bytes per token (EPLB, 12 slots)"] = lambda: dispatch_bytes_per_token(
        ex, balanced_placement(ld, 4, 12), 4, 4096, num_experts=8)

    g = "synthetic generator (mixtral_like_trace)"
    t_gen = time_interleaved({g: cpu_timed(g, gen)}, repeats=a.repeats, warmup=0)
    ex = out["trace"].experts
    out["pred"] = predict_from_previous_layer(ex, num_experts=8)
    ld = expert_load(ex, 8)
    times = {**t_gen, **time_interleaved({k: cpu_timed(k, f) for k, f in fns.items()}, repeats=a.repeats, warmup=0)}
    summ = summarize(times)
    rows = []
    print(f"{'':<56s} {'wall':>7s}     {'cpu':>7s}")
    for name, r in summ.iterrows():
        c = min(cpu.get(name, [float("nan")]))
        ok = r.median_s <= TARGET_S
        rows.append(dict(step=name, wall_s=round(float(r.median_s), 3), cpu_s=round(c, 3), wall_within_target=bool(ok),
                         cpu_within_target=bool(c <= TARGET_S) if c == c else None))
        print(f"{name:<56s} {r.median_s:7.2f} s   {c:7.2f} s   {'ok' if ok else 'OVER 10 s (wall)'}", flush=True)
    hit = {p: round(float(out[p].hit_rate.mean()), 4) for p in ("lru", "lfu", "belady", "prefetch-prev", "prefetch")}
    print("mean hit rates:", hit)
    result = dict(
        meta=dict(environment("cpu", "n/a"), tokens=a.tokens, layers=a.layers, experts=8, top_k=2,
                  capacity=a.capacity, repeats=a.repeats, target_s=TARGET_S,
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"), cpu_count=os.cpu_count(),
                  load_average_before=[round(x, 2) for x in load_before],
                  load_average_after=[round(x, 2) for x in os.getloadavg()], note=a.note,
                  command="OMP_NUM_THREADS=1 python bench/bench_serving.py"),
        rows=rows, mean_hit_rate=hit,
        prefetch_loads_per_token=round(float(out["prefetch"].prefetch_loads.sum() / a.tokens), 3))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
