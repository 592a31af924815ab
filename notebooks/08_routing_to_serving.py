# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · From routing to serving: offloading, expert parallelism, and the economics in the sources
#
# **What you learn.** What a routing trace means for a deployment (`moelab.serving`):
# how often a per-layer GPU cache of C experts already holds what the next token needs (LRU, LFU,
# a prefetcher, and Bélády's offline bound), what decode speed that gives Mixtral 8x7B on a 24 GB
# consumer GPU over PCIe, how unevenly expert-parallel GPUs are loaded before and after an
# EPLB-style rebalancing, what a token costs, and which numbers in the source articles survive
# recomputation.
#
# **Two traces, side by side.** (1) the embedded model `moelab-mixtral-tiny` on the held-out corpus
# (real, learned, but 4 layers and far less balanced than Mixtral); (2) a *synthetic* Mixtral-like
# router (`mixtral_like_trace`) calibrated to the Mixtral paper's Table 5 repetition rates per layer
# and a uniform Figure 7 load — a stand-in, not Mixtral. Every plot labels which is which.
#
# **Needs.** CPU only. **Takes** 2¾ min (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01).
# Definitions and sources: `docs/serving.md`.

# %% tags=["parameters"]
# Parameters (papermill style): every value comes from an environment variable, with a default.
import os
from pathlib import Path

MODEL = os.environ.get("MOELAB_MODEL") or None             # None = the embedded moelab-mixtral-tiny
DTYPE = os.environ.get("MOELAB_DTYPE") or None             # None = CUDA fp16; CPU bf16 where native, else fp32
DEVICE = os.environ.get("MOELAB_DEVICE", "auto")           # cpu | cuda | auto
DOCS_PER_DOMAIN = int(os.environ.get("MOELAB_DOCS_PER_DOMAIN", "12"))
SEQ_LEN = int(os.environ.get("MOELAB_SEQ_LEN", "256"))
FIGURES = os.environ.get("MOELAB_FIGURES") or ("../figures" if Path.cwd().name == "notebooks" else "figures")
FAST = os.environ.get("MOELAB_FAST", "0") == "1"            # 1 = small slices (tests)

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
from IPython.display import display

import moelab
from moelab.compute import GPUS, LINKS, mixtral_8x7b_config
from moelab.data import load_documents
from moelab.notebooks import resolve_device_dtype, trace_documents
from moelab.plots import save
from moelab.serving import (balanced_placement, break_even_table, claims_table, contiguous_placement,
                            dispatch_bytes_per_token, expert_bytes, expert_load, hit_rate_table, imbalance,
                            imbalance_over_windows, max_cache_size, mixtral_like_trace, offloaded_tokens_per_s,
                            predict_from_previous_layer, simulate_cache, usd_per_million)
from moelab.serving.plots import break_even_plot, hit_rate_curves, imbalance_plot, offload_speed_plot

FIGURES = Path(FIGURES)
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = 1, min(SEQ_LEN, 128)
SYN_TOKENS = 8_000 if FAST else 200_000
CAPACITIES = (2, 4, 8) if FAST else range(2, 9)
pd.set_option("display.precision", 3)
mixtral = mixtral_8x7b_config()

# %% [markdown]
# ## 1. The two traces

# %%
model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
docs = {d: ds[:DOCS_PER_DOMAIN] for d, ds in load_documents("heldout").items()}
real = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out")
syn = mixtral_like_trace(SYN_TOKENS, layers=32, seq_len=1024, seed=0)
TRACES = {f"embedded model, held-out ({real.num_layers} layers)": real,
          "synthetic Mixtral-like (Table 5 calibrated, 32 layers)": syn}
pd.DataFrame({name: {"tokens": t.num_tokens, "layers": t.num_layers, "experts": t.num_experts, "k": t.top_k,
                     "first-choice repeat (mean)": moelab.metrics.repeat_rates(t)["first"].mean(),
                     "load max/mean (worst layer)": (lambda ld: (ld.max(1) / ld.mean(1)).max())(expert_load(t))}
              for name, t in TRACES.items()})

# %% [markdown]
# ## 2. Offloading: hit rate against cache size
#
# Per layer, C of the 8 experts stay on the GPU. Tokens are served one at a time in trace order.
# The prefetcher guesses layer l's experts from layer l−1's first choice with a transition table
# fitted on the same trace (in-sample: an optimistic guess); prefetching "the previous token's
# experts" is not plotted because it is exactly LRU (LRU already holds them; a test checks it).

# %%
tables = []
for name, t in TRACES.items():
    pred = predict_from_previous_layer(t)
    tables.append(hit_rate_table(t, CAPACITIES, predicted=pred, label=name))
hits = pd.concat(tables, ignore_index=True)
hits.to_csv(FIGURES / "08_hit_rates.csv", index=False)
summary = hits.groupby(["trace", "policy", "capacity"]).agg(hit_rate=("hit_rate", "mean"),
                                                            vs_belady=("vs_belady", "first")).unstack("capacity")
display(summary["hit_rate"].round(3))
save(hit_rate_curves(hits), "08_hit_rate_curves", FIGURES)

# %% [markdown]
# `vs_belady` is the policy's mean hit rate over Bélády's at the same C: how far an online policy
# sits from the offline bound.

# %%
summary["vs_belady"].round(3)

