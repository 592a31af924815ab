"""The MoE-vs-dense experiment: measured tokens/s next to the FLOP and byte ratios moelab predicts.

    >>> from moelab.bench.moe_vs_dense import BenchConfig
    >>> BenchConfig().mixtral().num_local_experts
    8

`run_moe_vs_dense` times prefill (B x S prompt tokens, `logits_to_keep=1` as in `generate`)
and one decode step (B new tokens on a KV cache of S tokens) for an MoE model under each
experts implementation transformers offers, and for dense baselines built by
`moelab.compute.dense_equivalent`, with the harness of `moelab.bench.harness`. Next to each
measured ratio it puts two predictions:
    flop_ratio  = dense FLOPs / MoE FLOPs         (the speed-up if both were compute bound)
    byte_ratio  = dense bytes / MoE bytes read     (the speed-up if both were memory bound;
                  MoE bytes count only the experts the step touches, uniform routing)
A ratio > 1 means the MoE is faster. `run_full_size` measures real Mixtral layer dims at
depths 1 and N and extrapolates linearly to 32 layers (`scale_to_layers`).
CLI: `moelab bench moe-vs-dense --help` (`moelab.bench.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .harness import environment, time_interleaved, time_once

EXPERTS_IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class BenchConfig:
    """Default mid-size Mixtral for a 1-3 minute CPU run (2 cores, bf16)."""

    hidden_size: int = 512  # H
    intermediate_size: int = 1792  # expert width (3.5 x H, as Mixtral's 14336 / 4096)
    num_hidden_layers: int = 4
    num_attention_heads: int = 8  # head_dim 64
    num_key_value_heads: int = 2  # GQA 4:1 as Mixtral
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    vocab_size: int = 32000

    def mixtral(self):
        from transformers import MixtralConfig

        return MixtralConfig(**self.__dict__, tie_word_embeddings=False, sliding_window=None,
                             max_position_embeddings=4096)


def _torch_dtype(dtype):
    import torch

    return getattr(torch, TORCH_DTYPES.get(str(dtype), str(dtype).replace("torch.", "")))


def _build(config, dtype, device, seed: int, experts_implementation=None):
    """A random-init model of `config`, created directly on `device` (initialising a full-size layer on
    the host first takes minutes on a GPU machine)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    kw = {"experts_implementation": experts_implementation} if experts_implementation else {}
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=_torch_dtype(dtype), **kw)
    return model.eval()


