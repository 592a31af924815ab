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
# # 04 · Expert specialization (OLMoE §5)
#
# **What you learn.** The routing analyses of the OLMoE paper, computed with
# `moelab.metrics` on a routing trace:
#
# * **co-activation** — which experts are chosen *together* for the same token;
# * **domain specialization** — does an expert serve one domain much more than others?
# * **vocabulary specialization** — does an expert serve particular *tokens*: the input token,
#   the true next token, or the token the model predicts?
# * **cross-layer transitions** — does the expert at layer *l* determine the one at *l + 1*?
# * **router saturation** — how early in training the router settles: the same held-out tokens
#   traced with each training checkpoint of the embedded model, compared with the final one.
#
# **Needs.** The embedded model `moelab-mixtral-tiny` *and its training checkpoints*
# (`moelab.models.checkpoints()`), the held-out corpus. **Takes** 2¼ min
# (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01); the predicted-token section runs the LM head, the rest does not.
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` runs sections 1–5 on Mixtral. Mixtral's training checkpoints are not
# public, so section 6 (router saturation) always uses the embedded model's checkpoints.
#
# Reference: Muennighoff et al. 2024, *OLMoE: Open Mixture-of-Experts Language Models*,
# arXiv:2409.02060, §5 "MoE analysis".

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
import json

import numpy as np
import pandas as pd
import torch
from IPython.display import display

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import (coactivation, domain_specialization, layer_transitions, next_token_ids,
                            router_saturation, vocab_specialization)
from moelab.models import DEFAULT_MODEL, checkpoints
from moelab.notebooks import trace_documents
from moelab.plots import coactivation_heatmap, save, saturation_curve, specialization_bars, transitions_heatmap

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
device_map = "auto" if device == "cuda" else None
pd.set_option("display.precision", 3)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map=device_map)
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
E, K = model.config.num_local_experts, model.config.num_experts_per_tok
print(f"{MODEL_NAME}: {model.config.num_hidden_layers} layers, top-{K} of {E} experts | {dtype} on {model.device}")

# %% [markdown]
# ## 1. One trace with everything the analyses need
#
# Held-out windows of every domain, tagged with their domain; with `predictions=True` each
# token also gets the model's predicted next token (`predicted_id`), and we attach the true
# next token (`next_token_id`, −1 at the end of a window).

# %%
docs = {d: ds[:DOCS_PER_DOMAIN] for d, ds in load_documents("heldout").items()}
tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, predictions=True, desc="trace held-out")
tr = tr.with_columns(next_token_id=next_token_ids(tr))
ids = list(tr.layer_ids)
LAYERS = sorted({ids[0], ids[(len(ids) - 1) // 2], ids[-1]})     # first, middle, last
acc = np.mean(tr.columns["predicted_id"][tr.columns["next_token_id"] >= 0]
              == tr.columns["next_token_id"][tr.columns["next_token_id"] >= 0])
print(tr, f"\nnext-token accuracy of the model on these tokens: {acc:.1%}")

# %% [markdown]
# ## 2. Co-activation
#
# For experts *i* and *j* of one layer: of the tokens that use *i*, the share that also use
# *j*, P(j | i). With top-2 routing each token has one partner, so a row sums to 1 over
# j ≠ i and uniform pairing would give 1/(E − 1) ≈ 14 %. OLMoE (64 experts, top-8) found little
# co-activation — its experts are not redundant pairs; strong pairs would suggest two experts
# that could be merged.

# %%
co = coactivation(tr)
co.to_csv(FIGURES / "04_coactivation.csv")
for layer in LAYERS:
    fig = coactivation_heatmap(co, layer=layer, title=f"Co-activation, layer {layer} ({MODEL_NAME})")
    if layer == LAYERS[-1]:
        save(fig, "04_coactivation", outdir=FIGURES, formats=("png", "pdf"))
    display(fig)

# %%
pairs = []
for layer in ids:
    m = co.loc[layer].to_numpy(float).copy()
    np.fill_diagonal(m, np.nan)
    i, j = np.unravel_index(np.nanargmax(m), m.shape)
    pairs.append({"layer": layer, "strongest pair i→j": f"{i}→{j}", "P(j|i)": m[i, j],
                  "experts whose top partner has P > 50 %": int((np.nanmax(m, 1) > 0.5).sum()),
                  "uniform P(j|i)": 1 / (E - 1)})
pd.DataFrame(pairs).set_index("layer")

# %% [markdown]
# ## 3. Domain specialization
#
# N_k(E, D) / N(D): the share of domain D's tokens that have expert E among their top-k. Random
# routing gives k/E = 25 %; 100 % would mean every token of the domain uses that expert. OLMoE
# finds strong specialization for domains unlike the bulk of its data (arXiv, GitHub) and weak
# for general web text, and *Mixtral* (notebook 03) much weaker specialization.

# %%
spec = domain_specialization(tr)
spec.to_csv(FIGURES / "04_domain_specialization.csv")
show = ["code", "math", "tex", "fiction", "biomedical", "docs_en", "docs_fr"]
show = [d for d in show if d in spec.index.get_level_values(0)]
fig = specialization_bars(spec.loc[show], layers=LAYERS, title=f"Domain specialization ({MODEL_NAME})")
save(fig, "04_domain_specialization", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# The most specialised expert of each domain per layer (its specialization, and which expert):

# %%
top = spec["specialization"].groupby(["domain", "layer"])
summary = pd.concat({"max specialization": top.max().unstack("layer"),
                     "expert": top.idxmax().map(lambda t: t[-1]).unstack("layer")}, axis=1)
summary.sort_values(("max specialization", ids[-1]), ascending=False)

# %% [markdown]
# ## 4. Vocabulary specialization
#
# N_k(x, E) / N(x): of all occurrences of token x, the share routed to expert E. For each
# expert we average it over the tokens it receives (`specialization`); random routing gives
# k/E. Three choices of "token": the **input** token, the true **next** token, and the token the
# model **predicts**. OLMoE reports strong vocabulary specialization for both input and
# predicted tokens; one may expect the predicted-token kind to grow towards the last layers,
# which are closest to the output. The OLMoE-style scalar (first choice only: mean over token
# ids of max_E N(x, E)/N(x), ids seen ≥ 5 times; 1/E for random routing):

# %%
vocab = {}
rows = {}
for by, label in [("token_id", "input token"), ("next_token_id", "next token"), ("predicted_id", "predicted token")]:
    vocab[label] = vocab_specialization(tr, by=by, min_count=5)
    d = vocab_specialization(tr, by=by, first_only=True, min_count=5, detail=True)
    rows[label] = d.groupby(["layer", by])["specialization"].max().groupby("layer").mean()
olmoe_scalar = pd.DataFrame(rows)
olmoe_scalar["random (1/E)"] = 1 / E
olmoe_scalar.to_csv(FIGURES / "04_vocab_specialization.csv")
olmoe_scalar

# %%
fig = specialization_bars(vocab["input token"], layers=LAYERS,
                          title=f"Vocabulary specialization, input tokens ({MODEL_NAME})")
save(fig, "04_vocab_specialization", outdir=FIGURES, formats=("png", "pdf"))
display(fig)
fig = specialization_bars(vocab["predicted token"], layers=LAYERS,
                          title=f"Vocabulary specialization, predicted tokens ({MODEL_NAME})")
save(fig, "04_vocab_specialization_predicted", outdir=FIGURES)
fig

# %% [markdown]
# Which tokens does each expert "own" at the last layer? The input tokens (seen ≥ 10 times)
# with the highest share routed to the expert as first choice:

# %%
d = vocab_specialization(tr, by="token_id", layers=[ids[-1]], first_only=True, min_count=10, detail=True)
d = d.reset_index()
owned = (d.sort_values(["expert", "specialization", "total"], ascending=[True, False, False])
          .groupby("expert").head(8))
owned["token"] = tok.token_strings(owned["token_id"])
owned.groupby("expert").apply(
    lambda g: ", ".join(f"{t!r} {s:.0%}" for t, s in zip(g.token, g.specialization)), include_groups=False
).rename(f"top tokens at layer {ids[-1]} (share of their occurrences)").to_frame()

# %% [markdown]
# ## 5. Cross-layer transitions
#
# P(first choice j at layer l + 1 | first choice i at layer l). If routing were independent
# across layers every row would be flat at 1/E; a peaked row means layer l's expert largely
# decides layer l + 1's — a *path* through the experts.

# %%
trans = layer_transitions(tr)
trans.to_csv(FIGURES / "04_transitions.csv")
fig = transitions_heatmap(trans, layer=ids[0], title=f"First-choice transitions, layer {ids[0]} → {ids[1] if len(ids) > 1 else ''}")
save(fig, "04_transitions", outdir=FIGURES)
display(fig)
counts = layer_transitions(tr, normalize=False)
conc = {}
for layer in counts.index.get_level_values("layer").unique():
    c = counts.loc[layer].to_numpy(float)
    conc[layer] = (c.max(1).sum() / c.sum())      # P(the most likely next expert) averaged over tokens
pd.Series(conc, name="P(next = most likely | this)").rename_axis("from layer").to_frame().assign(uniform=1 / E)

# %% [markdown]
# ## 6. Router saturation over training
#
# OLMoE traces the same tokens with intermediate checkpoints and measures how many of the
# final model's top-k experts each checkpoint already picks: *router saturation*. OLMoE's
# routing saturates early in pretraining — the router's decisions are made long before the
# loss has converged.
# `moelab.models.checkpoints()` lists the embedded model's checkpoints (step, tokens seen,
# loss); we trace the same held-out slice with each.

# %%
ckpt_root = MODEL if MODEL and (Path(MODEL) / "checkpoints.json").is_file() else None
if MODEL and ckpt_root is None:
    print(f"{MODEL} has no checkpoints.json: router saturation uses the embedded model's checkpoints")
ckpts = checkpoints(ckpt_root)
pd.DataFrame(ckpts).drop(columns="path")

# %%
from tqdm.auto import tqdm

sat_docs = {d: ds[: max(1, DOCS_PER_DOMAIN // 4)] for d, ds in docs.items()}
ckpt_tok = moelab.load_tokenizer() if ckpt_root is None else tok
ckpt_traces = {}
for c in tqdm(ckpts, desc="checkpoints"):
    m, _ = moelab.load_model(c["path"], dtype=dtype,
                             device_map=device_map, tokenizer=False)
    ckpt_traces[c["step"]] = trace_documents(m, ckpt_tok, sat_docs, seq_len=SEQ_LEN, progress=False)
    del m
final_step = ckpts[-1]["step"]
final = ckpt_traces.pop(final_step)
sat = router_saturation(ckpt_traces, final)
sat.to_csv(FIGURES / "04_saturation.csv")
print(f"{final.num_tokens:,} tokens traced with each of {len(ckpts)} checkpoints")
sat_summary = sat.groupby("checkpoint")[["top1", "topk"]].mean()
sat_summary.insert(0, "tokens_seen", [c["tokens_seen"] for c in ckpts[:-1]])
sat_summary.insert(1, "share of training", [c["step"] / final_step for c in ckpts[:-1]])
sat_summary

# %%
fig = saturation_curve(sat, title=f"Router saturation vs the final checkpoint (step {final_step})")
save(fig, "04_saturation", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# Reading the curve: each line is one layer; the y value is the share of the final model's
# first choice (left) or top-2 set (right) that the checkpoint already picks on the same
# tokens. Random routing would give 1/E = 12.5 % (top-1) and k/E = 25 % (top-2 overlap).
