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
# **What you will learn.**
# * the accounting behind "47B parameters, 13B active": parameters, FLOPs and memory of
#   Mixtral 8x7B and of dense models matched to it (`moelab.compute`), and how small the
#   router's share of the compute is;
# * why an MoE's decode speed depends on the batch: bytes read and FLOPs per decode step
#   against batch size, and where decode stops being memory-bound;
# * a decode roofline with serving cost per million tokens next to published A100 numbers,
#   each curve labelled by the routing it assumes;
# * a small *measured* MoE-vs-dense comparison on this machine (the full table comes from
#   `bench/bench_moe_vs_dense.py`), and popular claims about Mixtral's size checked against
#   their sources.
#
# **What you need.** Notebook 01 (what an expert is). Nothing but a CPU: the accounting works
# from configs (no weights), the benchmark builds small random models, and the roofline's
# routing comes from formulas and from the Mixtral-like synthetic router of `moelab.serving`.
#
# **On real Mixtral 8x7B.** The accounting already *is* for Mixtral 8x7B. On a GPU the
# benchmark runs full-size layers: `python bench/bench_moe_vs_dense.py --full-size-layers 2
# --dtype fp16 --device cuda`.
#
# All sizes are in GB = 10⁹ bytes unless marked GiB; 1 multiply-add = 2 FLOPs (see
# `docs/compute.md`).

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=24)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

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
from moelab.plots.diagrams import decode_crossover_batch, decode_roofline_diagram
from moelab.plots.teaching import moe_vs_dense_bars, roofline_cost_plot
from moelab.compute import (MIXTRAL_A100_VLLM, check_memory_claim, compare_published, count_params,
                            decode_roofline, dense_equivalent, distinct_experts_from_trace, expected_distinct_experts,
                            fits, flops_per_token, kv_bytes_per_token, mistral_7b_config, mixtral_8x7b_config,
                            router_share, weight_bytes)
from moelab.plots import group_colors, save, use_style
from moelab.serving import mixtral_like_trace

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # cpu: bf16, one thread; cuda: fp16
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

# %%
print(f"Mixtral 8x7B stores {p.total / B:.1f} B parameters and uses {p.active / B:.1f} B per token: "
      f"{baselines.loc['dense, total-matched', 'decode GFLOPs/token @2k ctx'] / baselines.loc['Mixtral 8x7B', 'decode GFLOPs/token @2k ctx']:.1f}x "
      "fewer FLOPs per decode token than the dense model with the same weight memory.")

# %% [markdown]
# ### Exercise 1: Mixtral 8x22B
#
# Mixtral 8x22B's `config.json` (Hugging Face, `mistralai/Mixtral-8x22B-v0.1`): hidden size
# 6144, 56 layers, expert width 16384, 48 attention heads, 8 KV heads, vocabulary 32768, 8
# experts, top-2. Build its config from `mixtral_8x7b_config(**overrides)` and count its total
# and active parameters. Mistral AI's announcement ("Cheaper, Better, Faster, Stronger",
# April 2024) gives 141 B total and 39 B active.

# %%
my_total, my_active = None, None      # your answers, in billions

# %% tags=["solution"]
mx22 = mixtral_8x7b_config(hidden_size=6144, num_hidden_layers=56, intermediate_size=16384, num_attention_heads=48,
                           num_key_value_heads=8, vocab_size=32768)
my_total, my_active = count_params(mx22).total / B, count_params(mx22).active / B

# %%
assert my_total is not None and abs(my_total - 141) < 1.5 and abs(my_active - 39) < 1.0, (my_total, my_active)
print(f"correct: {my_total:.1f} B total, {my_active:.1f} B active (announced: 141 B, 39 B)")

# %% [markdown]
# ## 2. FLOPs per token, and the router's share
#
# Matmul FLOPs of one decode token with 2,048 tokens in the KV cache, by component. The router
# is one (4096 × 8) matrix per layer — 2 · 4096 · 8 = 65,536 FLOPs per token and layer,
# against ~705 M for the two experts it selects (printed below).