def check_experts_implementations(model, names=EXPERTS_IMPLEMENTATIONS, device="cpu") -> dict[str, str | None]:
    """{name: None if it runs, else the reason it does not} for a model's experts implementations.

    Tries each with a 2-token forward; leaves the model on the first one that works.
    """
    import torch

    ok: dict[str, str | None] = {}
    x = torch.zeros((1, 2), dtype=torch.long, device=device)
    for name in names:
        try:
            model.set_experts_implementation(name)
            with torch.no_grad():
                model(x, use_cache=False, logits_to_keep=1)
            ok[name] = None
        except Exception as e:  # noqa: BLE001 -- any failure means "unavailable here"; keep the reason
            ok[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    first = next((n for n, r in ok.items() if r is None), None)
    if first:
        model.set_experts_implementation(first)
    return ok


def _cache_of(output):
    """The KV cache a forward returned, whatever this transformers version calls the field."""
    return next(v for v in output.values() if hasattr(v, "get_seq_length"))


def _variants(config, dense_configs: dict, dtype, device, seed, impls):
    """[(row name, impl or None, model)] and the skipped {impl: reason}."""
    moe = _build(config, dtype, device, seed)
    status = check_experts_implementations(moe, impls, device)
    out = [("moe", name, moe) for name, r in status.items() if r is None]
    for b, c in dense_configs.items():
        out.append((f"dense_{b}", None, _build(c, dtype, device, seed)))
    return out, {k: v for k, v in status.items() if v is not None}


def _probe(fns: dict, max_call_s: float | None, device, tokens: int, history: dict) -> dict[str, str]:
    """Time one call of each variant (it doubles as a warm-up); {name: reason} for those over budget.

    history: {name: (tokens, seconds)} of earlier probes, updated here. A variant whose time,
    scaled linearly in tokens from its last probe, would exceed the budget is not called at all.
    """
    if max_call_s is None:
        return {}
    slow = {}
    for name, (setup, fn) in fns.items():
        if name in history:
            n0, t0 = history[name]
            if t0 * tokens / n0 > max_call_s:
                slow[name] = (f"one call took {t0:.2f} s at {n0} tokens, so ~{t0 * tokens / n0:.1f} s at {tokens} "
                              f"> max_call_s={max_call_s:g} s; not run")
                continue
        dt = time_once((setup, fn), device)
        history[name] = (tokens, dt)
        if dt > max_call_s:
            slow[name] = f"one call took {dt:.2f} s > max_call_s={max_call_s:g} s; not repeated"
    return slow


def _row(name, impl, phase, B, S, tokens, times=None, reason=""):
    if times is None:
        return dict(model=name, experts_implementation=impl or "-", phase=phase, batch=B, seq_len=S, tokens=tokens,
                    status="skipped", reason=reason, median_s=float("nan"), tokens_per_s=float("nan"), times_s="[]")
    med = float(np.median(times))
    return dict(model=name, experts_implementation=impl or "-", phase=phase, batch=B, seq_len=S, tokens=tokens,
                status="ok", reason="", median_s=med, tokens_per_s=tokens / med,
                times_s=json.dumps([round(t, 6) for t in times]))


def _measure(config, dense_configs, batch_sizes, seq_lens, dtype, device, impls, repeats, warmup, seed,
             max_call_s=None):
    """Raw timings: one row per (model, impl, phase, batch, seq_len)."""
    import torch

    from .tracer_overhead import cache_keyword

    cache_kw = cache_keyword()   # `cache` from transformers 5.24, `past_key_values` before
    variants, skipped = _variants(config, dense_configs, dtype, device, seed, impls)
    fast_impl = next((i for _, i, _ in variants if i), None)  # builds the KV caches (any impl gives the same cache)
    rows = []
    history: dict[str, dict] = {"prefill": {}, "decode": {}}  # phase -> {variant: (tokens, seconds)}
    g = torch.Generator().manual_seed(seed)
    for S in sorted(seq_lens):
        for B in sorted(batch_sizes):
            prompt = torch.randint(0, config.vocab_size, (B, S), generator=g).to(device)
            step = torch.randint(0, config.vocab_size, (B, 1), generator=g).to(device)
            caches, prefill_fns, decode_fns, keys = {}, {}, {}, {}
            for name, impl, model in variants:
                key = keys[(name, impl)] = f"{name}[{impl}]" if impl else name
                if id(model) not in caches:  # one cache per model, shared by its experts implementations
                    with torch.no_grad():
                        if impl:
                            model.set_experts_implementation(fast_impl)
                        caches[id(model)] = _cache_of(model(prompt, use_cache=True, logits_to_keep=1))
                cache = caches[id(model)]
                switch = (lambda m=model, i=impl: m.set_experts_implementation(i)) if impl else (lambda: None)

                def prefill(m=model):
                    with torch.no_grad():
                        m(prompt, use_cache=False, logits_to_keep=1)

                def trim_and_switch(c=cache, sw=switch):
                    sw()
                    extra = c.get_seq_length() - S
                    if extra > 0:
                        c.crop(-extra)  # back to S cached tokens: every timed step sees the same cache

                def decode(m=model, c=cache):
                    with torch.no_grad():
                        m(step, **{cache_kw: c}, use_cache=True, logits_to_keep=1)

                prefill_fns[key] = (switch, prefill)
                decode_fns[key] = (trim_and_switch, decode)
            for phase, fns in (("prefill", prefill_fns), ("decode", decode_fns)):
                tokens = B * S if phase == "prefill" else B
                slow = _probe(fns, max_call_s, device, tokens, history[phase])
                run = {k: v for k, v in fns.items() if k not in slow}
                times = time_interleaved(run, repeats=repeats, warmup=max(warmup - bool(max_call_s), 0), device=device)
                for name, impl, _ in variants:
                    key = keys[(name, impl)]
                    rows.append(_row(name, impl, phase, B, S, tokens, times.get(key), slow.get(key, "")))
            del caches
    for impl, reason in skipped.items():
        rows.append(_row("moe", impl, "-", 0, 0, 0, reason=reason))
    return rows


def _accounting(model_configs: dict, row, dtype) -> tuple[float, float]:
    """(FLOPs, bytes) the accounting predicts for one measured row."""
    from moelab.compute import forward_flops, kv_cache_bytes, weight_bytes_read

    cfg = model_configs[row["model"]]
    B, S = int(row["batch"]), int(row["seq_len"])
    if row["phase"] == "prefill":
        return (forward_flops(cfg, B, S, 0, logits="last").total, weight_bytes_read(cfg, B * S, dtype))
    fl = forward_flops(cfg, B, 1, S, logits="last").total
    return fl, weight_bytes_read(cfg, B, dtype) + kv_cache_bytes(cfg, B, S, dtype)


def add_ratios(df, model_configs: dict, dtype="bf16"):
    """Add flops / bytes columns and, on MoE rows, measured speed-up vs each dense baseline next to
    the FLOP and weight-byte ratios the accounting predicts."""
    df = df.copy()
    ok = df.status == "ok"
    acc = [(_accounting(model_configs, r, dtype) if r["status"] == "ok" else (np.nan, np.nan)) for _, r in df.iterrows()]
    df["flops"] = [a[0] for a in acc]
    df["bytes"] = [a[1] for a in acc]
    keys = ["phase", "batch", "seq_len"]
    for base in [m for m in model_configs if m.startswith("dense_")]:
        ref = df[ok & (df.model == base)].set_index(keys)
        b = base.removeprefix("dense_")
        sp, fr, br = [], [], []
        for _, r in df.iterrows():
            k = tuple(r[keys])
            if r["model"] != "moe" or r["status"] != "ok" or k not in ref.index:
                sp.append(np.nan), fr.append(np.nan), br.append(np.nan)
                continue
            d = ref.loc[k]
            sp.append(r["tokens_per_s"] / d["tokens_per_s"])
            fr.append(d["flops"] / r["flops"])
            br.append(d["bytes"] / r["bytes"])
        df[f"speedup_vs_{b}"], df[f"flop_ratio_vs_{b}"], df[f"byte_ratio_vs_{b}"] = sp, fr, br
    return df


def run_moe_vs_dense(
    config=None,
    batch_sizes: Sequence[int] = (1, 8),
    seq_lens: Sequence[int] = (128,),
    dtype: str = "bf16",
    device: str = "cpu",
    experts_implementations: Sequence[str] = EXPERTS_IMPLEMENTATIONS,
    baselines: Sequence[str] = ("active", "total"),
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    max_call_s: float | None = None,
):
    """Measured prefill and decode tokens/s of an MoE and its dense baselines, with predicted ratios.

    Returns a DataFrame, one row per (model, experts_implementation, phase, batch, seq_len);
    unavailable experts implementations appear as status="skipped" rows with the reason, and so
    do variants whose first call exceeds `max_call_s` seconds (None: no limit) -- e.g.
    transformers' "batched_mm" gathers one weight copy per token and is meant for small batches.
    `df.attrs["meta"]` holds `environment()`; `save_results(df, "x.csv")` writes both.
    """
    from moelab.compute import dense_equivalent

    config = config if config is not None else BenchConfig().mixtral()
    import pandas as pd

    dense = {b: dense_equivalent(config, b) for b in baselines}
    rows = _measure(config, dense, batch_sizes, seq_lens, dtype, device, experts_implementations,
                    repeats, warmup, seed, max_call_s)
    cfgs = {"moe": config, **{f"dense_{b}": c for b, c in dense.items()}}
    df = add_ratios(pd.DataFrame(rows), cfgs, dtype)
    df.attrs["meta"] = environment(device, dtype)
    return df


def scale_to_layers(depths: Sequence[int], seconds: Sequence[float], target_layers: int = 32) -> dict:
    """Least-squares line seconds = fixed + per_layer x depth, evaluated at `target_layers`.

    >>> scale_to_layers([1, 4], [0.3, 0.9], 32)["seconds"]  # 0.1 s fixed + 0.2 s/layer
    6.5
    """
    d, t = np.asarray(depths, float), np.asarray(seconds, float)
    if len(np.unique(d)) < 2:
        raise ValueError(f"need times at >= 2 different depths to separate per-layer from fixed cost, got depths={list(depths)}")
    per_layer, fixed = np.polyfit(d, t, 1)
    return dict(seconds=round(float(fixed + per_layer * target_layers), 12), per_layer_s=float(per_layer), fixed_s=float(fixed))


def run_full_size(
    num_layers: int = 2,
    batch_sizes: Sequence[int] = (1, 8, 32),
    seq_lens: Sequence[int] = (512,),
    dtype: str = "fp16",
    device: str = "cuda",
    target_layers: int = 32,
    base_config=None,
    experts_implementations: Sequence[str] = EXPERTS_IMPLEMENTATIONS,
    baselines: Sequence[str] = ("active", "total"),
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    max_call_s: float | None = None,
):
    """Real Mixtral layer dims (random init) measured at depths 1 and `num_layers`, scaled to `target_layers`.

    base_config: the full-depth MoE config (default `mixtral_8x7b_config()`); pass tiny dims
    to exercise the logic on CPU. Dense baselines are built from it at full depth, then cut
    to each measured depth. Returns the same columns as `run_moe_vs_dense`, plus
    per_layer_s / fixed_s / measured_depths, with median_s and tokens_per_s at target depth.
    """
    import pandas as pd

    from moelab.compute import dense_equivalent, mixtral_8x7b_config

    if num_layers < 2:
        raise ValueError(f"--full-size-layers {num_layers}: need N >= 2 (depths 1 and N) to fit a per-layer time")
    full = base_config if base_config is not None else mixtral_8x7b_config()
    full = full.__class__(**{**full.to_dict(), "num_hidden_layers": target_layers})
    dense_full = {b: dense_equivalent(full, b) for b in baselines}
    depths = sorted({1, num_layers})
    per_depth = []
    for d in depths:
        moe_d = full.__class__(**{**full.to_dict(), "num_hidden_layers": d})
        dense_d = {b: c.__class__(**{**c.to_dict(), "num_hidden_layers": d}) for b, c in dense_full.items()}
        rows = _measure(moe_d, dense_d, batch_sizes, seq_lens, dtype, device, experts_implementations,
                        repeats, warmup, seed, max_call_s)
        per_depth.append(pd.DataFrame(rows).assign(depth=d))
        if str(device).startswith("cuda"):
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()
    raw = pd.concat(per_depth, ignore_index=True)
    keys = ["model", "experts_implementation", "phase", "batch", "seq_len", "tokens"]
    out = []
    for k, g in raw.groupby(keys, sort=False, dropna=False):
        r = dict(zip(keys, k))
        good = g[g.status == "ok"]
        if good.depth.nunique() >= 2:
            fit = scale_to_layers(good.depth, good.median_s, target_layers)
            r.update(status="ok", reason="", median_s=fit["seconds"], per_layer_s=fit["per_layer_s"],
                     fixed_s=fit["fixed_s"], tokens_per_s=r["tokens"] / fit["seconds"])
        else:
            reasons = "; ".join(f"depth {d}: {x}" for d, x in zip(g.depth, g.reason) if x)
            r.update(status="skipped", reason=reasons or "not measured at 2 depths", median_s=np.nan,
                     tokens_per_s=np.nan)
        r["measured_depths"] = json.dumps(sorted(good.depth.tolist()))
        out.append(r)
    cfgs = {"moe": full, **{f"dense_{b}": c for b, c in dense_full.items()}}
    df = add_ratios(pd.DataFrame(out), cfgs, dtype)
    df.attrs["meta"] = {**environment(device, dtype), "scaled_to_layers": target_layers, "measured_depths": depths}
    return df


def ratio_table(df):
    """Tidy table: one row per (MoE implementation, baseline, phase, batch, seq_len) with
    measured speed-up, FLOP ratio and byte ratio."""
    import pandas as pd

    moe = df[(df.model == "moe") & (df.status == "ok")]
    rows = []
    for b in [c.removeprefix("speedup_vs_") for c in df.columns if c.startswith("speedup_vs_")]:
        t = moe[["experts_implementation", "phase", "batch", "seq_len", "tokens_per_s"]].copy()
        t.insert(1, "baseline", f"dense_{b}")
        t["measured"] = moe[f"speedup_vs_{b}"]
        t["flop_ratio"] = moe[f"flop_ratio_vs_{b}"]
        t["byte_ratio"] = moe[f"byte_ratio_vs_{b}"]
        rows.append(t)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
