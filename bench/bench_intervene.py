"""Intervention overhead: forward time inside `moelab.intervene` / plain forward time, one run, interleaved.

    $ OMP_NUM_THREADS=1 .venv/bin/python bench/bench_intervene.py            # CPU fp32, ~3 min
    $ .venv/bin/python bench/bench_intervene.py --device cuda --dtype bfloat16

Model: the random-init mid-size Mixtral of bench/bench_tracer.py (hidden 512, intermediate 1792,
8 layers, top-2 of 8, vocab 32000, `grouped_mm` experts). Workloads: prefill 4 x 256 (no cache) and
one decode step at batch 1 with a 256-token cache (cropped back before every call, untimed).
Variants (the forward call only, inside an open block entered untimed before each call, like a long run):

  plain          model(**inputs)
  noop_empty     intervene(ablate=[]) : nothing to change, no hook is registered
  noop_bias0     intervene(bias=zeros(E)) on every layer: the routers' choice recomputed, unchanged
  noop_topk2     intervene(top_k=2) (the configured k) on every layer: recomputed, unchanged
  ablate_route   intervene(ablate=[3]) on every layer: expert 3 routed around (same k, other experts)
  ablate_zero    intervene(ablate=[3], mode="zero") on every layer (same k, weight 0)
  bias           intervene(bias=+2 on expert 5) on every layer: steering (same k)
  force          intervene(force=[0, 1]) on every layer (same k)
  force_pos      intervene(force=Force([0, 1], positions=[0])) on every layer (same k; reads positions)
  replay         intervene(replay=<the model's own trace>) (same k; one host copy of the ids per forward)
  skip_0.5       intervene(skip=0.5) (zeroed weights still run through the experts: same work)
  top1           intervene(top_k=1): half the expert work, shown for reference (its ratio is not overhead)

Target (issue 11): an active intervention of the same k <= 1.05 x plain. Writes bench/results/intervene_cpu.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]  # bench/ and the repo
from moelab.bench.tracer_overhead import build, workloads  # noqa: E402  the same mid-size model and workloads

import moelab  # noqa: E402
from moelab.bench import environment, summarize, time_interleaved  # noqa: E402
from moelab.interventions import Force, intervene  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--decode-repeats", type=int, default=40)
    ap.add_argument("--note", default="", help="a line for the result file (e.g. 'measured under load')")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "intervene_cpu.txt"))
    a = ap.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    model = build(512, 1792, 8, 8, 8, dtype, a.device, "grouped_mm")
    E = 8
    wls = workloads(model, a.device)  # bench_tracer's: prefill 4x256, decode b1/b16 after a 256-token cache
    prefill, _ = wls["prefill_4x256"]
    dec, cache = wls["decode_b1_kv256"]

    def crop():
        if cache.get_seq_length() > 256:
            cache.crop(256 - cache.get_seq_length())  # back to the 256-token prompt (untimed)

    with torch.no_grad():
        with moelab.trace(model) as tr_pre:
            model(**prefill)
        with moelab.trace(model) as tr_dec:
            model(**dec)
    crop()
    steer = torch.zeros(E)
    steer[5] = 2.0
    variants = {
        "plain": {}, "noop_empty": dict(ablate=[]), "noop_bias0": dict(bias=torch.zeros(E)), "noop_topk2": dict(top_k=2),
        "ablate_route": dict(ablate=[3]), "ablate_zero": dict(ablate=[3], mode="zero"), "bias": dict(bias=steer),
        "force": dict(force=[0, 1]), "force_pos": dict(force=Force([0, 1], positions=[0])), "replay": "replay",
        "skip_0.5": dict(skip=0.5), "top1": dict(top_k=1),
    }
    lines = [f"# bench_intervene: {environment(a.device, a.dtype)}",
             "# mid-size Mixtral (hidden 512, inter 1792, 8 layers, top-2 of 8, vocab 32000), grouped_mm",
             *([f"# {a.note}"] if a.note else []),
             f"{'workload':<16}{'variant':<14}{'median ms':>10}{'ratio':>8}{'cpu ms':>10}{'cpu ratio':>9}"]
    for wl, (run, reps, tr) in {
        "prefill_4x256": (lambda: model(**prefill), a.repeats, tr_pre),
        "decode_b1_kv256": (lambda: model(**dec), a.decode_repeats, tr_dec),
    }.items():
        blocks = {}
        for name, kw in variants.items():
            if kw == "replay":
                kw = dict(replay=tr)
            blocks[name] = kw
        state = {"open": None}  # the block of the variant about to be timed; entered/left in setup (untimed)

        def leave():
            if state["open"] is not None:
                state["open"].__exit__(None, None, None)
                state["open"] = None

        def make(name, kw):
            def setup():
                leave()
                if wl.startswith("decode"):
                    crop()
                if kw is not None and name != "plain":
                    state["open"] = intervene(model, **kw).__enter__()

            def fn():
                c0 = time.process_time()
                with torch.no_grad():
                    run()
                cpu.setdefault(name, []).append(time.process_time() - c0)
            return setup, fn

        cpu: dict[str, list[float]] = {}   # process CPU seconds of the same calls (robust to a shared machine)
        fns = {name: make(name, kw) for name, kw in blocks.items()}
        try:
            times = summarize(time_interleaved(fns, repeats=reps, warmup=1, device=a.device))
        finally:
            leave()
        base = times.loc["plain", "median_s"]
        cpu_med = {k: float(np.median(v[1:])) for k, v in cpu.items()}   # v[0] is the warm-up call
        for name in fns:
            m = times.loc[name, "median_s"]
            lines.append(f"{wl:<16}{name:<14}{m * 1e3:>10.2f}{m / base:>8.3f}{cpu_med[name] * 1e3:>10.2f}"
                         f"{cpu_med[name] / cpu_med['plain']:>9.3f}")
        print("\n".join(lines[-len(fns):]), flush=True)
    lines.append("# cpu ms / cpu ratio: median process CPU time of the same calls (one thread): on a shared machine "
                 "it excludes time spent waiting for a core, so it is the ratio to read under load")
    lines.append("# ratio = median / plain median; every variant but top1 routes the same k as plain (target <= 1.05); "
                 "top1 does half the expert work. Timed: the forward inside an open block (entered untimed).")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
