"""Tracing overhead: traced / plain forward time, measured in one run with the interleaved harness.

    $ moelab bench tracer --out bench/results/tracer_cpu.json                 # CPU (~6-10 min)
    $ python bench/bench_tracer.py --out bench/results/tracer_cpu.json        # the same
    $ moelab bench tracer --device cuda --dtypes float16 --full-size-layers 4  # on a GPU
    >>> from moelab.bench.tracer_overhead import VARIANTS
    >>> VARIANTS
    ('plain', 'moelab', 'moelab_block', 'router_logits', 'naive_hook')

Model: a random-init Mixtral of the issue's mid-size config (hidden 512,
intermediate 1792, 8 layers, 8 experts, top-2, vocab 32000) or, with
`--full-size-layers N`, Mixtral 8x7B's real layer dimensions (hidden 4096,
intermediate 14336, 32 heads / 8 KV heads) with N layers.

Workloads: prefill 4 x 256 (no cache); one decode step at batch 1 and at batch
16 with a 256-token KV cache (the cache is cropped back to 256 before every
call, untimed). Variants, all timed on the forward call only and interleaved
round-robin by `moelab.bench.time_interleaved` (hooks installed and removed untimed):

  plain          model(**inputs)
  moelab         inside `moelab.trace(model)` (hooks on, records gathered and copied once per forward):
                 the per-step cost inside a long `generate`
  moelab_block   the whole `with moelab.trace(model): model(...)` block (hook set-up, the forward,
                 and turning the records into a RoutingTrace on exit): the cost of tracing one call
  router_logits  model(**inputs, output_router_logits=True)   (transformers' own capture)
  naive_hook     a forward hook per router doing `.cpu()` of indices and weights (a host sync per layer)

Printed: median ms per variant and the ratio variant / plain (target for
moelab: prefill <= 1.02, decode <= 1.03 at batch 1 and <= 1.02 at batch 16).
dtypes: fp32, plus bf16 only where the CPU runs it natively (`moelab.device`);
repeats shrink to fit `--budget-s`, and the output says when they did.
Then corpus-tracing throughput on the embedded model: `moelab trace` (the
decoder stack traced, no LM head) against the decoder stack alone (target
>= 0.9x) and the full model with its LM head.
"""

from __future__ import annotations

import argparse
import inspect
import json

import numpy as np

from .harness import Variant, environment, time_interleaved

VARIANTS = ("plain", "moelab", "moelab_block", "router_logits", "naive_hook")


def cache_keyword() -> str:
    """The decoder's cache keyword: `cache` from transformers 5.24, `past_key_values` before."""
    from transformers import MixtralForCausalLM

    return "cache" if "cache" in inspect.signature(MixtralForCausalLM.forward).parameters else "past_key_values"