# %% [markdown]
# ## 3. Offloaded decode speed of Mixtral 8x7B on a 24 GB consumer GPU
#
# RTX 4090 (24 GiB, 1,008 GB/s, PCIe 4.0 x16 = 31.5 GB/s per direction, `moelab.compute.LINKS`).
# Per token: GPU reads of the resident weights + `k·(1−hit)` experts per layer copied over PCIe
# (`offloaded_tokens_per_s`, no overlap, peak link rate: an upper bound). Hit rates are LRU's,
# layer-averaged from each trace (the embedded model's 4 layers stand in for all 32).
# Circled points fit in the card with 2 GB reserved for KV cache and activations (`max_cache_size`).

# %%
rows = []
for name, t in TRACES.items():
    lru = hits[(hits.trace == name) & (hits.policy == "lru")].groupby("capacity").hit_rate.mean()
    for dt in ("fp16", "int8", "int4"):
        cmax = max_cache_size(mixtral, "RTX-4090", dt)
        for C, h in lru.items():
            rows.append(dict(trace=name, dtype=dt, capacity=C, lru_hit_rate=h, fits=C <= cmax,
                             expert_mb=expert_bytes(mixtral, dt) / 1e6,
                             tokens_per_s=offloaded_tokens_per_s(mixtral, h, "RTX-4090", dt)))
speed = pd.DataFrame(rows)
speed.to_csv(FIGURES / "08_offload_speed.csv", index=False)
save(offload_speed_plot(speed, title="Mixtral 8x7B offloaded to an RTX 4090 over PCIe 4.0 (LRU)"),
     "08_offload_speed", FIGURES)
speed[speed.fits].pivot_table(index=["trace", "dtype"], columns="capacity", values="tokens_per_s").round(1)

# %% [markdown]
# ## 4. Expert parallelism: imbalance before and after rebalancing
#
# 8 experts on G = 4 GPUs: contiguous placement (2 experts per GPU) against an EPLB-style placement
# with 4 redundant slots (12 slots, 3 per GPU), fitted on the whole trace; then the same over
# windows of 512 tokens, with EPLB refitted on the previous window as a periodic rebalancer would.

# %%
G, SLOTS, WINDOW = 4, 12, 512
ep_rows, wins = [], []
for name, t in TRACES.items():
    ld = expert_load(t)
    cont, bal = contiguous_placement(8, G, t.num_layers), balanced_placement(ld, G, SLOTS)
    ep_rows.append({"trace": name, "contiguous max/mean": imbalance(ld, cont, G).mean(),
                    "EPLB max/mean": imbalance(ld, bal, G).mean(),
                    "worst layer, contiguous": imbalance(ld, cont, G).max(),
                    "all-to-all KB/token/layer (H=4096, bf16)": dispatch_bytes_per_token(t, cont, G, 4096).mean() / 1e3})
    w = imbalance_over_windows(t, G, WINDOW, num_slots=SLOTS)
    w.insert(0, "trace", name)
    wins.append(w)
ep = pd.DataFrame(ep_rows).set_index("trace")
windows = pd.concat(wins, ignore_index=True)
windows.to_csv(FIGURES / "08_ep_windows.csv", index=False)
save(imbalance_plot(windows, title=f"EP imbalance over {WINDOW}-token windows, G={G}"), "08_ep_imbalance", FIGURES)
ep

# %% [markdown]
# ## 5. What a token costs, and when self-hosting pays
#
# $/M tokens = $/h ÷ (3600 × tokens/s) × 10⁶. The seed-000 setup (one A100 at $1.29/h, 95 tok/s at
# batch 4) and the vLLM batch-32 figure (218 tok/s) against an API at $1.50/M (GPT-3.5 output
# price in seed 000) and $0.60/M; dedicated GPUs at 70% utilisation, 730 h a month.

# %%
setups = {"A100 $1.29/h, 95 tok/s (seed 000, batch 4)": (95, 1.29),
          "A100 $1.29/h, 218 tok/s (batch 32)": (218, 1.29),
          "A100 $1.29/h, 2,000 tok/s (large-batch serving)": (2000, 1.29)}
costs = pd.DataFrame([{"setup": k, "tokens/s": v[0], "$/h": v[1], "$/M tokens": usd_per_million(*v)}
                      for k, v in setups.items()]).set_index("setup")
display(costs)
vols = np.logspace(7, 10.5, 36)
be = pd.concat([break_even_table(vols, 1.50, tps, price, utilisation=0.7).assign(setup=k)
                for k, (tps, price) in setups.items()], ignore_index=True)
be.to_csv(FIGURES / "08_break_even.csv", index=False)
save(break_even_plot(be, title="API at $1.50/M vs dedicated A100s at 70% utilisation"), "08_break_even", FIGURES)

# %% [markdown]
# ## 6. The claims audit
#
# Every checkable number in the five source articles, recomputed (`moelab.serving.claims_table`).

# %%
claims = claims_table()
claims.to_csv(FIGURES / "08_claims.csv")
with pd.option_context("display.max_colwidth", 120):
    display(claims[["source", "claim", "recomputed", "verdict"]])
claims.verdict.value_counts()

# %% [markdown]
# ## What changes on real Mixtral
#
# The synthetic trace reproduces Table 5 and a uniform load by construction; real Mixtral routing
# has structure it lacks (domain effects, token identity, cross-layer correlation), so the
# prefetcher and the windowed imbalance are where a real trace would differ most. Set
# `MOELAB_MODEL` to a local Mixtral to replace the embedded trace.
