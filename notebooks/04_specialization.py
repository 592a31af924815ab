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
# # 04 · Expert specialization (OLMoE §5), and what balance does to it
#
# **What you will learn.** The routing analyses of the OLMoE paper, computed with
# `moelab.metrics` on a routing trace, each next to the baseline that accounts for the
# experts' loads (`moelab.metrics.baselines`):
#
# * **co-activation** — which experts are chosen *together* for the same token, and its *lift*
#   P(j | i) / P(j): a hub expert that every token uses co-activates with everyone by chance;
# * **domain specialization** — does an expert serve one domain more than its overall load?
# * **vocabulary specialization** — does an expert serve particular *tokens* (input, true next,
#   predicted), against the exact chance level of a max share over n occurrences?
# * **cross-layer transitions** — does the expert at layer *l* determine the one at *l + 1*,
#   beyond what independent layers with the same loads would give?
# * **router saturation** — how early in training the router settles, against the share of
#   training, next to OLMoE's reported values;
# * **pooled vs per-layer balance** — the same architecture and data trained with two balance
#   losses: per-layer load, CV and perplexity side by side.
#
# **What you need.** Notebooks 02–03 (traces; the shuffled baseline). The embedded models
# `moelab-mixtral-tiny` (with its training checkpoints, `moelab.models.checkpoints()`) and
# `moelab-mixtral-tiny-pooled`, the held-out corpus. The predicted-token analysis runs the LM
# head on the traced tokens; the rest does not.
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` runs sections 1–5 on Mixtral. Mixtral's training checkpoints are not
# public, so sections 6–7 always use the embedded models.
#
# Reference: Muennighoff et al. 2024, *OLMoE: Open Mixture-of-Experts Language Models*,
# arXiv:2409.02060, §5 "MoE Analysis": §5.1 router saturation (Figure 20), §5.2 co-activation
# (Figure 21), §5.3 domain specialization (Figure 22), §5.4 vocabulary specialization
# (Figure 23). The paper's statements are quoted from `moelab.papers.OLMOE` under each plot.
# The pooled-vs-per-layer comparison (section 7) is moelab's, not the paper's.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=6)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
# %matplotlib inline
import json

import numpy as np
import pandas as pd
from IPython.display import display

from pathlib import Path

import moelab
from moelab.data import load_documents
from moelab.metrics import coactivation, layer_transitions, next_token_ids, router_saturation, vocab_specialization
from moelab.metrics.baselines import (coactivation_lift, max_share_chance, representative_layers,
                                      specialization_vs_load, transition_lift)
from moelab.metrics.olmoe import (saturation_summary, strongest_pairs, top_domain_experts, transition_concentration,
                                  vocab_scalar)
from moelab.models import DEFAULT_MODEL, POOLED_MODEL, checkpoints, embedded_model_dir
from moelab.notebooks import figures_dir, resolve_device_dtype, trace_documents
from moelab.plots import save
from moelab.plots.balance_compare import balance_compare, layer_load_table
from moelab.plots.baselined import lift_heatmap, saturation_vs_training, specialization_scatter, vocab_vs_chance
from moelab.papers import OLMOE, cite

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
device_map = "auto" if device == "cuda" else None
pd.set_option("display.precision", 3)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map=device_map)
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
E, K = model.config.num_local_experts, model.config.num_experts_per_tok
print(f"{MODEL_NAME}: {model.config.num_hidden_layers} layers, top-{K} of {E} experts | {dtype} on {model.device}")

# %% [markdown]
# ## 1. One trace with everything the analyses need
#
# Held-out windows of every domain, tagged with their domain, and the true next token of
# each (`next_token_id`, −1 at the end of a window). The decoder stack alone is run: no LM
# head. A smaller slice is traced a second time with `predictions=True`, which runs the LM
# head (on this model it costs several times the rest) and adds the model's predicted next
# token (`predicted_id`) for the predicted-token analysis of section 4.

# %%
docs = {d: ds[:DOCS_PER_DOMAIN] for d, ds in load_documents("heldout").items()}
tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out")
tr = tr.with_columns(next_token_id=next_token_ids(tr))
pred_docs = {d: ds[: max(1, DOCS_PER_DOMAIN // 6)] for d, ds in docs.items()}
pred_tr = trace_documents(model, tok, pred_docs, seq_len=SEQ_LEN, predictions=True, desc="trace with predictions")
pred_tr = pred_tr.with_columns(next_token_id=next_token_ids(pred_tr))
ids = list(tr.layer_ids)
LAYERS = list(representative_layers(tr))     # first, middle, last
nxt = pred_tr.columns["next_token_id"]
acc = np.mean(pred_tr.columns["predicted_id"][nxt >= 0] == nxt[nxt >= 0])
print(tr, f"\n{pred_tr.num_tokens:,} tokens with predictions; next-token accuracy of the model on them: {acc:.1%}")

# %% [markdown]
# ## 2. Co-activation, and its lift
#
# For experts *i* and *j* of one layer: of the tokens that use *i*, the share that also use
# *j*, P(j | i). With top-2 routing each token has one partner, so a row sums to 1 over
# j ≠ i and uniform pairing would give 1/(E − 1) ≈ 14 %. OLMoE defines co-activation this way
# (§5.2, Equation 6), notes that many pairs with high co-activation "may suggest that these
# experts could be merged", and finds "no strong co-activation among experts in one layer,
# with only few exceptions" (§5.2, Figure 21; 64 experts, top-8; quoted under the plot).
#
# But P(j | i) is large for *every* i when j is simply a busy expert. The load-aware reading
# is the **lift** P(j | i) / P(j), P(j) = the share of all tokens with j in their top-k:
# 1 = knowing i tells nothing about j, > 1 = used together more than their loads imply.

# %%
co = coactivation(tr)
lift = coactivation_lift(tr)
pd.concat({"P(j|i)": co, "lift": lift}, axis=1).to_csv(FIGURES / "04_coactivation.csv")
fig = lift_heatmap(lift, layer=ids[-1], xlabel="co-activated expert j", ylabel="expert i",
                   cbar_label="lift P(j|i) / P(j)", title=f"Co-activation lift, layer {ids[-1]} ({MODEL_NAME})")
save(fig, "04_coactivation", outdir=FIGURES, formats=("png", "pdf"))
print("OLMoE:", cite(OLMOE["coactivation_merge"]))
print("OLMoE:", cite(OLMOE["coactivation"]))
fig         # other layers: lift_heatmap(lift, layer=...)

# %%
strongest_pairs(tr)

# %% [markdown]
# Per layer: the pair i→j with the largest P(j | i), and its lift. Where that lift is near 1,
# j is a busy expert, not i's partner; the pairs worth a look (possible redundancy, or experts
# that split one job) are those with a large lift, visible in the heatmaps above.
#
# ### Exercise 1: a lift by hand
#
# From `tr.experts` alone, compute the lift of the pair (expert 0, expert 1) at the last layer:
# the share of tokens using both, divided by the product of the shares using each.

# %%
my_lift = None          # your answer: a float

# %% tags=["solution"]
top = tr.experts[:, -1, :]                                   # (tokens, k)
has0, has1 = (top == 0).any(1), (top == 1).any(1)
my_lift = float((has0 & has1).mean() / (has0.mean() * has1.mean()))

# %%
assert my_lift is not None and np.isclose(my_lift, lift.loc[(ids[-1], 0), 1], equal_nan=True), my_lift
print(f"correct: lift(0, 1) at layer {ids[-1]} = {my_lift:.3f}")

# %% [markdown]
# ## 3. Domain specialization, against the expert's load
#
# OLMoE's domain specialization (§5.3, Equation 7): N_k(E, D) / N(D), the share of domain D's
# tokens that have expert E among their top-k. Random routing gives k/E = 25 %, but an expert
# that every token uses scores high for *every* domain. The baseline is the expert's overall
# load, the share of all tokens that use it (`specialization_vs_load`): a domain specialises on
# E when its specialization is well above that load (`lift` > 1). OLMoE (§5.3, Figure 22 top)
# finds experts activated far above or below chance for specific domains (for arXiv, the first
# expert of layer 0 is "nearly 100% specialized") and much more balanced activations for
# generic web text (C4); for Mixtral-8x7B (Figure 22 bottom), activations close to the uniform
# baseline in every layer and domain. The quote is printed under the plot.

# %%
svl = specialization_vs_load(tr, layers=LAYERS)
svl.to_csv(FIGURES / "04_domain_specialization.csv")
fig = specialization_scatter(svl, title=f"Domain specialization vs the expert's load ({MODEL_NAME})")
save(fig, "04_domain_specialization", outdir=FIGURES, formats=("png", "pdf"))
print("OLMoE:", cite(OLMOE["domain_specialization"]))
fig

# %% [markdown]
# Points on the dashed diagonal are routed like all tokens together; points above it are a
# domain's preferred experts. Per domain and layer, the most specialised expert (OLMoE's
# reading), with its overall load and the lift:

# %%
top_domain_experts(tr, layers=LAYERS).round(2)

# %% [markdown]
# ## 4. Vocabulary specialization, against chance
#
# OLMoE's vocabulary specialization (§5.4, Equation 8, Figure 23 with k = 1): for each token
# id x, the share of its occurrences routed to expert E, N(x, E)/N(x). As one scalar per layer
# we take, for each id seen at least 5 times, its largest share over experts (first choice
# only), max_E N(x, E)/N(x), averaged over ids: our summary, not the paper's (Figure 23's
# per-layer curve averages "the specialization of each expert in that layer"). Three choices
# of "token", as in the paper: the **input** token, the true **next** token, and the token the
# model **predicts** (on the smaller slice traced with predictions). Its chance level is not 1/E: a token seen n times, routed independently with
# the layer's loads p, scores E[max share] by chance (`max_share_chance`, printed below for 8
# equal experts), more with unequal loads. `vocab_chance` computes it exactly for the ids'
# actual counts and the layer's loads.

# %%
kinds = {"input token": (tr, "token_id"), "next token": (tr, "next_token_id"),
         "predicted token": (pred_tr, "predicted_id")}                    # the smaller slice with predictions
scalars = pd.concat({label: vocab_scalar(t, by=by, min_count=5) for label, (t, by) in kinds.items()}, axis=1)
scalars.to_csv(FIGURES / "04_vocab_specialization.csv")
olmoe_scalar, chance = scalars.xs("observed", axis=1, level=1), scalars.xs("chance", axis=1, level=1)
display(pd.concat({"observed": olmoe_scalar, "chance": chance, "observed - chance": olmoe_scalar - chance}, axis=1))
fig = vocab_vs_chance(olmoe_scalar, chance, title=f"Vocabulary specialization vs chance ({MODEL_NAME})")
save(fig, "04_vocab_specialization", outdir=FIGURES, formats=("png", "pdf"))
print("chance level of a max share with 8 equal experts:",
      ", ".join(f"n = {n}: {max_share_chance(n, [1 / 8] * 8):.2f}" for n in (5, 20)), f"(1/E = {1 / 8:.3f})")
print("OLMoE:", cite(OLMOE["vocabulary_specialization"]))
fig

# %% [markdown]
# Which input tokens does each expert "own" at the last layer? The tokens (seen ≥ 10 times)
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
# ### Exercise 2: the chance level of a max share, by simulation
#
# Route a token seen n = 5 times to 8 equally loaded experts at random, 20,000 times; the mean
# of the largest share is the chance level of this scalar for such a token. Compare with
# `moelab.metrics.baselines.max_share_chance(5, [1/8] * 8)`.

# %%
my_chance = None        # your answer: a float from a simulation

# %% tags=["solution"]
draws = np.random.default_rng(0).multinomial(5, [1 / 8] * 8, size=20_000)   # (trials, E) counts
my_chance = float((draws.max(1) / 5).mean())

# %%
assert my_chance is not None and abs(my_chance - max_share_chance(5, [1 / 8] * 8)) < 0.01, my_chance
print(f"correct: simulated {my_chance:.3f}, exact {max_share_chance(5, [1 / 8] * 8):.3f} (1/E = {1 / 8:.3f})")

# %% [markdown]
# ## 5. Cross-layer transitions, against independent layers
#
# P(first choice j at layer l + 1 | first choice i at layer l): does a token's expert at one
# layer predict its expert at the next? (OLMoE looks at experts across layers in its appendix,
# §G, Figure 35, which §5.2 points to.) If the layers routed independently with their own
# loads, every row would equal layer l + 1's load (`transition_baseline`), not 1/E; the lift
# (`transition_lift`) is observed / that, so 1 = no path through the experts.

# %%
trans = layer_transitions(tr)
tlift = transition_lift(tr)
pd.concat({"P(next|this)": trans, "lift": tlift}, axis=1).to_csv(FIGURES / "04_transitions.csv")
fig = lift_heatmap(tlift, layer=ids[0], xlabel=f"expert at layer {ids[1] if len(ids) > 1 else ''}",
                   ylabel=f"expert at layer {ids[0]}", cbar_label="lift P(next|this) / P(next)",
                   title=f"First-choice transitions vs independent layers, {ids[0]} → {ids[1] if len(ids) > 1 else ''}")
save(fig, "04_transitions", outdir=FIGURES)
display(fig)
transition_concentration(tr)

# %% [markdown]
# `observed`: P(next first choice = the most likely one given this one), averaged over tokens;
# `independent`: the same if layer l + 1 ignored layer l (its busiest expert's share).
#
# ## 6. Router saturation over training
#
# OLMoE (§5.1 "Router Saturation", Equation 5, Figure 20) traces the same tokens with
# intermediate checkpoints and measures how many of the final model's top-k experts each
# checkpoint already picks. What the paper states, as `moelab.papers` records it with its
# source, is printed below. We trace the same held-out slice with each checkpoint of the
# embedded model and plot saturation against the share of training, the final checkpoint at
# 100 %.
#
# **The chance level keeps the loads.** OLMoE gives random routing as 1/64 = 1.6 % (top-1) and
# 8/64 = 12.5 % (top-8) (§5.1): that is uniform loads. Two routings that are independent token
# by token but keep the final model's per-layer loads agree on expert *i* with probability
# πᵢ², πᵢ = P(*i* among a token's top-k), so their saturation is Σᵢ πᵢ² / k (top-1: Σᵢ pᵢ²), ≥ k/E.
# `moelab.metrics.baselines.saturation_chance(final)` computes it per layer; the plot draws it
# dashed in each layer's colour. A layer whose router sends most tokens to one expert agrees
# with any router that does the same, whether or not it has learned anything token-specific.

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
    m, _ = moelab.load_model(c["path"], dtype=dtype, device_map=device_map, tokenizer=False)
    last = c["step"] == ckpts[-1]["step"]                 # the final model: router logits too, for section 7
    ckpt_traces[c["step"]] = trace_documents(m, ckpt_tok, sat_docs, seq_len=SEQ_LEN, logits=last, progress=False)
    del m
final_step = ckpts[-1]["step"]
final = ckpt_traces.pop(final_step)
sat = router_saturation(ckpt_traces, final)
sat.to_csv(FIGURES / "04_saturation.csv")
share = {c["step"]: c["step"] / final_step for c in ckpts}
sat_summary = saturation_summary(sat, ckpts)
print(f"{final.num_tokens:,} tokens traced with each of {len(ckpts)} checkpoints")
sat_summary

# %%
from moelab.metrics.baselines import saturation_chance
from moelab.papers import olmoe_saturation_reference

print("OLMoE:", cite(OLMOE["router_saturation"]))
print("OLMoE random routing:", cite(OLMOE["saturation_random"]))
olmoe_ref = olmoe_saturation_reference()
chance = saturation_chance(final)                 # (layer) top1, topk: independent routing, the final's loads
display(pd.concat({"chance": chance[["top1", "topk"]], "uniform (1/E, k/E)": pd.DataFrame(
    {"top1": 1 / E, "topk": K / E}, index=chance.index)}, axis=1).round(3))
fig = saturation_vs_training(
    sat, share, chance=chance, reference=olmoe_ref,
    reference_label="OLMoE-1B-7B, top-8 of 64, 'up to' (§5.1)",
    caption=("Stars: OLMoE-1B-7B's stated saturation, best layer, top-8 of 64 experts (Muennighoff et al. 2024, "
             f"arXiv:2409.02060, §5.1, Figure 20); its uniform chance level is 12.5 %, this model's top-{K} of {E} is "
             f"{100 * K / E:.1f} %. Dashed: each layer's chance level with the final checkpoint's loads."),
    title=f"Router saturation vs the final checkpoint (step {final_step})")
save(fig, "04_saturation", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# Each line is one layer: the share of the final model's first choice (left) or top-2 set
# (right) that the checkpoint already picks on the same tokens. Read each line against its own
# dashed chance level (independent routing with that layer's final loads), not against 1/E or
# k/E, which hold only for uniform loads. The black stars are the two numbers OLMoE's text
# states for its top-8 saturation (§5.1): they are for 8 of 64 experts, whose uniform chance
# level is 12.5 %, against 25 % here, so they show how early a large model settles, not a value
# this model should match. OLMoE also states that "routing in later layers saturates earlier"
# and that "Layer 0 is an outlier saturating significantly more slowly than other layers"
# (§5.1): compare with this model's layer-0 line. What this model shows, read from the table
# above (mean over layers):

# %%
first = sat_summary.iloc[0]
half = sat_summary[sat_summary["share"] >= 0.5].iloc[0] if (sat_summary["share"] >= 0.5).any() else sat_summary.iloc[-1]
print(f"this model, after {first['share']:.0%} of training: {first['topk']:.0%} of the final top-{K} choices; "
      f"after {half['share']:.0%}: {half['topk']:.0%}.")
half_way = sat_summary[sat_summary["topk"] >= 0.5]
print(f"this model's routers pick half of their final top-{K} choices from "
      + (f"{half_way['share'].iloc[0]:.0%} of training on" if len(half_way) else "the end of training only")
      + "; compare with OLMoE's statement above.")
early = sat.xs(sat_summary.index[0], level="checkpoint")          # the first checkpoint, per layer
above = early["topk"] - chance["topk"].reindex(early.index)
print(f"after {first['share']:.0%} of training, top-{K} saturation above each layer's chance level (points): "
      + ", ".join(f"layer {l}: {100 * v:+.0f}" for l, v in above.items()))

# %% [markdown]
# ## 7. Pooled vs per-layer balance: same architecture and data, two losses
#
# transformers' `load_balancing_loss_func` concatenates the router outputs of all layers before
# computing E Σᵢ fᵢ Pᵢ, so it balances the load *pooled over layers*: a model whose layers
# each favour different experts satisfies it. Switch Transformer's loss (§2.2) is applied to
# each MoE layer. moelab ships two models trained identically except for this:
# `moelab-mixtral-tiny` (per-layer loss) and `moelab-mixtral-tiny-pooled` (transformers' pooled
# loss). Their per-layer load on the same held-out tokens, and their held-out perplexity
# (`eval.json`, written by the training script). Both traces keep the router logits
# (`logits=True`), which the losses' probability term Pᵢ needs.

# %%
def _eval(name):
    with open(embedded_model_dir(name) / "eval.json") as f:
        return json.load(f)["mixed_heldout_perplexity"]


contrast = {}
for name in [DEFAULT_MODEL, POOLED_MODEL]:
    if MODEL is None and name == DEFAULT_MODEL:
        contrast[name] = final                                   # the final checkpoint = this model
        continue
    m, _ = moelab.load_model(name, dtype=dtype, tokenizer=False)
    contrast[name] = trace_documents(m, ckpt_tok, sat_docs, seq_len=SEQ_LEN, logits=True, progress=False)
    del m
ppl = {name: _eval(name) for name in contrast}
table = layer_load_table(contrast)
table.to_csv(FIGURES / "04_pooled_vs_per_layer.csv")
fig = balance_compare(contrast, perplexity=ppl, title="Per-layer vs pooled balance loss: load per layer")
save(fig, "04_pooled_vs_per_layer", outdir=FIGURES)
display(fig)
display(table.unstack("model").round(3))
pd.Series(ppl, name="mixed held-out perplexity").to_frame()

# %% [markdown]
# **The two losses, measured on these tokens.** Both are E Σᵢ fᵢ Pᵢ with fᵢ counting all
# top-k slots per token, so both equal k (here 2) at perfect balance and grow with imbalance:
# `moelab.metrics.hf_aux_loss` pools every layer's tokens as transformers'
# `load_balancing_loss_func` does, and the `hf_aux` column of `moelab.metrics.balance` is the
# same quantity for each layer on its own (the Switch loss of that layer, all top-k slots).

# %%
aux = pd.DataFrame({name: moelab.metrics.balance(t)["hf_aux"] for name, t in contrast.items()}).T
aux.columns = [f"layer {l}" for l in aux.columns]
aux.insert(0, "pooled over layers (transformers)", [moelab.metrics.hf_aux_loss(t) for t in contrast.values()])
aux.index.name = "model"
per_layer = aux.drop(columns=aux.columns[0])
print(f"balance losses on the same {next(iter(contrast.values())).num_tokens:,} held-out tokens (k = {K} = balanced):")
for name in aux.index:
    print(f"  {name}: pooled over layers {aux.loc[name].iloc[0]:.2f}, per layer "
          f"{per_layer.loc[name].min():.2f}–{per_layer.loc[name].max():.2f}")
aux.round(2)

# %% [markdown]
# Read the numbers with the CV panel and the table: the model trained with the pooled loss
# scores close to k on the pooled loss it was trained with, so by that loss it looks
# balanced, while the same loss computed per layer is well above k in its worst layers (large
# CV, experts near 0 %); pooling lets layers that favour *different* experts cancel out. The
# per-layer loss balances every layer. Notebook 09 reproduces the effect from scratch in
# seconds on a toy router.
#
# ## Summary
#
# * Co-activation, domain and vocabulary specialization and layer transitions all rise by
#   chance when loads are uneven: compare each with its load-aware baseline (lift over load,
#   exact chance of a max share, independent layers with the same marginals).
# * Router saturation is read against the share of training and against its chance level with
#   the same loads; OLMoE's stated values (§5.1: up to ∼60 % of top-8 after 1 % of pretraining,
#   up to ∼80 % at 40 %) are the reference for a large model.
# * Balancing the pooled load is not balancing each layer.
#
# **Where next.** Notebook 05 turns from *what* the router does to what it *costs*:
# parameters, FLOPs, memory and serving of Mixtral 8x7B against dense models.
