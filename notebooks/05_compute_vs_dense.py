# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version,-language_info,-widgets
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (moelab)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Compute vs dense: what an MoE costs
#
# **What you learn.** The accounting behind "47B parameters, 13B active": parameters, FLOPs and
# memory of Mixtral 8x7B and of dense models matched to it (`moelab.compute`), how small the
# router's share of the compute is, a *measured* MoE-vs-dense throughput comparison on this
# machine (`moelab.bench`), a decode roofline with serving cost per million tokens next to
# published A100 numbers — using the distinct experts per batch measured from a routing trace —
# and a sourced check of popular claims about Mixtral's size and cost.
#
# **Needs.** Nothing but CPU: the accounting works from configs (no weights); the benchmark
# builds small random models; the embedded model `moelab-mixtral-tiny` is traced briefly.
# **Takes** 5 min (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01), nearly all of it the MoE-vs-dense benchmark.
#
# **On real Mixtral 8x7B.** The accounting already *is* for Mixtral 8x7B. To measure the
# distinct experts per batch on the real router set `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1
# MOELAB_DTYPE=float16 MOELAB_DEVICE=cuda`; on a GPU the benchmark also runs there
# (full-size layers: `python bench/bench_moe_vs_dense.py --full-size-layers 2 --dtype fp16 --device cuda`).
#
# All sizes are in GB = 10⁹ bytes unless marked GiB; 1 multiply-add = 2 FLOPs (see
# `docs/compute.md`).

# %% tags=["parameters"]
# Parameters (papermill style): every value comes from an environment variable, with a default.
import os
from pathlib import Path

MODEL = os.environ.get("MOELAB_MODEL") or None             # None = the embedded moelab-mixtral-tiny
DTYPE = os.environ.get("MOELAB_DTYPE") or None             # None = CUDA fp16; CPU bf16 where native, else fp32
DEVICE = os.environ.get("MOELAB_DEVICE", "auto")           # cpu | cuda | auto
DOCS_PER_DOMAIN = int(os.environ.get("MOELAB_DOCS_PER_DOMAIN", "24"))
SEQ_LEN = int(os.environ.get("MOELAB_SEQ_LEN", "256"))
FIGURES = os.environ.get("MOELAB_FIGURES") or None        # None = out/figures/ (untracked); `moelab figures` -> figures/
FAST = os.environ.get("MOELAB_FAST", "0") == "1"            # 1 = small slices (tests)

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab import bench
from moelab.compute import (MIXTRAL_A100_VLLM, check_memory_claim, compare_published, count_params,
                            decode_roofline, dense_equivalent, distinct_experts_from_trace, expected_distinct_experts,
                            fits, flops_per_token, kv_bytes_per_token, mistral_7b_config, mixtral_8x7b_config,
                            router_share, weight_bytes)
from moelab.data import load_documents
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import group_colors, save, use_style

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # cpu: bf16, one thread; cuda: fp16
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
pd.set_option("display.precision", 3)
B = 1e9
mixtral = mixtral_8x7b_config()

# %% [markdown]
# ## 1. Parameters: total vs active
#
# Every parameter counts as *active* except the routed experts a token does not use: a token
# uses 2 of 8 experts in each of the 32 layers, so the experts count 2/8 of their 45.1 B.
# Embeddings, attention (shared by all experts), router and norms count fully.

# %%
p = count_params(mixtral)
params = (p.to_frame() / B).round(3).rename(columns={"total": "total (B)", "active": "active per token (B)"})
params.to_csv(FIGURES / "05_params_mixtral.csv")
params

# %% [markdown]
# **Dense baselines** (`dense_equivalent`): a Mistral-style dense model with the same attention,
# embeddings and depth, and an MLP as wide as needed to match the MoE's *active* parameters
# (same compute per token), its *total* parameters (same memory), or one expert's width (the
# dense model Mixtral's experts have the shape of — Mistral 7B).

# %%
dense = {m: dense_equivalent(mixtral, m) for m in ("active", "total", "source")}
models = {"Mixtral 8x7B": mixtral, **{f"dense, {m}-matched": c for m, c in dense.items()}}
rows = []
for name, c in models.items():
    pc = count_params(c)
    f = flops_per_token(c, context=2048, phase="decode")
    rows.append({"model": name, "MLP width": c.intermediate_size, "total params (B)": pc.total / B,
                 "active params (B)": pc.active / B, "decode GFLOPs/token @2k ctx": f.total / B,
                 "fp16 weights (GB)": weight_bytes(c, "fp16") / B})
