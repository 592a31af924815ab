"""Streaming a long trace keeps memory bounded: resident-memory growth while tracing N tokens to disk.

    $ .venv/bin/python bench/bench_streaming.py --tokens 1000000     # ~2-4 min on 2 CPU cores

A small random Mixtral (8 layers, top-2 of 8) reads `--tokens` tokens in
batches of 16 x 512 inside `moelab.trace(model, path=..., retain=False)`; the
resident set size (VmRSS) is sampled after every forward. Printed: RSS before
the block, the peak during it, the growth, and the same for in-memory tracing
of a tenth of the tokens (for scale). Target: growth under 200 MB for 1M tokens.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import MixtralConfig, MixtralForCausalLM

import moelab


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(model, tokens: int, batch: int, seq: int, path) -> tuple[float, float, int]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 32000, (batch, seq), generator=g)
    steps = -(-tokens // (batch * seq))
    before, peak = rss_mb(), 0.0
    with moelab.trace(model, path=path, retain=False if path else None) as _, torch.no_grad():
        for _ in range(steps):
            model(input_ids=ids, use_cache=False)
            peak = max(peak, rss_mb())
    return before, peak, steps * batch * seq


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = MixtralConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2)
    model = MixtralForCausalLM(cfg).to(torch.bfloat16).eval()
    tmp = Path(tempfile.mkdtemp())
    try:
        with torch.no_grad():  # warm up allocator and kernels before measuring
            model(input_ids=torch.randint(3, 32000, (a.batch, a.seq)), use_cache=False)
        t0 = time.perf_counter()
        before, peak, n = run(model, a.tokens, a.batch, a.seq, tmp / "stream")
        dt = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (tmp / "stream").rglob("*.parquet"))
        t = moelab.load_trace(tmp / "stream", columns=["experts"])
        assert t.num_tokens == n, (t.num_tokens, n)
        print(f"streamed {n:,} tokens x 8 layers in {dt:.0f} s: RSS {before:.0f} MB -> peak {peak:.0f} MB "
              f"(growth {peak - before:.0f} MB); {size / 1e6:.1f} MB on disk, "
              f"{size / (n * 8):.2f} bytes per token-layer")
        before_m, peak_m, n_m = run(model, a.tokens // 10, a.batch, a.seq, None)
        print(f"in-memory, {n_m:,} tokens: growth {peak_m - before_m:.0f} MB (for scale)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
