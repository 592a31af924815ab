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
# # 10 · Appendix: working with trace files
#
# **What you will learn.**
# * how a `RoutingTrace` is stored: one zstd-compressed Parquet file, one row per token;
# * reading that file **without moelab**: pandas, DuckDB (SQL, in place) and Polars (lazy);
# * the `moelab trace` command line, which streams a whole corpus to a folder of Parquet
#   parts with bounded memory, resumes a killed run, and runs data-parallel under `torchrun`.
#
# **What you need.** Notebook 02 (what a trace holds). The embedded model `moelab-mixtral-tiny`
# on CPU. This notebook is tooling, not routing: read it when you want to keep traces on disk
# or analyse them with other tools.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=24)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
import tempfile

import numpy as np
import pandas as pd

from pathlib import Path

import moelab
from moelab.data import load_documents
from moelab.notebooks import figures_dir, resolve_device_dtype, trace_documents

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice
RUNS = Path(tempfile.mkdtemp(prefix="moelab-nb10-"))        # trace files of this notebook
pd.set_option("display.precision", 4)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
docs = {d: ds[:1] for d, ds in load_documents("heldout").items()}      # one document per domain
tr = trace_documents(model, tok, docs, seq_len=min(SEQ_LEN, 128), desc="trace held-out")
print(tr)

# %% [markdown]
# ## 1. Save and reload
#
# `tr.save(path)` writes one Parquet file, one row per token. The routing is stored as
# fixed-size lists: `experts` holds layers × k expert ids, row-major (layer, rank), `weights`
# the matching router weights. Per-token columns such as `domain` become ordinary columns.

# %%
path = RUNS / "heldout.parquet"
tr.save(path)
back = moelab.load_trace(path)
assert np.array_equal(back.experts, tr.experts) and np.array_equal(back.columns["domain"], tr.columns["domain"])
print(f"{path.stat().st_size / 1e3:.0f} kB for {back.num_tokens:,} tokens -> {back}")

# %% [markdown]
# ## 2. pandas
#
# pandas reads it as it is (each list cell becomes a numpy array):

# %%
raw = pd.read_parquet(path)
print(raw.dtypes.to_string())
K, L = tr.top_k, tr.num_layers
raw["first_expert_layer0"] = raw["experts"].map(lambda e: int(e[0]))
raw.groupby("domain")["first_expert_layer0"].agg(lambda s: s.value_counts(normalize=True).idxmax()).rename(
    "most used expert, layer 0").to_frame().T

# %% [markdown]
# ## 3. DuckDB: SQL on the file in place
#
# Lists are 1-based in SQL: layer *l*'s first choice is `experts[l * k + 1]`.

# %%
import duckdb

last = L - 1
duckdb.sql(f"""
    SELECT domain,
           count(*)                                                   AS tokens,
           avg(CASE WHEN experts[1] = 0 THEN 1 ELSE 0 END)            AS share_expert0_layer0,
           avg(CASE WHEN experts[{last * K + 1}] = 0 THEN 1 ELSE 0 END) AS share_expert0_last_layer
    FROM '{path}'
    GROUP BY domain ORDER BY domain
""").df()

# %% [markdown]
# ## 4. Polars, lazily
#
# `arr.get(i)` is 0-based.

# %%
import polars as pl

(pl.scan_parquet(path)
   .with_columns(pl.col("experts").arr.get(0).alias("l0_first"), pl.col("experts").arr.get(1).alias("l0_second"))
   .group_by("l0_first")
   .agg(pl.len().alias("tokens"), pl.col("l0_second").mode().first().alias("most common partner"))
   .sort("l0_first")
   .collect())

# %% [markdown]
# ### Exercise 1: the load of layer 0, in SQL
#
# Write a DuckDB query that returns, for layer 0, the share of all top-k assignments each
# expert receives (both ranks count). It must agree with `moelab.metrics.expert_load`.
# Hint: `unnest` a slice of the list, `experts[1:k]`.

# %%
my_load = None          # your answer: a pandas Series indexed by expert, summing to 1

# %% tags=["solution"]
my_load = duckdb.sql(f"""
    SELECT e AS expert, count(*) / sum(count(*)) OVER () AS share
    FROM (SELECT unnest(experts[1:{K}]) AS e FROM '{path}')
    GROUP BY e ORDER BY e
""").df().set_index("expert")["share"]

# %%
ref = moelab.metrics.expert_load(tr)["fraction"].loc[tr.layer_ids[0]]
assert my_load is not None, "fill in my_load above"
assert np.allclose(my_load.reindex(ref.index, fill_value=0).to_numpy(), ref.to_numpy()), "not the load of layer 0"
print("correct: the SQL load of layer 0 equals metrics.expert_load")

# %% [markdown]
# ## 5. The `moelab trace` command
#
# For corpora too large to hold in memory the command line streams Parquet parts to a folder
# (bounded memory; a killed run leaves every flushed part readable, and `--resume` continues
# it), and runs data-parallel under `torchrun`. On the embedded model, every domain:
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
# torchrun --nproc_per_node 2 -m moelab.cli trace --corpus heldout --out runs/dp    # one shard per process
# ```
#
# Here a tiny slice (two domains, one document each, 64-token windows), run in this kernel
# (the same code path as the shell command):

# %%
from moelab.cli import main as moelab_cli

cli_out = RUNS / "cli-trace"
argv = ["trace", "--corpus", "heldout", "--domains", "code", "fiction", "--max-docs", "1", "--seq-len", "64",
        "--batch-size", "8", "--device", device, "--out", str(cli_out)]
argv += ["--model", MODEL] if MODEL else []
argv += ["--dtype", DTYPE] if DTYPE else []
print("$ moelab", " ".join(argv))
moelab_cli(argv)
cli_tr = moelab.load_trace(cli_out)
print(sorted(p.name for p in cli_out.rglob("*.parquet")), "->", cli_tr)
cli_tr.token_frame().groupby("domain").agg(windows=("sequence", "nunique"), tokens=("sequence", "size"))

# %% [markdown]
# ## Summary
#
# * A trace is one Parquet file (or a folder of parts), one row per token; any Parquet
#   reader can open it.
# * DuckDB and Polars query it in place, without loading it into moelab; SQL lists are
#   1-based, Polars' `arr.get` is 0-based.
# * `moelab trace` is the way to trace a corpus that does not fit in memory, or on several
#   GPUs; `moelab.load_trace(folder)` reads its parts back as one trace.
#
# **Where next.** Back to the course: notebook 03 reproduces the Mixtral paper's routing
# analysis on a trace of the whole held-out corpus.