# %%
flops = pd.DataFrame({name: flops_per_token(c, context=2048, phase="decode").to_dict() for name, c in models.items()}) / B
per_layer = flops["Mixtral 8x7B"] * B / mixtral.num_hidden_layers
print(f"per token and layer: router {per_layer['router']:,.0f} FLOPs, the two experts it selects "
      f"{per_layer['experts'] / 1e6:,.1f} M FLOPs")
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
# ### Modern MoEs: how much of the model one token touches
#
# The same accounting on full-size configs shipped as code (`moelab.compute.modern_moes()`, no hub):
# DeepSeek-V3 (sigmoid routing, 1 shared + 256 routed experts, top-8, 3 dense layers, MLA), GPT-OSS-120B,
# Llama-4-Scout (text stack) and Qwen3-30B-A3B, each next to its published total and active counts
# (`moelab.compute.PUBLISHED`; a test keeps ours within 2 %). GPT-OSS's published active count leaves
# the input embedding out (`active_as_published_B`). Decode bytes per token = the weights one decode
# step reads at fp16 with uniform routing, divided by the batch: at batch 32 a step reads most experts
# once for all 32 tokens.

# %%
from moelab.compute import modern_moes

modern = modern_moes()
modern.to_csv(FIGURES / "05_modern_moes.csv")
modern[["total_B", "active_B", "active_share", "published_total_B", "published_active_B", "active_as_published_B",
        "fp16_GB", "int4_GB", "decode_GB_per_token_b1", "decode_GB_per_token_b32"]].round(2)

# %% [markdown]
# ## 4. Measured: MoE vs dense on this machine (small)
#
# A small Mixtral (random weights) and its two dense baselines, timed with interleaved
# repeats (`moelab.bench.time_interleaved`: every variant in every round, rotated order;
# medians). Prefill = a B × S prompt; decode = one new token for each of B sequences on a
# KV cache of S tokens. Next to each measured speed-up the accounting's two predictions:
# `flop_ratio` (if both were compute bound) and `byte_ratio` (if both were memory bound;
# the MoE reads only the experts the step touches). > 1 means the MoE is faster.
#
# The notebook measures a deliberately small case to stay quick; the full table (hidden
# size 512, batches 1–32, eager and grouped-matmul experts) is `bench/bench_moe_vs_dense.py`,
# whose result file `bench/results/moe_vs_dense_cpu.csv` the README quotes.

# %%
bench_cfg = bench.BenchConfig(hidden_size=128, intermediate_size=448, num_hidden_layers=2).mixtral()
bench_kw = dict(batch_sizes=(1, 8), seq_lens=(32,), repeats=3)
threads = torch.get_num_threads()
torch.set_num_threads(1)            # as `moelab bench`: one thread is steadier on a shared machine
try:
    bench_dtype = "bf16" if dtype == torch.bfloat16 else "fp32"
    measured = bench.run_moe_vs_dense(bench_cfg, dtype=bench_dtype, device="cpu", max_call_s=10.0,
                                      experts_implementations=("eager",), **bench_kw)
    skipped = measured[measured["status"] == "skipped"]
    if len(skipped):
        print(f"scaled down: {len(skipped)} variants skipped on this machine:", sorted(set(skipped["reason"])))
finally:
    torch.set_num_threads(threads)
bench.save_results(measured, FIGURES / "05_moe_vs_dense.csv")
ratios = bench.ratio_table(measured)
print(measured.attrs["meta"]["device_name"], "|", measured.attrs["meta"]["dtype"])
best = ratios.sort_values("measured").groupby(["baseline", "phase", "batch"]).tail(1)
best.sort_values("batch").set_index(["baseline", "phase", "batch"])[["measured", "flop_ratio", "byte_ratio"]].unstack("batch").round(2)

# %%
fig = moe_vs_dense_bars(ratios, title=f"Small Mixtral (H={bench_cfg.hidden_size}, {bench_cfg.num_hidden_layers} layers) "
                                      f"vs dense baselines, {bench_dtype}, {measured.attrs['meta']['device_name']}")
save(fig, "05_moe_vs_dense", outdir=FIGURES)
fig

# %% [markdown]
# How to read it: against the *total*-matched baseline (same weights in memory) the MoE should
# win by up to its FLOP ratio in prefill, where the work is large matmuls; against the
# *active*-matched baseline (same FLOPs) the best an MoE can do is tie, and on a CPU the
# per-expert dispatch (gathering each expert's tokens, many small matmuls) usually makes it
# slower. Decode of small batches is dominated by reading weights, so the byte ratio is the
# better predictor there — and it shrinks as the batch grows and touches more experts. At
# this small size fixed overheads weigh more than in the bench's full table.