baselines = pd.DataFrame(rows).set_index("model")
baselines.to_csv(FIGURES / "05_dense_baselines.csv")
assert abs(count_params(dense["source"]).total - count_params(mistral_7b_config()).total) / B < 0.01
baselines

# %% [markdown]
# Mixtral stores the parameters of a 46.7 B dense model but computes like a 12.9 B one: per
# token, ~3.6× fewer FLOPs than the memory-matched dense model, for the same weight memory.

# %% [markdown]
# ## 2. FLOPs per token, and the router's share
#
# Matmul FLOPs of one decode token with 2,048 tokens in the KV cache, by component. The router
# is one (4096 × 8) matrix per layer — 2 · 4096 · 8 = 65,536 FLOPs per token and layer,
# against ~704 M for the two experts it selects.

# %%
flops = pd.DataFrame({name: flops_per_token(c, context=2048, phase="decode").to_dict() for name, c in models.items()}) / B
flops.rename_axis("GFLOPs per decode token").round(4)

# %%
shares = pd.DataFrame(
    {f"{phase}, context {ctx}": {"router share of FLOPs (%)": 100 * router_share(mixtral, context=ctx, phase=phase),
                                  "experts share (%)": 100 * flops_per_token(mixtral, ctx, phase).share("experts"),
                                  "attention share (%)": 100 * flops_per_token(mixtral, ctx, phase).share("attention")}
     for phase, ctx in [("decode", 0), ("decode", 2048), ("decode", 32768), ("prefill", 4096)]}).T
shares.to_csv(FIGURES / "05_router_share.csv")
shares

# %% [markdown]
# ## 3. Memory
#
# Weights at each precision (weight-only quantisation; int4 scales/zero-points add ≈ 3 % more,
# not included), the KV cache per token, and what fits on common GPUs with a 4k-token context.

# %%
mem = pd.DataFrame({dt: {"weights (GB)": weight_bytes(mixtral, dt) / B, "weights (GiB)": weight_bytes(mixtral, dt) / 2**30}
                    for dt in ("fp32", "fp16", "int8", "int4")}).T
print(f"KV cache: {kv_bytes_per_token(mixtral, 'fp16') / 2**10:.0f} KiB per token in fp16 "
      f"(32 layers x 8 KV heads x 128 x K and V x 2 bytes)")
display(mem)
fit_rows = []
for gpu in ("A100-80GB-SXM", "H100-SXM", "H200", "RTX-4090"):
    for dt in ("fp16", "int8", "int4"):
        r = fits(mixtral, gpu, dt, batch=1, context=4096)
        fit_rows.append({"gpu": gpu, "weights": dt, "fits (batch 1, 4k ctx)": r.fits, "needed (GB)": r.needed_gb,
                         "capacity (GB)": r.capacity_gb, "max batch at 4k": r.max_batch})
fit_table = pd.DataFrame(fit_rows).set_index(["gpu", "weights"])
fit_table.to_csv(FIGURES / "05_memory_fits.csv")
fit_table

# %% [markdown]
# ## 4. Measured: MoE vs dense on this machine
#
# A small Mixtral (random weights) and its two dense baselines, timed with interleaved
# repeats (`moelab.bench.time_interleaved`: every variant in every round, rotated order;
# medians). Prefill = a B × S prompt; decode = one new token for each of B sequences on a
# KV cache of S tokens. Next to each measured speed-up the accounting's two predictions:
# `flop_ratio` (if both were compute bound) and `byte_ratio` (if both were memory bound;
# the MoE reads only the experts the step touches). > 1 means the MoE is faster.

# %%
if FAST:
    bench_cfg = bench.BenchConfig(hidden_size=256, intermediate_size=896, num_hidden_layers=2).mixtral()
    bench_kw = dict(batch_sizes=(1, 8), seq_lens=(64,), repeats=3)
else:
    bench_cfg = bench.BenchConfig().mixtral()                        # H=512, 4 layers, 8 experts of 1792
    bench_kw = dict(batch_sizes=(1, 8, 32), seq_lens=(128,), repeats=5)
threads = torch.get_num_threads()
torch.set_num_threads(1)            # as `moelab bench`: one thread is steadier on a shared machine
try:
    # the CPU default dtype (bf16 only where native); a variant whose first call exceeds 20 s is skipped
    # and listed with the reason, so a slow machine shrinks the work instead of timing out
    bench_dtype = "bf16" if dtype == torch.bfloat16 else "fp32"
    measured = bench.run_moe_vs_dense(bench_cfg, dtype=bench_dtype, device="cpu", max_call_s=20.0,
                                      experts_implementations=("eager", "grouped_mm"), **bench_kw)
    skipped = measured[measured["status"] == "skipped"]
    if len(skipped):
        print(f"scaled down: {len(skipped)} variants skipped on this machine:", sorted(set(skipped["reason"])))
