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
# **What you will learn.**
# * how to record every routing decision of a model with `moelab.trace`, on a forward pass and
#   on `generate` (a batch of two left-padded prompts);
# * what a `RoutingTrace` holds: per token, its experts and their weights at every MoE layer;
# * how to look at it: the interactive explorer (`moelab.show`), the per-token table, the layer ×
#   expert load heatmap, and per-layer balance statistics, with a reading of what they say.
#
# **What you need.** Notebook 01 (what a router computes). The embedded model
# `moelab-mixtral-tiny` on CPU. Saving traces and reading them with pandas, DuckDB, Polars and
# the `moelab trace` command are in the appendix, notebook 10.
#
# **On real Mixtral 8x7B.** Set `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` (≈ 94 GB of fp16 weights: one 141 GB GPU, two 80 GB GPUs, or
# `device_map="auto"` offloading; a local folder works too, moelab never downloads). Nothing
# else changes: traces then have 32 layers instead of 4.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=3)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
import torch
from IPython.display import display

import moelab
from moelab.data import load_documents
from moelab.notebooks import figures_dir, resolve_device_dtype, trace_documents
from moelab.plots import load_heatmap, save
from moelab.readings import balance_reading

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
pd.set_option("display.precision", 4)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
cfg = model.config
print(f"{type(model).__name__}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
      f"top-{cfg.num_experts_per_tok} of {cfg.num_local_experts} experts | {dtype} on {model.device}")

# %% [markdown]
# ## 1. A forward pass
#
# `moelab.trace(model)` is a context manager: it hooks every MoE layer, records during the block
# which experts each token was sent to and with which weights, removes its hooks on exit and
# fills the trace. The model computes exactly what it computes without tracing.
#
# **What is hooked, and its names.** In transformers the MoE block of decoder layer *i* is
# `model.model.layers[i].mlp`, with the router `mlp.gate` and the experts `mlp.experts`
# (notebook 01 took them apart). The record is read from the **experts** module's inputs: a
# forward pre-hook on `mlp.experts` sees the expert ids it runs and the weights it multiplies
# their outputs by, so the trace holds what the experts actually received. moelab names that
# hook `layers.{i}.router`, the same name for every architecture (OLMoE, Qwen-MoE, DeepSeek),
# whose module paths differ. The router `mlp.gate` is hooked, as `layers.{i}.router.logits`,
# only with `moelab.trace(model, logits=True)` (its full logits) or `scores=True` (the scores
# its top-k runs on). `tr.layer_ids` are the *i*s. `moelab.arch.find_routers` lists them:

# %%
from moelab.arch import find_routers

pd.DataFrame([{"hook name": r.name, "forward pre-hook on (the record)": r.experts_path,
               "`.logits` forward hook on (logits=True / scores=True)": r.logits_path or r.path}
              for r in find_routers(model)]).set_index("hook name")

# %%
enc = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").to(model.device)
with torch.no_grad(), moelab.trace(model) as tr:
    model(**enc)
print(tr)
print("experts:", tr.experts.shape, "(tokens, layers, k)   weights:", tr.weights.shape, tr.weights.dtype)

# %% [markdown]
# The same trace in the interactive explorer, `moelab.show`: every token on the colour of its
# first-choice expert; ←/→ (or the slider) switches the layer, hovering a token shows its
# experts and weights in every layer, clicking an expert highlights its tokens.
# `moelab.show(tr, tok).save(path)` writes it as one HTML file that opens anywhere, offline
# (docs/explorer.md).

# %%
moelab.show(tr, tok)

# %% [markdown]
# `tr.experts[t, l, r]` is the expert token *t* was sent to at MoE layer *l* as its choice *r*
# (rank 0 = the larger weight), `tr.weights` the renormalised weights those experts' outputs
# were mixed with. `to_pandas()` is the tidy long form — one row per (token, layer, rank):

# %%
df = tr.to_pandas()
df["token"] = tok.token_strings(df["token_id"])
df.head(2 * tr.num_layers * tr.top_k)