# %% [markdown]
# ## 5. Bytes and FLOPs per decode step
#
# One decode step of a batch of B sequences must read every weight it uses once: the
# non-expert weights, plus, per layer, every expert that *at least one* token of the batch
# picked. With uniform routing a batch of B touches E(1 − (1 − k/E)^B) experts per layer —
# 2 at B = 1, nearly all 8 at B = 16 — so the bytes per step grow quickly and then stop, while
# the FLOPs grow with B. Where FLOPs per byte reach the GPU's ratio of compute to bandwidth,
# decode stops being memory-bound:

# %%
fig = decode_roofline_diagram(mixtral, gpu=MIXTRAL_A100_VLLM.gpu)
save(fig, "05_decode_bytes_vs_batch", outdir=FIGURES)
print(f"decode of Mixtral 8x7B (fp16, all experts read) stops being memory-bound on {MIXTRAL_A100_VLLM.gpu} "
      f"at a batch of about {decode_crossover_batch(mixtral, MIXTRAL_A100_VLLM.gpu):.0f}")
fig

# %% [markdown]
# ## 6. Decode roofline and cost per million tokens
#
# The experts a batch touches depend on the router. We compare two routing sources, and label
# every curve by its source:
#
# * **uniform routing** — the formula above;
# * **Mixtral-like synthetic router** — `moelab.serving.mixtral_like_trace`: 32 layers, top-2
#   of 8, calibrated to the Mixtral paper's repeat rates (§5, Table 5, layers 0, 15, 31,
#   interpolated between them) with exactly uniform load. The uniform load is an assumption
#   resting on OLMoE's measurement of Mixtral-8x7B ("activated close to the uniform routing
#   baseline for all layers and domains", arXiv:2409.02060 §5.3, Figure 22 bottom); the Mixtral
#   paper's Figure 7 draws the shares beside 1/8 but its text does not say they are uniform.
#   It draws one token from each of B different sequences, as a serving batch would.
#
# (The embedded tiny model is *not* used here: its 4 layers and its own balance are no model
# of Mixtral's routing.)

# %%
BATCHES = [1, 4, 8, 16, 32]
syn = mixtral_like_trace(tokens=32_768, layers=32, seq_len=512, seed=0)
syn_distinct = distinct_experts_from_trace(syn, batch_sizes=BATCHES, samples=200)
SOURCES = {"uniform routing (formula)": "uniform", "Mixtral-like synthetic router (Table 5)": syn_distinct}
distinct = pd.DataFrame({"uniform routing (formula)": {b: expected_distinct_experts(8, 2, b) for b in BATCHES},
                         "Mixtral-like synthetic router (Table 5)": syn_distinct})
distinct.index.name = "batch"
distinct.round(2)

# %%
ref = MIXTRAL_A100_VLLM
roof = {name: decode_roofline(mixtral, ref.gpu, BATCHES, context=512, dtype="fp16", experts_touched=et,
                              price_per_hour=ref.price_per_hour)
        for name, et in SOURCES.items()}
cmp = compare_published(mixtral, ref, context=512, experts_touched=syn_distinct)
cmp.to_csv(FIGURES / "05_compare_published.csv", index=False)
print(f"{ref.name}\nsource: {ref.source}\nquote: {ref.quote}")
cmp.round(3)

# %%
fig = roofline_cost_plot(roof, published=ref, published_usd=cmp.reported_usd_per_million,
                         title=f"Mixtral 8x7B decode, fp16, {ref.gpu}, 512-token context")
save(fig, "05_roofline", outdir=FIGURES)
fig

# %% [markdown]
# The roofline is an upper bound (100 % of the HBM bandwidth, no kernel overheads); the
# published run reaches the fraction `reported_over_predicted` of it (computed with the
# synthetic router's experts per batch). Note the column `fits`:
# fp16 Mixtral does **not** fit on one 80 GB A100 at all — which the memory check below
# takes up.