finally:
    torch.set_num_threads(threads)
bench.save_results(measured, FIGURES / "05_moe_vs_dense.csv")
ratios = bench.ratio_table(measured)
print(measured.attrs["meta"]["device_name"], "|", measured.attrs["meta"]["dtype"])
ratios.round(2)

# %%
with use_style():
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    best = ratios.sort_values("measured").groupby(["baseline", "phase", "batch"]).tail(1)   # fastest MoE impl
    for ax, phase in zip(axes, ["prefill", "decode"]):
        sub = best[best.phase == phase].sort_values(["baseline", "batch"])
        labels = [f"{b.removeprefix('dense_')}\nB={n}" for b, n in zip(sub.baseline, sub.batch)]
        x = np.arange(len(sub))
        ax.bar(x - 0.27, sub.measured, 0.27, color="#4477AA", label="measured")
        ax.bar(x, sub.flop_ratio, 0.27, color="#CCBB44", label="FLOP ratio (compute bound)")
        ax.bar(x + 0.27, sub.byte_ratio, 0.27, color="#AA3377", label="byte ratio (memory bound)")
        ax.axhline(1, color="0.3", lw=1)
        ax.set_xticks(x, labels)
        ax.set_title(f"{phase}: MoE speed-up over dense")
    axes[0].set_ylabel("dense time / MoE time")
    axes[1].legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Small Mixtral (H={bench_cfg.hidden_size}, {bench_cfg.num_hidden_layers} layers) vs dense "
                 f"baselines, bf16, {measured.attrs['meta']['device_name']}", fontsize=9)
save(fig, "05_moe_vs_dense", outdir=FIGURES)
fig

# %%
summary = best.sort_values("batch").set_index(["baseline", "phase", "batch"])[["measured", "flop_ratio", "byte_ratio"]]
summary.unstack("batch").round(2)

# %% [markdown]
# How to read it: against the *total*-matched baseline (same weights in memory) the MoE should
# win by up to its FLOP ratio in prefill, where the work is large matmuls; against the
# *active*-matched baseline (same FLOPs) the best an MoE can do is tie, and on a CPU the
# per-expert dispatch (gathering each expert's tokens, many small matmuls) usually makes it
# slower. Decode of small batches is dominated by reading weights, so the byte ratio is the
# better predictor there — and it shrinks as the batch grows and touches more experts.

# %% [markdown]
# ## 5. Decode roofline and cost per million tokens
#
# One decode step of a batch of B sequences must read every weight it uses once: the
# non-expert weights, plus, per layer, every expert that *at least one* token of the batch
# picked. With uniform routing a batch of B touches E(1 − (1 − k/E)^B) experts per layer —
# 2 at B = 1, nearly all 8 at B = 16 — so the MoE's bandwidth advantage disappears as the
# batch grows. A real router is not uniform; we measure the distinct experts per batch from a
# routing trace of the embedded model (same E = 8, k = 2 as Mixtral), drawing one token from
# each of B different windows, as a serving batch would.

