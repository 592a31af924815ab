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
# # 02 · Tracing a model
#
# **What you learn.** How to record every routing decision of a model with `moelab.trace`:
# on a plain forward pass and on `generate` (a batch of two prompts, left-padded); what the
# resulting `RoutingTrace` holds and its per-token table (`to_pandas`); the layer × expert
# load heatmap and per-layer balance statistics; saving a trace to Parquet and reading it back
# — with moelab, and with pandas, DuckDB and Polars directly, no moelab needed; and the
# `moelab trace` command line for tracing a corpus to disk.
#
# **Needs.** The embedded model `moelab-mixtral-tiny` (CPU). **Takes** 37 s (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01).
#
# **On real Mixtral 8x7B.** Set `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` (≈ 94 GB of fp16 weights: one 141 GB GPU, two 80 GB GPUs, or
# `device_map="auto"` offloading; a local folder works too, moelab never downloads). Nothing
# else changes: traces then have 32 layers instead of 4.

# %% tags=["parameters"]
# Parameters (papermill style): every value comes from an environment variable, with a default.
import os
from pathlib import Path

MODEL = os.environ.get("MOELAB_MODEL") or None             # None = the embedded moelab-mixtral-tiny
DTYPE = os.environ.get("MOELAB_DTYPE") or None             # None = CUDA fp16; CPU bf16 where native, else fp32
DEVICE = os.environ.get("MOELAB_DEVICE", "auto")           # cpu | cuda | auto
DOCS_PER_DOMAIN = int(os.environ.get("MOELAB_DOCS_PER_DOMAIN", "12"))
SEQ_LEN = int(os.environ.get("MOELAB_SEQ_LEN", "256"))
FIGURES = os.environ.get("MOELAB_FIGURES") or None        # None = out/figures/ (untracked); `moelab figures` -> figures/
FAST = os.environ.get("MOELAB_FAST", "0") == "1"            # 1 = small slices (tests)

# %%
# %matplotlib inline
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.notebooks import trace_documents
from moelab.plots import load_heatmap, save

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
RUNS = Path(tempfile.mkdtemp(prefix="moelab-nb02-"))        # trace files of this notebook
pd.set_option("display.precision", 4)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
cfg = model.config
print(f"{type(model).__name__}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
      f"top-{cfg.num_experts_per_tok} of {cfg.num_local_experts} experts | {dtype} on {model.device}")

# %% [markdown]
# ## 1. A forward pass
#
# `moelab.trace(model)` is a context manager: it hooks every router (`layers.{i}.router`),
# records what each returns during the block, removes its hooks on exit and fills the trace.
# The model computes exactly what it computes without tracing.

# %%
enc = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").to(model.device)
with torch.no_grad(), moelab.trace(model) as tr:
    model(**enc)
print(tr)
print("experts:", tr.experts.shape, "(tokens, layers, k)   weights:", tr.weights.shape, tr.weights.dtype)

# %% [markdown]
# The same trace in the interactive explorer: every token on the colour of its first-choice
# expert; ←/→ (or the slider) switches the layer, hovering a token shows its experts and weights
# in every layer, clicking an expert highlights its tokens. `moelab.explorer.show(tr).save(path)`
# writes it as one HTML file that opens anywhere, offline (docs/explorer.md).

# %%
from moelab.explorer import show

show(tr, tok)

# %% [markdown]
# `tr.experts[t, l, r]` is the expert token *t* was sent to at MoE layer *l* as its choice *r*
# (rank 0 = the larger weight), `tr.weights` the renormalised weights those experts' outputs
# were mixed with. `to_pandas()` is the tidy long form — one row per (token, layer, rank):

# %%
df = tr.to_pandas()
df["token"] = tok.token_strings(df["token_id"])
df.head(2 * tr.num_layers * tr.top_k)

# %% [markdown]
# A wide view is often easier to read: one row per token, the first and second choice of
# every layer.

# %%
wide = tr.token_frame()
wide["token"] = tok.token_strings(tr.token_id)
for pos, layer in enumerate(tr.layer_ids):
    wide[f"L{layer}"] = [f"{a}/{b}" for a, b in tr.experts[:, pos, :2]]
wide.drop(columns=["sequence", "step"])

# %% [markdown]
# ## 2. Tracing `generate`: a batch of two prompts, left-padded
#
# With the KV cache on, `generate` runs one forward for the prompts (step 0, the prefill) and
# one per new token (step n). The tracer follows this: every token the model *reads* is
# recorded once, with its `sequence`, `position` (counting real tokens only — padding is never
# recorded) and `step`.

# %%
prompts = ["def fibonacci(n):", "Il était une fois une princesse qui"]
batch = tok(prompts, return_tensors="pt", padding=True).to(model.device)      # left padding
print("attention mask:\n", batch["attention_mask"].cpu().numpy())
with torch.no_grad(), moelab.trace(model) as gen_tr:
    out = model.generate(**batch, max_new_tokens=4 if FAST else 12, do_sample=False,
                         pad_token_id=tok.pad_token_id)
for p, text in zip(prompts, tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)):
    print(f"{p!r} -> {text!r}")
print(gen_tr)

# %%
frame = gen_tr.token_frame()
frame["token"] = tok.token_strings(gen_tr.token_id)
frame["first choice, layer 0"] = gen_tr.experts[:, 0, 0]
print("tokens per (sequence, step):")
display(frame.groupby(["sequence", "step"]).size().unstack("step"))
frame[frame.sequence == 0]

# %% [markdown]
# The prompt tokens (step 0) come first, then one token per decode step; the last generated
# token is never read by the model, so it has no routing. The left padding of the shorter
# prompt is absent, and its positions start at 0.

