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
# # 07 · Interventions: what happens if the router chooses otherwise?
#
# **What you will learn.**
# * how to change a model's routing inside a `with` block, through hooks only, with
#   `moelab.intervene(model, ...)`: ablate an expert (route around it, or zero its weight), force
#   experts, change k, skip the second expert when its weight is small (dynamic skipping, Lu et
#   al. 2024), add a bias to the router logits (steering, as in SteerMoE), or replay a recorded
#   trace (as in RL routing replay, R3);
# * how to measure what a change does: per domain NLL / perplexity, next-token agreement and KL
#   against the unmodified model, and the active parameters and FLOPs the routing implies
#   (`moelab.interventions.score`);
# * four studies on the embedded model: which experts matter per domain (and whether their
#   routing share predicts it), top-1 vs top-2 vs dynamic skipping as quality vs compute, how
#   much of bf16's gap to fp32 comes from routing flips, and how far a router bias must go to
#   move a domain's traffic.
#
# **What you need.** Notebook 01 (what a router computes: softmax, top-k, renormalise) and 02
# (`moelab.trace`). The embedded model `moelab-mixtral-tiny` on CPU, fp32, one thread. **Takes**
# 34–36 s in full mode (`make figures` on a fresh clone, 2-core AVX2 CPU, 2026-12-04). The ablation sweep is batched: the prefix before
# the ablated layer runs once, all 8 experts of a layer run as one stack, and only positions an
# ablation can change go through the LM head (bench/bench_ablation_sweep.py). Full mode sweeps one
# held-out window of 128 tokens per domain; `MOELAB_WINDOWS=3` runs the larger slice
# (about 4 min on the shared machine, bench/results/ablation_sweep_cpu.txt).
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DEVICE=cuda` (bf16),
# with `MOELAB_WINDOWS` windows per domain.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import env_int, notebook_params

P = notebook_params(dtype="float32", seq_len=128, fast_seq_len=48)   # float32: the reference precision
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
SEQ_LEN, FAST = P.seq_len, P.fast
WINDOWS = env_int("WINDOWS", 1)               # held-out windows per domain (ablation sweep; 3 = the slice)
SCORE_WINDOWS = env_int("SCORE_WINDOWS", 1)   # windows per domain for the frontier
REPLAY_SEQ = env_int("REPLAY_SEQ", 64)        # window of the bf16 replay study

# %%
# %matplotlib inline
import copy
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import moelab
from moelab.data import domains as all_domains
from moelab.interventions import ablation_sweep, bias_sweep, frontier, intervene, replay_gap, score
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.plots import save
from moelab.plots.interventions import (ablation_heatmaps, bias_sweep_plot, frontier_plot, importance_vs_usage,
                                        replay_gap_plot)

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)
DOMAINS = all_domains()
if FAST:
    DOMAINS, WINDOWS, SEQ_LEN, SCORE_WINDOWS, REPLAY_SEQ = DOMAINS[:2], 1, 48, 1, 32
model, tok = moelab.load_model(MODEL, dtype=dtype, **({"device_map": device} if device != "cpu" else {}))
model.eval()
pd.set_option("display.precision", 3)
print(f"{type(model).__name__}, {dtype}, {device}; {len(DOMAINS)} domains x {WINDOWS} windows of {SEQ_LEN} tokens")

# %% [markdown]
# ## 0. One line each
#
# Inside the block a `moelab.trace` records the routing actually used (the intervention's hooks
# run first). An ablated expert never appears; forced experts appear exactly.

# %%
batch = tok(["def add(a, b):\n    return a + b"], return_tensors="pt")
with torch.no_grad(), intervene(model, ablate={1: [3]}), moelab.trace(model) as tr:
    model(**batch)
with torch.no_grad(), intervene(model, force={0: [6, 2]}), moelab.trace(model) as tr_f:
    model(**batch)
print("expert 3 at layer 1 inside the ablation:", int((tr.experts[:, 1] == 3).sum()), "times")
print("layer 0 under force [6, 2]:", np.unique(tr_f.experts[:, 0], axis=0).tolist())

# %% [markdown]
# ### Exercise 1: predict the effective k of dynamic skipping
#
# Dynamic skipping with β drops a token's second expert at a layer when its weight is below β
# times the first's. Skipping at one layer l alone (`skip={l: 0.5}`) leaves every layer before l
# untouched, so the router at l sees exactly what it saw without the intervention. From the
# trace `tr_plain` of `batch` alone (its `weights`: tokens × layers × k), predict the mean number
# of experts each token uses at layer l when only layer l skips with β = 0.5, for every layer:
# a list with one float per layer. Then check it against what `intervene` counts.

# %%
with torch.no_grad(), moelab.trace(model) as tr_plain:
    model(**batch)
my_k_eff = None         # your answer: a list of floats, one per layer

# %% tags=["solution"]
w = tr_plain.weights.astype(np.float64)                  # (tokens, layers, k)
my_k_eff = list(2 - (w[:, :, 1] < 0.5 * w[:, :, 0]).mean(0))

# %%
measured = []
for l in tr_plain.layer_ids:
    with torch.no_grad(), intervene(model, skip={int(l): 0.5}) as iv:
        model(**batch)
    measured.append(iv.effective_k()[int(l)])
print("predicted", np.round(my_k_eff, 3), "measured", np.round(measured, 3))
assert np.allclose(my_k_eff, measured), (my_k_eff, measured)

# %% [markdown]
# ## 1. Which experts matter, per domain — and does usage predict it?
#
# Every expert of every layer is ablated in turn (routed around: its logit becomes -inf before
# top-2, so the router picks the next best and renormalises), on the held-out windows of each
# domain. `ablation_sweep` batches this: one unmodified forward records the input of every
# decoder layer; the 8 ablations of layer l then run layers l..3 once, as a stack of 8 copies of
# the batch; and only the positions an ablation can change go through the LM head (at the last
# layer the tokens that chose the expert; before it, every position from the first such token on,
# because attention carries the change forward). The result equals 32 whole forwards per batch
# (tested), at a fraction of the time.

# %%
t0 = time.perf_counter()
sweep = ablation_sweep(model, tok, domains=DOMAINS, max_windows=WINDOWS, seq_len=SEQ_LEN)
sweep_s = time.perf_counter() - t0
n_abl = int((sweep.layer >= 0).sum())
print(f"ablation sweep: {n_abl} (domain, layer, expert) ablations + {len(DOMAINS)} baselines "
      f"in {sweep_s:.1f} s ({sweep.tokens.iloc[0]} predictions in the first domain)")
sweep.to_csv(FIGURES / "07_ablation_sweep.csv", index=False)
display(sweep[sweep.layer >= 0].sort_values("delta_ppl", ascending=False).head(8))

# %%
fig = ablation_heatmaps(sweep)
save(fig, "07_ablation_heatmaps", outdir=FIGURES)
fig

# %%
fig = importance_vs_usage(sweep)
save(fig, "07_importance_vs_usage", outdir=FIGURES)
abl = sweep[sweep.layer >= 0]
rho = abl.groupby("domain")[["share", "delta_ppl"]].apply(lambda g: g.corr(method="spearman").iloc[0, 1])
print("Spearman rho(share, delta ppl) per domain:\n" + rho.round(2).to_string())
fig

# %% [markdown]
# ## 2. Top-1 vs top-2 vs dynamic skipping: quality vs compute
#
# Dynamic skipping (Lu et al. 2024) drops the second expert when its weight is below β times the
# first. Its compute is the measured effective k (experts with nonzero weight per token) put into
# `moelab.compute`'s accounting. Dense baselines with the active parameters of k = 1 and k = 2 are
# placed at their FLOPs; their quality would need a trained dense model, which we do not have here.

# %%
ivs = {"top-1": dict(top_k=1), **{f"skip β={b}": dict(skip=b) for b in (0.2, 0.5, 0.8)}, "top-3": dict(top_k=3)}
if FAST:
    ivs = {k: ivs[k] for k in ("top-1", "skip β=0.5")}
scores = score(model, tok, domains=DOMAINS, interventions=ivs, max_windows=SCORE_WINDOWS, seq_len=SEQ_LEN)
front = frontier(scores, model.config)
front.to_csv(FIGURES / "07_frontier.csv", index=False)
display(front[["intervention", "ppl", "kl", "agreement", "k_eff", "flops_per_token", "active_params", "pareto"]])
fig = frontier_plot(front)
save(fig, "07_frontier", outdir=FIGURES)
fig

# %% [markdown]
# ## 3. Is bf16 worse than fp32 because its router flips?
#
# The same weights in bf16 and fp32, on a small slice (bf16 matmuls are ~40x slower than fp32 on
# this AVX2 CPU). The fp32 run's trace is replayed inside the bf16 run (experts from fp32, weights
# recomputed from the bf16 logits): the routing then equals fp32 on 100% of token-layers (checked),
# and what is left of the gap is everything else bf16 rounds. Read `flips` first: on this small
# model bf16 flips few routing choices, so the gap is small and `gap_from_routing` (a ratio of two
# small differences) is noisy on a slice this short; on real Mixtral, more windows make it stable.

# %%
bf16 = copy.deepcopy(model).to(torch.bfloat16)
t0 = time.perf_counter()
gap = replay_gap(model, bf16, tok, domains=DOMAINS[:2] if FAST else DOMAINS[::3], max_windows=1,
                 seq_len=REPLAY_SEQ)
print(f"replay study: {time.perf_counter() - t0:.1f} s")
gap.to_csv(FIGURES / "07_replay_gap.csv", index=False)
display(gap)
table = gap.set_index("domain")[["ppl_reference", "ppl_model", "ppl_model_reference_routing"]].rename(
    columns={"ppl_reference": "fp32", "ppl_model": "bf16", "ppl_model_reference_routing": "bf16, fp32 routing"})
fig = replay_gap_plot(table)
save(fig, "07_replay_gap", outdir=FIGURES)
del bf16
fig

# %% [markdown]
# ## 4. Steering by router bias
#
# A bias on one expert's logit at the middle layer, swept upward: the share of assignments that
# go to it (at most 1/k = 0.5 for top-2, when every token picks it) and the Δ perplexity it costs.
# The expert is the one code uses least at that layer.

# %%
LAYER = 2
code = abl[(abl.domain == ("code" if "code" in DOMAINS else DOMAINS[0])) & (abl.layer == LAYER)]
EXPERT = int(code.sort_values("share").expert.iloc[0])
biases = [0.0, 2.0, 4.0] if FAST else [0.0, 1.0, 2.0, 4.0, 6.0]
bs = bias_sweep(model, tok, domains=DOMAINS[:2] if FAST else DOMAINS[::3], layer=LAYER, expert=EXPERT,
                biases=biases, max_windows=1, seq_len=SEQ_LEN)
bs.to_csv(FIGURES / "07_bias_sweep.csv", index=False)
display(bs.pivot_table(index="bias", columns="domain", values=["share", "delta_ppl"]))
fig = bias_sweep_plot(bs, title=f"Bias on expert {EXPERT} at layer {LAYER}: traffic share and cost")
save(fig, "07_bias_sweep", outdir=FIGURES)
fig

# %% [markdown]
# ## Summary
#
# * `with moelab.intervene(model, ...):` changes the routing through hooks only: `ablate`
#   (`mode="route"` or `"zero"`), `force`, `top_k`, `skip` (β per layer), `bias`, `replay`. A
#   `moelab.trace` inside the block records the routing actually used; no-op interventions are
#   bitwise no-ops, and the model is bitwise unchanged afterwards, also after an exception.
# * `score` turns an intervention into per-domain NLL / perplexity, agreement and KL against the
#   unmodified model, plus the active parameters and FLOPs the effective k implies; `frontier`
#   puts them on a quality-vs-compute plot with dense baselines of the same active parameters.
# * Ablating one expert at a time shows which experts a domain needs; compare the Δ perplexity
#   with the routing share (Spearman ρ above) before reading "used a lot" as "important".
# * Replaying fp32 routing inside bf16 separates the part of the precision gap that comes from
#   routing flips from everything else bf16 rounds.
#
# **Where next.** Notebook 08 takes the routing to serving: what expert loads and skew mean for
# expert parallelism, capacity and offloading. docs/interventions.md has every operation's
# exact semantics, and bench/results/intervene_cpu.txt their cost.
