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
# # 06 · Precision and routing
#
# **What you will learn.** Top-k routing is a *discrete* decision on top of floating-point
# arithmetic: when two experts' router logits are nearly tied, rounding can flip which one
# wins. We trace the same held-out tokens with the same weights in float32, bfloat16 and
# float16, and measure:
# * per layer, how often the half-precision runs pick different experts than float32
#   (`moelab.metrics.agreement`, `moelab.plots.agreement_plot`);
# * that the flips happen where the float32 router was nearly undecided: the router *margin*
#   between the k-th and (k+1)-th logit (`moelab.metrics.margins.flip_margins`).
#
# **What you need.** Notebooks 01–02 (top-k; traces), and notebook 01's router z-loss, which
# keeps logits small for exactly this reason. The embedded model `moelab-mixtral-tiny`: its
# weights are stored in bf16, so loading them in float32 is exact. bf16 and float16 matmuls
# are slow on CPUs without native support, so this notebook traces a small slice: the first
# window of `MOELAB_DOCS_PER_DOMAIN` documents per domain. `MOELAB_DTYPE` is not used here.
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DEVICE=cuda`.
# Its float32 reference needs 187 GB: on one 80 GB GPU it is offloaded by `device_map="auto"`
# (slow, but the slice is small), or compare bf16 with fp16 only by setting `REFERENCE` below.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=1)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
# %matplotlib inline
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import display

from pathlib import Path

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import agreement
from moelab.metrics.margins import flip_margins, router_margins
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import agreement_plot, save

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, _ = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # cpu: one thread for the embedded model
REFERENCE = "float32"
DTYPES = ["float32", "bfloat16", "float16"]
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
pd.set_option("display.precision", 4)

# %% [markdown]
# ## 1. The same tokens, three precisions
#
# One slice of the held-out corpus, traced three times with the model loaded in each dtype.
# Windows are built and ordered identically each time, so the traces describe the same tokens
# in the same order — what `agreement` checks before comparing. The float32 run also records
# the full router logits, to look at the margins later.

# %%
docs = {d: [doc[: 4 * SEQ_LEN] for doc in ds[:DOCS_PER_DOMAIN]]          # ~ the first window of each
        for d, ds in load_documents("heldout").items()}
traces, seconds = {}, {}
for name in DTYPES:
    model, tok = moelab.load_model(MODEL, dtype=getattr(torch, name),
                                   device_map="auto" if device == "cuda" else None)
    t0 = time.perf_counter()
    traces[name] = trace_documents(model, tok, docs, seq_len=SEQ_LEN, logits=name == REFERENCE, desc=name)
    seconds[name] = time.perf_counter() - t0
    del model
ref = traces[REFERENCE]
pd.DataFrame({"tokens": {n: t.num_tokens for n, t in traces.items()}, "seconds": seconds,
              "tokens/s": {n: traces[n].num_tokens / seconds[n] for n in traces}})

# %% [markdown]
# ## 2. How often do the half-precision routers disagree with float32?
#
# Per layer: `top1` — same first choice; `topk_overlap` — share of the top-2 set in common;
# `exact_set` — identical top-2 set (order ignored).

# %%
agree = {f"{n} vs {REFERENCE}": agreement(traces[n], ref) for n in DTYPES if n != REFERENCE}
table = pd.concat(agree, names=["comparison"])
table.to_csv(FIGURES / "06_precision_agreement.csv")
display((100 - 100 * table[["top1", "topk_overlap", "exact_set"]]).rename(
    columns=lambda c: f"disagree {c} (%)").unstack("comparison").round(2))
fig = agreement_plot(agree, title=f"Routing agreement with {REFERENCE} ({MODEL_NAME}, {ref.num_tokens:,} tokens)")
ax = fig.axes[0]
ax.set_ylim(max(0, np.floor(100 * table[["top1", "topk_overlap", "exact_set"]].min().min() - 0.5)), 100.05)
ax.set_xticks(list(ref.layer_ids))
save(fig, "06_precision_agreement", outdir=FIGURES)
fig

# %% [markdown]
# ## 3. Where the flips happen
#
# A token's top-2 set can only change when its 2nd- and 3rd-ranked experts are close. The
# float32 logit margin between them, for tokens whose set flips in bf16 / fp16 versus all
# tokens:

# %%
margins = flip_margins(ref, {f"{n} vs {REFERENCE}": traces[n] for n in DTYPES if n != REFERENCE})
margins.to_csv(FIGURES / "06_flip_margins.csv")
margins

# %% [markdown]
# How to read it: if rounding only decides near-ties, the flipped tokens' median margin is a
# small fraction of the typical one, and 90 % of the flips happen among the few percent of
# tokens with the smallest margins. Two effects can make deeper layers flip more: each
# layer's input carries the rounding of everything before it (and the earlier routing flips),
# and bf16 keeps 8 bits of mantissa against fp16's 11, so its rounding errors are ~8× larger —
# fp16 should agree better with fp32, as long as no activation overflows its narrower range
# (max 65,504; bf16 weights of this size convert to fp16 almost exactly). A flip at a
# near-tie changes the layer's output little: the two experts involved had almost the same
# weight. What the flips do to downstream quality is not measured here; this notebook
# measures how often the routing itself differs.

# %% [markdown]
# ### Exercise: the margin of one token
#
# For the first token of `ref` at its first layer, compute the margin between its 2nd- and
# 3rd-largest router logits (`ref.logits`: tokens × layers × E, float32).

# %%
my_margin = None        # your answer: a float

# %% tags=["solution"]
row = np.sort(ref.logits[0, 0])[::-1]                      # descending
my_margin = float(row[1] - row[2])

# %%
assert my_margin is not None and np.isclose(my_margin, router_margins(ref.logits, k=2)[0, 0]), my_margin
print(f"correct: margin = {my_margin:.4f}")

# %% [markdown]
# ## Summary
#
# * The same weights in bf16 or fp16 route a small share of token-layers differently from
#   fp32, and the flips concentrate at near-tied router logits.
# * Deeper layers can flip more: their inputs carry the rounding (and the routing flips) of
#   every layer before.
#
# **Where next.** Notebook 07 changes the routing on purpose (ablating experts, top-1 vs
# top-2, router biases) and measures what it costs in quality; notebook 09 trains routers from
# scratch to show collapse and the routing variants of newer MoEs.