def build(hidden, inter, layers, heads, kv_heads, dtype, device, impl):
    """A random-init Mixtral (8 experts, top-2, vocab 32000) of these dims."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

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
    from ..adapters import find_routers

    return [r.module for r in find_routers(model)]


def workloads(model, device):
    """{name: (inputs, cache)}: prefill 4x256, decode b1 and b16 with a 256-token cache."""
    import torch

    cache_kw = cache_keyword()
    g = torch.Generator().manual_seed(0)
    out = {"prefill_4x256": (dict(input_ids=torch.randint(3, 32000, (4, 256), generator=g).to(device),
                                  use_cache=False), None)}
    for b in (1, 16):
        prompt = torch.randint(3, 32000, (b, 256), generator=g).to(device)
        with torch.no_grad():
            res = model(input_ids=prompt, use_cache=True)
            cache = next(v for v in res.values() if hasattr(v, "get_seq_length"))
        step = torch.randint(3, 32000, (b, 1), generator=g).to(device)
        mask = torch.ones(b, 257, dtype=torch.long, device=device)   # as generate passes it
        out[f"decode_b{b}_kv256"] = (dict(input_ids=step, attention_mask=mask, **{cache_kw: cache},
                                          use_cache=True), cache)
    return out


def variants(model, inputs, cache) -> dict[str, Variant]:
    """The five variants of one workload for `time_interleaved`; each first crops the cache back to 256."""
    import torch

    import moelab

    def crop():
        if cache is not None and cache.get_seq_length() > 256:
            cache.crop(256 - cache.get_seq_length())  # back to the 256-token prompt (untimed)

    def forward(**extra):
        def fn():
            with torch.no_grad():
                model(**{**inputs, **extra})
        return fn

    def block():  # the whole `with moelab.trace(model):` block around one forward
        with moelab.trace(model), torch.no_grad():
            model(**inputs)

    return {
        "plain": Variant(forward(), setup=crop),
        "moelab": Variant(forward(), setup=crop, context=lambda: moelab.trace(model)),
        "moelab_block": Variant(block, setup=crop),
        # transformers' aux-loss code behind output_router_logits=True fails on a decode step whose
        # attention_mask covers the cache, so this variant runs without the (all-ones) mask
        "router_logits": Variant(forward(output_router_logits=True, attention_mask=None), setup=crop),
        "naive_hook": Variant(forward(), setup=crop, context=lambda: NaiveHook(model)),
    }


def measure(model, inputs, cache, repeats, warmup, device) -> dict[str, list[float]]:
    """{variant: [seconds per repeat]} of one workload (`time_interleaved`)."""
    return time_interleaved(variants(model, inputs, cache), repeats=repeats, warmup=warmup, device=device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="default: float32 plus bfloat16 where this CPU runs it natively (moelab.device)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="grouped_mm", help="experts implementation (eager | grouped_mm | batched_mm)")
    p.add_argument("--repeats", type=int, default=None, help="default: 20 prefill / 60 decode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--full-size-layers", type=int, default=0, help="Mixtral 8x7B layer dims with N layers")
    p.add_argument("--out", default=None, help="write results JSON here")
    p.add_argument("--budget-s", type=float, default=90.0,
                   help="wall-time budget per (dtype, workload): repeats are scaled down to fit, and it says so")
    p.add_argument("--corpus-tokens", type=int, default=16384,
                   help="embedded-model corpus tracing throughput on this many held-out tokens (0: skip)")
    a = p.parse_args(argv)
    import torch

    if a.dtypes is None:
        from ..device import cpu_default_dtype

        a.dtypes = ["float32"] if a.device != "cpu" or cpu_default_dtype()[0] == "float32" else ["bfloat16", "float32"]
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
            one = measure(model, inputs, cache, 1, 1, a.device)               # one round: all five variants
            per_round = sum(v[0] for v in one.values())
            fit = max(5, int(a.budget_s / max(per_round, 1e-9)) - a.warmup)
            if fit < reps:
                print(f"  ({wname}: {per_round:.2f} s per round of 5 variants; {reps} repeats scaled down to {fit} "
                      f"to fit --budget-s {a.budget_s:.0f})", flush=True)
                reps = fit
            times = measure(model, inputs, cache, reps, a.warmup, a.device)
            med = {k: float(np.median(v)) for k, v in times.items()}
            ratio = {k: med[k] / med["plain"] for k in med}
            results.append(dict(dtype=dt, workload=wname, repeats=reps, median_ms={k: v * 1e3 for k, v in med.items()},
                                ratio=ratio))
            print(f"{dt:9s} {wname:18s} {med['plain'] * 1e3:9.2f} | {ratio['moelab']:7.3f} "
                  f"{ratio['moelab_block']:7.3f} {ratio['router_logits']:10.3f} {ratio['naive_hook']:7.3f}",
                  flush=True)
        del model
    corpus = corpus_throughput(a.corpus_tokens, a.dtypes[0], a.device) if a.corpus_tokens else None
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"env": environment(a.device, ",".join(a.dtypes)), "dims": dims, "results": results,
                       "corpus": corpus}, f, indent=2)


def corpus_throughput(tokens: int, dtype: str, device: str) -> dict:
    """Tokens/s on the embedded model over held-out windows (seq 256, batch 8): decoder stack alone,
    `moelab.corpus.trace_corpus` (the stack traced, what `moelab trace` runs), and the full model with
    its LM head (what tracing cost before the head was skipped). Interleaved, 3 rounds, best of each."""
    import torch

    from ..corpus import batches_of, documents_to_texts, pad_right, trace_corpus, windows
    from ..data import load_documents
    from ..models import load_model
    from ..tracer import _decoder_stack

    model, tok = load_model(dtype=getattr(torch, dtype))
    model.to(device)
    docs = load_documents("heldout")
    wins, n = [], 0
    for w in windows(documents_to_texts(docs), tok, 256):
        if n >= tokens:
            break
        wins.append(w)
        n += len(w.ids)
    batches = batches_of(wins, 8)
    stack = _decoder_stack(model)

    def plain(run):
        with torch.no_grad():
            for b in batches:
                ids, mask, _ = pad_right(b, 0)
                run(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)

    variants = {
        "decoder_stack": lambda: plain(stack),
        "moelab_trace": lambda: trace_corpus(model, tok, [], batches=batches, progress=False),
        "full_model_with_lm_head": lambda: plain(model),
    }
    best = {k: min(v) for k, v in time_interleaved(variants, repeats=3, warmup=0, device=device).items()}
    tps = {k: n / v for k, v in best.items()}
    print(f"embedded model, {n} held-out tokens, {dtype}: tokens/s  decoder stack {tps['decoder_stack']:.0f} | "
          f"moelab trace {tps['moelab_trace']:.0f} ({tps['moelab_trace'] / tps['decoder_stack']:.3f}x the stack) | "
          f"full model with LM head {tps['full_model_with_lm_head']:.0f}", flush=True)
    return {"tokens": n, "dtype": dtype, "tokens_per_s": tps,
            "trace_vs_stack": tps["moelab_trace"] / tps["decoder_stack"]}


if __name__ == "__main__":
    main()
