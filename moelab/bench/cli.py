"""`moelab bench moe-vs-dense`: run the MoE-vs-dense experiment from the command line, print its tables.

    $ moelab bench moe-vs-dense --out bench/results/moe_vs_dense_cpu.csv
    $ python bench/bench_moe_vs_dense.py --help                     # the same command
    >>> from moelab.bench.cli import parse_args
    >>> parse_args(["--batch-sizes", "1", "8"]).batch_sizes
    [1, 8]
"""

from __future__ import annotations

import argparse
import time

from .harness import save_results
from .moe_vs_dense import (EXPERTS_IMPLEMENTATIONS, TORCH_DTYPES, BenchConfig, ratio_table, run_full_size,
                           run_moe_vs_dense)


def parse_args(argv=None) -> argparse.Namespace:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="bench_moe_vs_dense",
        description="Measured MoE vs dense tokens/s (prefill and decode) next to the FLOP and weight-byte "
        "ratios moelab.compute predicts. Ratio > 1: the MoE is faster.",
    )
    p.add_argument("--hidden", type=int, default=d.hidden_size)
    p.add_argument("--intermediate", type=int, default=d.intermediate_size, help="expert width")
    p.add_argument("--layers", type=int, default=d.num_hidden_layers)
    p.add_argument("--heads", type=int, default=d.num_attention_heads)
    p.add_argument("--kv-heads", type=int, default=d.num_key_value_heads)
    p.add_argument("--experts", type=int, default=d.num_local_experts)
    p.add_argument("--top-k", type=int, default=d.num_experts_per_tok)
    p.add_argument("--vocab", type=int, default=d.vocab_size)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[128], help="prompt length = decode KV-cache length")
    p.add_argument("--dtype", default="bf16", choices=sorted(TORCH_DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--impls", nargs="+", default=list(EXPERTS_IMPLEMENTATIONS), help="experts implementations")
    p.add_argument("--baselines", nargs="+", default=["active", "total"], choices=["active", "total", "source"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads on CPU (default 1: on a shared machine OpenMP threads wait for "
                   "descheduled peers, which adds ~10 ms to every op; 0 = leave torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-call-s", type=float, default=10.0,
                   help="skip (and record) a variant whose first call takes, or is predicted from a smaller size "
                   "to take, longer than this; 0 = no limit")
    p.add_argument("--full-size-layers", type=int, default=None, metavar="N",
                   help="GPU: real Mixtral 8x7B layer dims, measured at depths 1 and N, scaled to --target-layers "
                   "(ignores the size options above; use --dtype fp16 --device cuda)")
    p.add_argument("--target-layers", type=int, default=32)
    p.add_argument("--out", default=None, help="save results (.csv or .json)")
    return p.parse_args(argv)


def main(argv=None):
    """Run the benchmark from command-line style arguments; prints tables, returns the DataFrame."""
    import pandas as pd
    import torch

    a = parse_args(argv)
    if a.threads and not str(a.device).startswith("cuda"):
        torch.set_num_threads(a.threads)
    common = dict(batch_sizes=a.batch_sizes, seq_lens=a.seq_lens, dtype=a.dtype, device=a.device,
                  experts_implementations=a.impls, baselines=a.baselines, repeats=a.repeats, warmup=a.warmup,
                  seed=a.seed, max_call_s=a.max_call_s or None)
    t0 = time.perf_counter()
    if a.full_size_layers:
        df = run_full_size(a.full_size_layers, target_layers=a.target_layers, **common)
    else:
        cfg = BenchConfig(a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads, a.experts, a.top_k, a.vocab).mixtral()
        df = run_moe_vs_dense(cfg, **common)
    meta = df.attrs["meta"]
    print(f"# {meta['device_name']} | torch {meta['torch']} | transformers {meta['transformers']} | {a.dtype} | "
          f"{meta['date']} | {time.perf_counter() - t0:.0f} s")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3g}".format):
        ok = df[df.status == "ok"]
        print("\ntokens/s (median of", a.repeats, "interleaved repeats)")
        print(ok.pivot_table(index=["phase", "batch", "seq_len"], columns=["model", "experts_implementation"],
                             values="tokens_per_s").to_string())
        print("\nMoE speed-up over dense: measured vs predicted (flop_ratio if compute bound, byte_ratio if memory bound)")
        print(ratio_table(df).drop(columns=["tokens_per_s"]).to_string(index=False))
        for r in df[df.status == "skipped"].itertuples():
            where = f" {r.phase} batch {r.batch} seq_len {r.seq_len}" if r.phase != "-" else ""
            print(f"skipped {r.model}[{r.experts_implementation}]{where}: {r.reason}")
    if a.out:
        print("saved", save_results(df, a.out))
    return df


if __name__ == "__main__":
    main()