# %% [markdown]
# ## 3. Load and balance over a corpus slice
#
# Trace a slice of the held-out corpus — `DOCS_PER_DOMAIN` documents of each of the 12
# domains cut into windows of `SEQ_LEN` tokens (the same windows `moelab trace --corpus`
# makes) — and look at how evenly each layer uses its experts.

# %%
docs = {d: ds[:DOCS_PER_DOMAIN] for d, ds in load_documents("heldout").items()}
corpus_tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out")
print(corpus_tr)

fig = load_heatmap(corpus_tr, title=f"Expert load per layer ({corpus_tr.num_tokens:,} held-out tokens)")
save(fig, "02_load_heatmap", outdir=FIGURES)
fig

# %%
bal = moelab.metrics.balance(corpus_tr)
bal.to_csv(FIGURES / "02_balance.csv")
bal[["tokens", "cv", "maxvio", "entropy"]]

# %% [markdown]
# `cv` (coefficient of variation of the per-expert load), `maxvio` (how much the busiest
# expert exceeds the mean) and the normalised `entropy` (1 = uniform) summarise each row of
# the heatmap. The auxiliary-loss columns (`switch_aux`, `hf_aux`, `z_loss`) need the full
# router logits: trace with `moelab.trace(model, logits=True)` to get them. Per domain:

# %%
moelab.metrics.balance(corpus_tr, by="domain")["entropy"].unstack("layer").round(3)

# %% [markdown]
# ## 4. Save, reload — and read the file without moelab
#
# `tr.save(path)` writes one zstd-compressed Parquet file, one row per token; routing is
# stored as fixed-size lists (`experts`: layers × k ids, row-major (layer, rank)). Per-token
# columns such as `domain` become ordinary columns.

# %%
path = RUNS / "heldout.parquet"
corpus_tr.save(path)
back = moelab.load_trace(path)
assert np.array_equal(back.experts, corpus_tr.experts) and np.array_equal(back.columns["domain"], corpus_tr.columns["domain"])
print(f"{path.stat().st_size / 1e3:.0f} kB for {back.num_tokens:,} tokens -> {back}")

# %% [markdown]
# **pandas** reads it as it is (the list columns become numpy arrays per row):

# %%
raw = pd.read_parquet(path)
print(raw.dtypes.to_string())
K = corpus_tr.top_k
raw["first_expert_layer0"] = raw["experts"].map(lambda e: int(e[0]))
raw.groupby("domain")["first_expert_layer0"].agg(lambda s: s.value_counts(normalize=True).idxmax()).rename("most used expert, layer 0")

# %% [markdown]
# **DuckDB** queries the file in place with SQL. Lists are 1-based: layer *l*'s first choice is
# `experts[l * k + 1]`.

# %%
import duckdb

last = corpus_tr.num_layers - 1
duckdb.sql(f"""
    SELECT domain,
           count(*)                                                   AS tokens,
           avg(CASE WHEN experts[1] = 0 THEN 1 ELSE 0 END)            AS share_expert0_layer0,
           avg(CASE WHEN experts[{last * K + 1}] = 0 THEN 1 ELSE 0 END) AS share_expert0_last_layer
    FROM '{path}'
    GROUP BY domain ORDER BY domain
""").df()

# %% [markdown]
# **Polars**, lazily: `arr.get(i)` is 0-based.

# %%
import polars as pl

(pl.scan_parquet(path)
   .with_columns(pl.col("experts").arr.get(0).alias("l0_first"), pl.col("experts").arr.get(1).alias("l0_second"))
   .group_by("l0_first")
   .agg(pl.len().alias("tokens"), pl.col("l0_second").mode().first().alias("most common partner"))
   .sort("l0_first")
   .collect())

# %% [markdown]
# ## 5. The `moelab trace` command
#
# For corpora too large to hold in memory the command line streams Parquet parts to a folder
# (bounded memory; a killed run leaves every flushed part readable), and runs data-parallel
# under `torchrun`. On the embedded model, all domains:
#
# ```bash
# moelab trace --corpus heldout --seq-len 256 --out runs/heldout
# ```
#
# and on real Mixtral:
#
# ```bash
# moelab trace --model mistralai/Mixtral-8x7B-v0.1 --dtype float16 --device cuda \
#              --corpus heldout --out runs/mixtral-heldout
# ```
#
# Here a tiny slice (two domains, one document each, 64-token windows), run as a subprocess:

# %%
cli_out = RUNS / "cli-trace"
cmd = [sys.executable, "-m", "moelab.cli", "trace", "--corpus", "heldout", "--domains", "code", "fiction",
       "--max-docs", "1", "--seq-len", "64", "--batch-size", "8", "--device", "cpu" if device == "cpu" else device,
       "--out", str(cli_out)]
if MODEL:
    cmd += ["--model", MODEL]
if DTYPE:
    cmd += ["--dtype", DTYPE]
print("$ moelab", " ".join(cmd[3:]))
env = {**os.environ, "TQDM_DISABLE": "1"}
if MODEL is None:
    env["OMP_NUM_THREADS"] = "1"            # as above: the tiny model runs best on one thread
res = subprocess.run(cmd, capture_output=True, text=True, env=env)
print(res.stdout[-2000:], res.stderr[-2000:] if res.returncode else "")
assert res.returncode == 0, "moelab trace failed"
cli_tr = moelab.load_trace(cli_out)
print(sorted(p.name for p in cli_out.rglob("*.parquet")), "->", cli_tr)
cli_tr.token_frame().groupby("domain").agg(windows=("sequence", "nunique"), tokens=("sequence", "size"))
