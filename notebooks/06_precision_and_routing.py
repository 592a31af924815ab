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
# **What you learn.** Top-k routing is a *discrete* decision on top of floating-point
# arithmetic: when two experts' router logits are nearly tied, rounding can flip which one
# wins. We trace the same held-out tokens with the same weights in float32, bfloat16 and
# float16, and measure per layer how often the half-precision runs pick different experts
# than float32 (`moelab.metrics.agreement`, `moelab.plots.agreement_plot`) — and check that
# the flips happen where the float32 router was nearly undecided.
#
# **Needs.** The embedded model `moelab-mixtral-tiny` (its weights are stored in bf16, so
# loading them in float32 is exact and bf16 is the precision it was trained in). **Takes**
# 1 min (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01): bf16 and float16 matmuls are slow on such CPUs, so this notebook traces a small
# slice (`MOELAB_DOCS_PER_DOMAIN / 8` documents per domain). `MOELAB_DTYPE` is not used here.
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DEVICE=cuda`.
# Its float32 reference needs 187 GB: on one 80 GB GPU it is offloaded by `device_map="auto"`
# (slow, but the slice is small), or compare bf16 with fp16 only by setting `REFERENCE` below.

# %% tags=["parameters"]
# Parameters (papermill style): every value comes from an environment variable, with a default.
import os
from pathlib import Path

MODEL = os.environ.get("MOELAB_MODEL") or None             # None = the embedded moelab-mixtral-tiny
DTYPE = os.environ.get("MOELAB_DTYPE") or None             # unused: this notebook compares dtypes
DEVICE = os.environ.get("MOELAB_DEVICE", "auto")           # cpu | cuda | auto
DOCS_PER_DOMAIN = int(os.environ.get("MOELAB_DOCS_PER_DOMAIN", "24"))
SEQ_LEN = int(os.environ.get("MOELAB_SEQ_LEN", "256"))
FIGURES = os.environ.get("MOELAB_FIGURES") or None        # None = out/figures/ (untracked); `moelab figures` -> figures/
FAST = os.environ.get("MOELAB_FAST", "0") == "1"            # 1 = small slices (tests)

# %%
# %matplotlib inline
import time

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import agreement
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import agreement_plot, save

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, _ = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # cpu: one thread for the embedded model
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
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
docs = {d: ds[: max(1, DOCS_PER_DOMAIN // 8)] for d, ds in load_documents("heldout").items()}
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
lg = np.sort(ref.logits, axis=-1)[..., ::-1]                     # (tokens, layers, E), descending
k = ref.top_k
margin = lg[..., k - 1] - lg[..., k]                               # (tokens, layers): k-th vs (k+1)-th logit
rows = []
for n in DTYPES:
    if n == REFERENCE:
        continue
    a, b = np.sort(traces[n].experts, -1), np.sort(ref.experts, -1)
    flipped = (a != b).any(-1)                                     # (tokens, layers) top-k set differs
    for pos, layer in enumerate(ref.layer_ids):
        f = flipped[:, pos]
        p90 = np.percentile(margin[f, pos], 90) if f.any() else np.nan
        rows.append({"comparison": f"{n} vs {REFERENCE}", "layer": layer, "flipped tokens": int(f.sum()),
                     "median margin, flipped": np.median(margin[f, pos]) if f.any() else np.nan,
                     "median margin, all": np.median(margin[:, pos]),
                     "90% of flips below": p90,
                     "share of all tokens below that": np.mean(margin[:, pos] <= p90) if f.any() else 0.0})
margins = pd.DataFrame(rows).set_index(["comparison", "layer"])
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
