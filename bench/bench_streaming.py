"""Streaming a long trace keeps memory bounded: resident-memory growth while tracing N tokens to disk.

    $ .venv/bin/python bench/bench_streaming.py          # 1M and 4M tokens, writes bench/results/streaming_cpu.txt

A small random Mixtral (8 layers, top-2 of 8) reads `--tokens` tokens in
batches of 16 x 512 inside `moelab.trace(model, path=..., retain=False)`; the
resident set size (VmRSS) is sampled after every forward. The same forwards run
untraced first, so the model's own working set is in the baseline, then one
traced forward loads pyarrow's Parquet and zstd libraries (a one-time cost,
printed); the growth is what tracing N tokens adds on top. Printed: RSS before the block, the peak during it and the
growth, for each token count.
Target: growth under 200 MB that does not grow with the token count (1M vs 4M).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import MixtralConfig, MixtralForCausalLM

import moelab
from moelab.bench import environment


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(model, tokens: int, batch: int, seq: int, path) -> tuple[float, float, int, list[float]]:
    """Trace `tokens` tokens through the decoder stack (no LM head); RSS sampled after every forward."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 32000, (batch, seq), generator=g)
    steps = -(-tokens // (batch * seq))
    before, samples = rss_mb(), []
    with moelab.trace(model, path=path, retain=False if path else None) as _, torch.no_grad():
        for _ in range(steps):
            model.model(input_ids=ids, use_cache=False)
            samples.append(rss_mb())
    return before, max(samples), steps * batch * seq, samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--out", default="bench/results/streaming_cpu.txt")
    p.add_argument("--warmup", type=int, default=20, help="untraced forwards before measuring")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if len(a.tokens) > 1 and not a.worker:   # each token count in a fresh process: growths are comparable
        import subprocess
        import sys

        lines = [json.dumps(environment("cpu", "float32"))]
        growth = {}
        for n in a.tokens:
            r = subprocess.run([sys.executable, __file__, "--worker", "--tokens", str(n), "--batch", str(a.batch),
                                "--seq", str(a.seq), "--warmup", str(a.warmup), "--out", ""],
                               capture_output=True, text=True, check=True)
            out = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("{")]
            lines += out
            print("\n".join(out), flush=True)
            growth[n] = float(out[-2].split("(growth ")[1].split(" MB")[0])
        ns = sorted(growth)
        lines.append("fresh process per count; growth by token count: "
                     + ", ".join(f"{n:,}: {growth[n]:.0f} MB" for n in ns)
                     + f" (last/first {growth[ns[-1]] / max(growth[ns[0]], 1):.2f} for {ns[-1] / ns[0]:.0f}x the "
                       "tokens; target: flat and < 200 MB)")
        print(lines[-1])
        if a.out:
            Path(a.out).write_text("\n".join(lines) + "\n")
        return
    torch.manual_seed(0)
    cfg = MixtralConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2)
    model = MixtralForCausalLM(cfg).eval()          # fp32: the routing records are the same size in any dtype
    tmp = Path(tempfile.mkdtemp())
    lines = [json.dumps(environment("cpu", "float32"))]
    try:
        with torch.no_grad():  # the same forwards untraced first: the allocator's working set is then in "before"
            warm = torch.randint(3, 32000, (a.batch, a.seq))
            for _ in range(a.warmup):
                model.model(input_ids=warm, use_cache=False)
        lines.append(f"after {a.warmup} untraced forwards of {a.batch} x {a.seq}: RSS {rss_mb():.0f} MB")
        r0 = rss_mb()
        run(model, a.batch * a.seq, a.batch, a.seq, tmp / "warm")       # one traced forward: pyarrow, zstd, writer
        lines.append(f"one-time cost of the first streamed part (pyarrow/parquet/zstd libraries loaded): "
                     f"{rss_mb() - r0:.0f} MB")
        print("\n".join(lines[-2:]), flush=True)
        growth = {}
        for tokens in a.tokens:
            t0 = time.perf_counter()
            before, peak, n, samples = run(model, tokens, a.batch, a.seq, tmp / f"s{tokens}")
            dt = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in (tmp / f"s{tokens}").rglob("*.parquet"))
            t = moelab.load_trace(tmp / f"s{tokens}", columns=["experts"])
            assert t.num_tokens == n, (t.num_tokens, n)
            del t
            half = max(samples[len(samples) // 2:])
            growth[n] = peak - before
            lines.append(f"streamed {n:,} tokens x 8 layers in {dt:.0f} s: RSS {before:.0f} MB -> peak {peak:.0f} MB "
                         f"(growth {peak - before:.0f} MB; peak over the second half {half:.0f} MB); "
                         f"{size / 1e6:.1f} MB on disk, {size / (n * 8):.2f} bytes per token-layer")
            print(lines[-1], flush=True)
            shutil.rmtree(tmp / f"s{tokens}", ignore_errors=True)
        ns = sorted(growth)
        lines.append("growth by token count: " + ", ".join(f"{n:,}: {growth[n]:.0f} MB" for n in ns)
                     + f"  (ratio last/first {growth[ns[-1]] / max(growth[ns[0]], 1):.2f} for "
                       f"{ns[-1] / ns[0]:.0f}x the tokens; target: flat and < 200 MB)")
        print(lines[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
