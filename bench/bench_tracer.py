"""Tracing overhead: traced / plain forward time, measured in one run with interleaved repeats.

    $ .venv/bin/python bench/bench_tracer.py                       # CPU, bf16 and fp32 (~5 min)
    $ .venv/bin/python bench/bench_tracer.py --device cuda --dtypes float16 --full-size-layers 4   # on a GPU

Model: a random-init Mixtral of the issue's mid-size config (hidden 512,
intermediate 1792, 8 layers, 8 experts, top-2, vocab 32000) or, with
`--full-size-layers N`, Mixtral 8x7B's real layer dimensions (hidden 4096,
intermediate 14336, 32 heads / 8 KV heads) with N layers.

Workloads: prefill 4 x 256 (no cache); one decode step at batch 1 and at batch
16 with a 256-token KV cache (the cache is cropped back to 256 before every
call, untimed). Variants, all timed on the forward call only and interleaved
round-robin so drift hits them equally:

  plain          model(**inputs)
  moelab         inside `moelab.trace(model)` (hooks on, records gathered and copied once per forward):
                 the per-step cost inside a long `generate`
  moelab_block   the whole `with moelab.trace(model): model(...)` block (hook set-up, the forward,
                 and turning the records into a RoutingTrace on exit): the cost of tracing one call
  router_logits  model(**inputs, output_router_logits=True)   (transformers' own capture)
  naive_hook     a forward hook per router doing `.cpu()` of indices and weights (a host sync per layer)

Printed: median ms per variant and the ratio variant / plain (target for
moelab: prefill <= 1.02, decode <= 1.03 at batch 1 and <= 1.02 at batch 16).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from transformers import MixtralConfig, MixtralForCausalLM

import moelab
from moelab.bench import environment


def build(hidden, inter, layers, heads, kv_heads, dtype, device, impl):
    cfg = MixtralConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=kv_heads, num_local_experts=8,
                        num_experts_per_tok=2, max_position_embeddings=4096, sliding_window=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = MixtralForCausalLM(cfg).to(dtype).eval()
    model.set_experts_implementation(impl)
    return model


class NaiveHook:
    """The obvious way: a forward hook per router that copies its outputs to the host right away."""

    def __init__(self, model):
        self.model, self.handles, self.rows = model, [], []

    def __enter__(self):
        for m in model_routers(self.model):
            self.handles.append(m.register_forward_hook(
                lambda mod, i, o: self.rows.append((o[2].cpu(), o[1].cpu()))))

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


def model_routers(model):
    from moelab.adapters import find_routers

    return [r.module for r in find_routers(model)]


def workloads(model, device):
    """{name: (make_inputs, cache_len)}: prefill 4x256, decode b1 and b16 with a 256-token cache."""
    g = torch.Generator().manual_seed(0)
    out = {"prefill_4x256": (dict(input_ids=torch.randint(3, 32000, (4, 256), generator=g).to(device),
                                  use_cache=False), None)}
    for b in (1, 16):
        prompt = torch.randint(3, 32000, (b, 256), generator=g).to(device)
        with torch.no_grad():
            cache = model(input_ids=prompt, use_cache=True).past_key_values
        step = torch.randint(3, 32000, (b, 1), generator=g).to(device)
        mask = torch.ones(b, 257, dtype=torch.long, device=device)   # as generate passes it
        out[f"decode_b{b}_kv256"] = (dict(input_ids=step, attention_mask=mask, past_key_values=cache,
                                          use_cache=True), cache)
    return out


def measure(model, inputs, cache, repeats, warmup, device):
    sync = (lambda: torch.cuda.synchronize()) if str(device).startswith("cuda") else (lambda: None)
    variants = {
        "plain": (None, {}),
        "moelab": (lambda: moelab.trace(model), {}),
        "moelab_block": ("block", {}),
        # transformers' aux-loss code behind output_router_logits=True fails on a decode step whose
        # attention_mask covers the cache, so this variant runs without the (all-ones) mask
        "router_logits": (None, {"output_router_logits": True, "attention_mask": None}),
        "naive_hook": (lambda: NaiveHook(model), {}),
    }
    times = {k: [] for k in variants}
    names = list(variants)
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            make_ctx, extra = variants[name]
            if cache is not None and cache.get_seq_length() > 256:
                cache.crop(256 - cache.get_seq_length())  # back to the 256-token prompt (untimed)
            if make_ctx == "block":  # the whole `with moelab.trace(model):` block around one forward
                sync()
                t0 = time.perf_counter()
                with moelab.trace(model), torch.no_grad():
                    model(**inputs)
                sync()
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
                continue
            ctx = make_ctx() if make_ctx else None
            if ctx is not None:
                ctx.__enter__()
            try:
                sync()
                t0 = time.perf_counter()
                with torch.no_grad():
                    model(**{**inputs, **extra})
                sync()
                dt = time.perf_counter() - t0
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
            if r >= warmup:
                times[name].append(dt)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="grouped_mm", help="experts implementation (eager | grouped_mm | batched_mm)")
    p.add_argument("--repeats", type=int, default=None, help="default: 20 prefill / 60 decode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--full-size-layers", type=int, default=0, help="Mixtral 8x7B layer dims with N layers")
    p.add_argument("--out", default=None, help="write results JSON here")
    a = p.parse_args(argv)
    dims = (4096, 14336, a.full_size_layers, 32, 8) if a.full_size_layers else (512, 1792, 8, 8, 8)
    results = []
    print(json.dumps(environment(a.device, ",".join(a.dtypes))))
    print(f"model dims (hidden, intermediate, layers, heads, kv_heads) = {dims}, experts impl {a.impl}")
    print(f"{'dtype':9s} {'workload':18s} {'plain ms':>9s} | {'moelab':>7s} {'block':>7s} {'rtr_logits':>10s} "
          f"{'naive':>7s}  (ratio to plain)")
    for dt in a.dtypes:
        model = build(*dims, getattr(torch, dt), a.device, a.impl)
        for wname, (inputs, cache) in workloads(model, a.device).items():
            reps = a.repeats or (20 if wname.startswith("prefill") else 60)
            times = measure(model, inputs, cache, reps, a.warmup, a.device)
            med = {k: float(np.median(v)) for k, v in times.items()}
            ratio = {k: med[k] / med["plain"] for k in med}
            results.append(dict(dtype=dt, workload=wname, repeats=reps, median_ms={k: v * 1e3 for k, v in med.items()},
                                ratio=ratio))
            print(f"{dt:9s} {wname:18s} {med['plain'] * 1e3:9.2f} | {ratio['moelab']:7.3f} "
                  f"{ratio['moelab_block']:7.3f} {ratio['router_logits']:10.3f} {ratio['naive_hook']:7.3f}",
                  flush=True)
        del model
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"env": environment(a.device, ",".join(a.dtypes)), "dims": dims, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