# %% [markdown]
# ### Exercise 1: how many rows?
#
# Before running `len(df)`: how many rows does the long table have, in terms of the trace's
# `num_tokens`, `num_layers` and `top_k`? Write it as an expression.

# %%
n_rows = None           # your answer, from tr.num_tokens, tr.num_layers, tr.top_k

# %% tags=["solution"]
n_rows = tr.num_tokens * tr.num_layers * tr.top_k        # one row per (token, layer, rank)

# %%
assert n_rows == len(df), f"{n_rows} != {len(df)}"
print(f"correct: {tr.num_tokens} tokens x {tr.num_layers} layers x top-{tr.top_k} = {len(df)} rows")

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
# makes) — and look at how evenly each layer uses its experts. With uniform use every
# cell of a row of the heatmap would be 1/E.

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
# `cv` (coefficient of variation of the per-expert load: 0 = every expert equally used),
# `maxvio` (how much the busiest expert exceeds the mean) and the normalised `entropy`
# (1 = uniform) summarise each row of the heatmap. The auxiliary-loss columns (`switch_aux`,
# `hf_aux`, `z_loss`, introduced in notebook 01) need the full router logits: trace with
# `moelab.trace(model, logits=True)` to get them.
#
# **What do these numbers mean for this model?** `balance_reading` reads each layer against
# two thresholds: *balanced* when every expert gets at least 4 % of the layer's assignments
# and the CV is at most 0.35 (the targets moelab set for a Mixtral-like model; OLMoE's paper
# measured Mixtral-8x7B's expert use as close to uniform in every layer, arXiv:2409.02060 §5.3, Figure 22), *collapsed* when some expert gets under
# 1 % (it is nearly never trained or used), *uneven* in between. A collapsed layer is not
# "normal routing": notebooks 03 and 04 measure locality and specialization against
# baselines that account for the load, and notebook 09 shows how a balance loss that pools
# the layers lets single layers collapse.

# %%
reading = balance_reading(corpus_tr)
display(reading.round(3))
for verdict, layers in reading.groupby("reading").groups.items():
    print(f"{verdict}: layers {list(layers)}")

# %% [markdown]
# Per domain, the normalised entropy of each layer's load (does any domain use fewer experts?):

# %%
moelab.metrics.balance(corpus_tr, by="domain")["entropy"].unstack("layer").round(3)

# %% [markdown]
# ### Exercise 2: the CV from the heatmap
#
# `moelab.metrics.expert_load(corpus_tr)` returns each (layer, expert)'s `count` of
# assignments. Compute the CV of the last layer's load yourself (population standard deviation
# over the mean) and check it against `bal["cv"]`.

# %%
my_cv = None            # your answer: a float

# %% tags=["solution"]
counts = moelab.metrics.expert_load(corpus_tr)["count"].loc[corpus_tr.layer_ids[-1]].to_numpy(float)
my_cv = counts.std() / counts.mean()

# %%
assert my_cv is not None and np.isclose(my_cv, bal["cv"].iloc[-1]), (my_cv, bal["cv"].iloc[-1])
print(f"correct: CV of layer {corpus_tr.layer_ids[-1]} = {my_cv:.3f}")

# %% [markdown]
# ## Summary
#
# * `with moelab.trace(model) as tr:` records, for every token the model reads, its top-k
#   experts and weights at every MoE layer (`tr.experts`, `tr.weights`: tokens × layers × k);
#   tracing changes nothing the model computes, also under `generate` with padding.
# * `moelab.show(tr, tok)` explores it interactively; `to_pandas()` / `token_frame()` give
#   tables; `metrics.balance` and `balance_reading` say how evenly each layer uses its experts.
# * `tr.save(path)` / `moelab.load_trace(path)` keep a trace as Parquet (notebook 10).
#
# **Where next.** Notebook 03 traces the whole held-out corpus and reproduces the Mixtral
# paper's routing analysis, with baselines that account for how unevenly experts are loaded.
# Notebook 10 (appendix) shows how to work with trace files outside moelab.