# %% [markdown]
# ## 7. The memory claim
#
# The same blog post (seed 000: `ref.source` above) claims 87–91 GB of VRAM used for fp16
# Mixtral on one A100 80GB. `check_memory_claim` works out whether that is possible, and which
# setups would be consistent with the number.

# %%
claim = check_memory_claim(mixtral, "fp16", ref.gpu, ref.reported_vram_gb)
print(claim.verdict)
claim.scenarios[claim.scenarios.consistent].round(2)

# %% [markdown]
# ## 8. Popular claims, checked
#
# The five articles moelab was started from (seeds 000–004: blog posts and summaries, not
# primary sources) repeat numbers about Mixtral's size. Each row below says who makes the
# claim; only the Mixtral paper is a primary source, and a source an article cites for itself
# is not verified here. The `moelab` column is computed from the architecture (sections 1–3).
# `moelab.serving.claims_table()` audits every checkable number of the five articles
# (notebook 08).
#
# | claim | as claimed by | checked below |
# |---|---|---|
# | "47B parameters, 13B active" | the Mixtral paper, abstract (primary source; `moelab.papers.MIXTRAL["params"]`) | rounded |
# | "46.7B total, 12.9B active" | seeds 001, 003, 004 | exact to the digit |
# | "8 × 7B = 56B parameters" | the name (seed 004: "8 expert networks of 7B parameters each") | attention, embeddings and norms are shared; only the MLPs are replicated |
# | "~90GB FP16" | seed 001 (its table cites "Mixtral model card on Hugging Face, community analysis"; not verified here) | weights alone, before the KV cache |
# | "~26GB" at 4 bits | seed 001 (no source given) | int4 weights, with and without group-wise scales |
# | gate logits add "~10% to the compute cost" | seed 003 (no source given) | the router's share of the FLOPs (section 2) |

# %%
from moelab.papers import MIXTRAL, cite

print("Mixtral paper:", cite(MIXTRAL["params"]))
int4_scales = weight_bytes(mixtral, bytes_per_param=0.5 + 2 / 128)      # + one fp16 scale per group of 128
naive = 8 * count_params(mistral_7b_config()).total / B
claims = pd.DataFrame([
    ("total parameters (B)", 47, "Mixtral paper, abstract", p.total / B, "the paper rounds 46.70 up"),
    ("active parameters per token (B)", 13, "Mixtral paper, abstract", p.active / B, "the paper rounds 12.88 up"),
    ("total parameters (B)", 46.7, "seeds 001, 003, 004", p.total / B, ""),
    ("active parameters per token (B)", 12.9, "seeds 001, 003, 004", p.active / B, ""),
    ("total parameters if 8 x 7B (B)", 56, "the name", p.total / B, f"8 whole Mistral 7Bs would be {naive:.1f} B"),
    ("fp16 weights (GB)", 90, "seed 001", weight_bytes(mixtral, "fp16") / B, "plus 128 KiB of KV cache per token"),
    ("fp16 weights (GiB)", 90, "seed 001", weight_bytes(mixtral, "fp16") / 2**30, "what nvidia-smi would show"),
    ("int4 weights (GB)", 26, "seed 001", weight_bytes(mixtral, "int4") / B, "every parameter at 4 bits"),
    ("int4 weights + fp16 scales per 128 (GB)", 26, "seed 001", int4_scales / B,
     "GPTQ/AWQ files also keep some tensors in 16 bits"),
    ("router share of decode FLOPs at 2k context (%)", 10, "seed 003",
     100 * router_share(mixtral, context=2048, phase="decode"), "one 4096 x 8 matrix per layer"),
], columns=["quantity", "claimed", "claimed by", "moelab", "note"]).set_index("quantity")
claims.to_csv(FIGURES / "05_claims.csv")
claims.round(3)

# %% [markdown]
# ## Summary
#
# * Mixtral 8x7B holds the parameters of a ~47 B model and computes like a ~13 B one; the
#   router is a negligible share of the FLOPs.
# * Decode of small batches reads weights, not FLOPs: the MoE reads only the experts a batch
#   touches, an advantage that fades as the batch grows and touches all experts.
# * A roofline needs a routing assumption; each curve above names its own.
#
# **Where next.** Notebook 06 looks at precision: how often bf16 or fp16 pick different
# experts than fp32. Notebook 08 goes further into serving (offloading, expert parallelism).