# %%
model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
quick = {d: ds[: max(1, DOCS_PER_DOMAIN // 4)] for d, ds in load_documents("heldout").items()}
qtr = trace_documents(model, tok, quick, seq_len=SEQ_LEN, desc="quick trace")
BATCHES = [1, 4, 8, 16, 32]
measured_distinct = distinct_experts_from_trace(qtr, batch_sizes=BATCHES, samples=200)
distinct = pd.DataFrame({"uniform routing": {b: expected_distinct_experts(8, 2, b) for b in BATCHES},
                         f"measured ({Path(str(MODEL or DEFAULT_MODEL)).name})": measured_distinct})
distinct.index.name = "batch"
print(qtr)
distinct

# %%
ref = MIXTRAL_A100_VLLM
roof = {name: decode_roofline(mixtral, ref.gpu, BATCHES, context=512, dtype="fp16", experts_touched=et,
                              price_per_hour=ref.price_per_hour)
        for name, et in [("uniform routing", "uniform"), ("measured routing", measured_distinct)]}
cmp = compare_published(mixtral, ref, context=512, experts_touched=measured_distinct)
cmp.to_csv(FIGURES / "05_compare_published.csv", index=False)
print(f"{ref.name}\nsource: {ref.source}\nquote: {ref.quote}")
cmp.round(3)

# %%
with use_style():
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    colors = group_colors(list(roof) + ["published"])
    for name, df in roof.items():
        ax.plot(df.batch, df.tokens_per_s, marker="o", ms=3, color=colors[name], label=f"roofline, {name}")
        ax2.plot(df.batch, df.usd_per_million_tokens, marker="o", ms=3, color=colors[name], label=f"roofline, {name}")
    ax.plot(ref.batch_sizes, ref.tokens_per_s, marker="s", color="black", ls="--", label="published (vLLM, A100)")
    ax2.plot(ref.batch_sizes, cmp.reported_usd_per_million, marker="s", color="black", ls="--", label="published")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xticks(BATCHES, [str(b) for b in BATCHES])
        a.set_xlabel("batch (sequences decoding together)")
    ax.set_yscale("log")
    ax.set_ylabel("output tokens / s")
    ax.set_title("Mixtral 8x7B decode, fp16, 1x A100 80GB, 512-token context")
    ax2.set_yscale("log")
    ax2.set_ylabel(f"\\$ per 1M output tokens (at \\${ref.price_per_hour}/h)")
    for a in (ax, ax2):                                              # plain numbers on the log axes
        a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "2358" else ""))
    ax2.set_title("Serving cost")
    ax.legend(fontsize=7)
save(fig, "05_roofline", outdir=FIGURES)
fig

# %% [markdown]
# The roofline is an upper bound (100 % of the HBM bandwidth, no kernel overheads); the
# published run reaches the fraction `reported_over_predicted` of it. Note the column `fits`:
# fp16 Mixtral does **not** fit on one 80 GB A100 at all — which the memory check below
# takes up.

# %% [markdown]
# ## 6. The memory claim
#
# The same source reports 87–91 GB of VRAM used for fp16 Mixtral on one A100 80GB.
# `check_memory_claim` works out whether that is possible, and which setups would be
# consistent with the number.

# %%
claim = check_memory_claim(mixtral, "fp16", ref.gpu, ref.reported_vram_gb)
print(claim.verdict)
claim.scenarios[claim.scenarios.consistent].round(2)

# %% [markdown]
# ## 7. Popular claims, checked
#
# | claim | where it comes from | moelab's number | verdict |
# |---|---|---|---|
# | "47B parameters, 13B active" | Mixtral paper abstract (Jiang et al. 2024, arXiv:2401.04088) | see below | ✔ (rounded) |
# | "8 × 7B = 56B parameters" | the name | see below | ✘ — attention, embeddings and norms are shared; only the MLPs are replicated |
# | "the router is ~10 % of the compute" | an often-repeated forum estimate (no source in the paper) | see below | ✘ — orders of magnitude smaller |
# | "~90 GB of VRAM in half precision" | Hugging Face "Welcome Mixtral" blog, Dec 2023 (as relayed by hardware-corner.net) | see below | ✔ — 93.4 GB = 87.0 GiB of weights, before the KV cache |
# | "~23–26 GB at 4 bits" | community VRAM calculators (e.g. canitrun.dev: Q4 23.4 GB; gigagpu.com: GPTQ 4-bit ≈ 26 GB) | see below | ✔ — 23.4 GB of int4 weights, ≈ 24 GB with group-wise scales |

# %%
int4_scales = weight_bytes(mixtral, bytes_per_param=0.5 + 2 / 128)      # + one fp16 scale per group of 128
naive = 8 * count_params(mistral_7b_config()).total / B
claims = pd.DataFrame([
    ("total parameters (B)", 47, p.total / B, "paper rounds 46.70 up"),
    ("active parameters per token (B)", 13, p.active / B, "paper rounds 12.88 up"),
    ("total parameters if 8 x 7B (B)", 56, p.total / B, f"8 whole Mistral 7Bs would be {naive:.1f} B"),
    ("router share of decode FLOPs @2k ctx (%)", 10, 100 * router_share(mixtral, context=2048),
     "65,536 of 830 M FLOPs per token and layer"),
    ("fp16 weights (GB)", 90, weight_bytes(mixtral, "fp16") / B, "plus 128 KiB of KV cache per token"),
    ("fp16 weights (GiB)", 90, weight_bytes(mixtral, "fp16") / 2**30, "what nvidia-smi would show"),
    ("int4 weights (GB)", 23.4, weight_bytes(mixtral, "int4") / B, "every parameter at 4 bits"),
    ("int4 weights + fp16 scales per 128 (GB)", 26, int4_scales / B,
     "GPTQ/AWQ files also keep some tensors in 16 bits"),
], columns=["quantity", "claimed", "moelab", "note"]).set_index("quantity")
claims.to_csv(FIGURES / "05_claims.csv")
claims.round(3)
