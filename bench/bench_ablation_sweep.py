"""The ablation sweep of notebook 07: batched (prefix reused, one stack per layer, sparse rescoring) vs
whole forwards, and the time of the sweep at each slice. One run; the shared harness (moelab.bench).

    $ OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ablation_sweep.py              # CPU fp32, 1 thread
    $ .venv/bin/python bench/bench_ablation_sweep.py --windows 1 3 --compare-windows 1

Model: the embedded moelab-mixtral-tiny (fp32, one thread, as the notebooks run it). The sweep is
8 experts x 4 layers x 12 domains + the baseline on the held-out split, `--windows` windows of 128
tokens per domain. For each slice it times `ablation_sweep(..., reuse_prefix=True)` (what notebook
07 runs); on `--compare-windows` it also times `reuse_prefix=False` (33 whole forwards per batch
inside `moelab.intervene`), interleaved with the batched sweep, and prints the ratio.
Targets (issue 11): the full sweep <= 5 min, the notebook's CI-fast mode <= 30 s. The `cpu s` column
(process CPU time, one thread) estimates the wall time on an idle machine when the run is shared.
Writes bench/results/ablation_sweep_cpu.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent.parent)]

import moelab  # noqa: E402
from moelab.bench import environment, summarize, time_interleaved  # noqa: E402
from moelab.data import domains as all_domains  # noqa: E402
from moelab.interventions import ablation_sweep  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="default: the embedded model")
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 3, 8], help="windows per domain, one slice each")
    ap.add_argument("--compare-windows", type=int, default=1, help="slice on which whole forwards are timed too")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="", help="a line for the result file (e.g. 'measured under load')")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation_sweep_cpu.txt"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, tok = moelab.load_model(a.model, dtype="float32")
    model.eval()
    doms = all_domains()
    lines = [f"# bench_ablation_sweep: {environment('cpu', 'float32')}, {a.threads} thread(s)",
             f"# {type(model).__name__} {model.config.num_hidden_layers} layers x {model.config.num_local_experts} "
             f"experts, {len(doms)} domains, windows of 128 tokens, held-out split" + (f"; {a.note}" if a.note else ""),
             f"{'windows/domain':>15}{'positions':>10}{'variant':>16}{'median s':>10}{'cpu s':>8}{'ratio':>8}{'rescored':>10}"]
    for w in a.windows:
        out, cpu = {}, {}

        def variant(reuse):
            def fn():
                c0 = time.process_time()
                out[reuse] = ablation_sweep(model, tok, domains=doms, max_windows=w, seq_len=128, reuse_prefix=reuse,
                                            progress=False)
                cpu.setdefault(reuse, []).append(time.process_time() - c0)
            return fn

        fns = {"batched": variant(True)}
        if w == a.compare_windows:
            fns["whole_forwards"] = variant(False)
        times = summarize(time_interleaved(fns, repeats=a.repeats, warmup=0))
        base = times.loc["batched", "median_s"]
        df = out[True]
        abl = df[df.layer >= 0]
        n = int(df[df.layer < 0].tokens.sum())
        rescored = float((abl.rescored * abl.tokens).sum() / abl.tokens.sum())
        for name in fns:
            m = times.loc[name, "median_s"]
            c = sorted(cpu[name == "batched"])[len(cpu[name == "batched"]) // 2]
            lines.append(f"{w:>15}{n:>10}{name:>16}{m:>10.1f}{c:>8.1f}{m / base:>8.2f}"
                         f"{rescored if name == 'batched' else 1.0:>10.3f}")
        if False in out:
            diff = (out[True].set_index(["domain", "layer", "expert"]).nll
                    - out[False].set_index(["domain", "layer", "expert"]).nll).abs().max()
            lines.append(f"# windows={w}: max |nll batched - nll whole forwards| = {diff:.2e}")
        print("\n".join(lines[-len(fns) - (1 if False in out else 0):]), flush=True)
    lines.append("# cpu s = this process's CPU seconds (one thread): close to the wall time on an idle machine")
    lines.append("# rescored = share of (ablation, position) pairs that went through the LM head again (the rest "
                 "are provably unchanged); ratio = median / batched median")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
