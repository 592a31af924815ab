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
# # 09 · Collapse, balance losses, and routing variants
#
# **What you will learn.**
# * the collapse lesson, trained from scratch in seconds: a toy MoE with two layers trained
#   three ways — no balance loss, the Switch loss applied to each layer, and transformers'
#   `load_balancing_loss_func`, which pools all layers before balancing — and why only the
#   per-layer loss balances every layer (`moelab.toy`);
# * the routing variants of newer MoEs, each a few lines of einsum/torch checked against
#   transformers' own block where one exists (`moelab.variants`): token choice vs expert
#   choice; no renormalisation (OLMoE); shared plus fine-grained experts (DeepSeekMoE);
#   sigmoid routing with bias-based, auxiliary-loss-free balancing (DeepSeek-V3); the router
#   z-loss (ST-MoE).
#
# **What you need.** Notebook 01 (the router, the Switch auxiliary loss, the z-loss).
# Nothing but a CPU; no model weights. Notebook 04 §7 shows the same pooled vs per-layer
# contrast at the scale of the embedded models.
#
# References: Fedus et al. 2021, *Switch Transformer* (arXiv:2101.03961) §2.2; Zhou et al.
# 2022, *Mixture-of-Experts with Expert Choice Routing* (arXiv:2202.09368); Dai et al. 2024,
# *DeepSeekMoE* (arXiv:2401.06066); DeepSeek-AI 2024, *DeepSeek-V3 Technical Report*
# (arXiv:2412.19437) §2.1.2; Zoph et al. 2022, *ST-MoE* (arXiv:2202.08906) eq. 5.

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params()                             # this notebook uses only FIGURES and FAST
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
# %matplotlib inline
from math import comb

import numpy as np
import pandas as pd
import torch
from IPython.display import display

from moelab import variants as v
from moelab.notebooks import figures_dir
from moelab.plots import save
from moelab.plots.teaching import toy_load_heatmaps
from moelab.toy import ToyConfig, collapse_lesson, per_layer_balance_loss, pooled_balance_loss, switch_loss

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
pd.set_option("display.precision", 3)

# %% [markdown]
# ## 1. The collapse lesson
#
# A toy classifier: tokens are points from 8 Gaussian clusters, the task is to name the
# cluster. Two residual MoE layers, each with 4 experts and top-2 Mixtral routing (softmax,
# top-k, renormalised weights). At initialisation each layer's router has a head start
# towards a *different* pair of experts (layer 0 towards experts 0, 1; layer 1 towards 2, 3):
# each layer is unbalanced, but the two layers together use all four experts evenly.
#
# The same model, data and initialisation, trained three ways:
#
# * `none` — cross-entropy only;
# * `per_layer` — plus the Switch loss E Σᵢ fᵢ Pᵢ of **each** layer, averaged over layers
#   (Switch Transformer §2.2 applies it to every MoE layer; moelab's training does the same);
# * `pooled` — plus transformers' `load_balancing_loss_func`, which concatenates the router
#   outputs of all layers before computing fᵢ and Pᵢ.

# %%
cfg = ToyConfig(steps=60) if FAST else ToyConfig()
runs = collapse_lesson(cfg)
fig = toy_load_heatmaps(runs, title="Share of each layer's assignments per expert, over training")
save(fig, "09_collapse_heatmaps", outdir=FIGURES)
fig

# %%
rows = []
for mode, run in runs.items():
    for layer, cv in enumerate(run.cv()):
        rows.append({"balance loss": mode, "layer": layer, "final CV of the load": cv,
                     "smallest expert share": run.loads[-1, layer].min(),
                     "Switch loss of the layer (k = balanced)": run.per_layer_aux[-1, layer],
                     "pooled loss (k = balanced)": run.pooled_aux[-1], "accuracy": run.accuracy})
collapse = pd.DataFrame(rows).set_index(["balance loss", "layer"])
collapse.to_csv(FIGURES / "09_collapse.csv")
collapse

# %% [markdown]
# **Reading it.** Rows of a heatmap are experts, columns training steps; a balanced layer is
# an even colour (1/E = 0.25 per expert). The table says, from its numbers, what each loss did:

# %%
k = cfg.top_k
for mode, run in runs.items():
    print(f"{mode:>9}: per-layer CV {np.round(run.cv(), 2).tolist()}, pooled loss {run.pooled_aux[-1]:.2f} "
          f"(balanced = {k}), per-layer losses {np.round(run.per_layer_aux[-1], 2).tolist()}")
pooled_cv, per_cv = runs["pooled"].cv().max(), runs["per_layer"].cv().max()
print(f"largest per-layer CV: pooled loss {pooled_cv:.2f} vs per-layer loss {per_cv:.2f} -> the "
      f"{'pooled' if pooled_cv > per_cv else 'per-layer'} loss leaves the more unbalanced layer")

# %% [markdown]
# The pooled loss starts near its minimum, k: summed over both layers every expert gets the
# same share, so it has almost nothing to push against, and each layer keeps its favourites.
# The per-layer loss sees each layer's imbalance and removes it. This is what happened to
# `moelab-mixtral-tiny-pooled`, trained with transformers' pooled loss (notebook 04 §7).
#
# ### Exercise 1: a pooled loss that looks balanced
#
# Two layers, 4 experts, top-1, 1,000 tokens each. Layer 0 sends every token to expert 0 or 1
# with probability 0.5 each; layer 1 to expert 2 or 3. Build router logits that do this
# (large logits on the favoured experts), then compute the per-layer loss (`per_layer_balance_loss`)
# and the pooled loss (`pooled_balance_loss`) with `top_k=1`. Which one says "balanced"?

# %%
my_logits = None        # your answer: a tuple of two (1000, 4) tensors, one per layer

# %% tags=["solution"]
gen = torch.Generator().manual_seed(0)
pick0 = torch.randint(0, 2, (1000,), generator=gen)                  # expert 0 or 1
pick1 = torch.randint(2, 4, (1000,), generator=gen)                  # expert 2 or 3
my_logits = tuple(10.0 * torch.nn.functional.one_hot(p, 4).float() for p in (pick0, pick1))

# %%
assert my_logits is not None and len(my_logits) == 2
per, pooled = float(per_layer_balance_loss(my_logits, 1)), float(pooled_balance_loss(my_logits, 1))
assert pooled < 1.1 and per > 1.8, (per, pooled)          # 1 = balanced for top-1; each layer alone ≈ 2
print(f"per-layer loss {per:.2f}, pooled loss {pooled:.2f} (both are 1 at perfect balance)")

# %% [markdown]
# ## 2. Routing variants on the same tokens
#
# One set of tokens and one set of expert weights (random, 8 experts of SwiGLU shape), routed
# six ways. `moelab.variants` writes each in a few lines; its tests check them against
# transformers' `OlmoeSparseMoeBlock` (no renormalisation), `DeepseekV3MoE` (sigmoid routing,
# bias, groups, shared experts) and the Switch Transformers z-loss. Here we compare what each
# does to the load and to the weights.

# %%
torch.manual_seed(0)
T, H, I, E, K = 512, 16, 32, 8, 2
x = torch.randn(T, H)                                       # (tokens, H)
W_g = torch.randn(E, H) * 0.5
gate_up, down = torch.randn(E, 2 * I, H) / H ** 0.5, torch.randn(E, H, I) / I ** 0.5
logits = x @ W_g.T                                          # (tokens, E)
logits[:, 0] += 1.5                                         # a router that favours expert 0


def load_cv(idx):
    counts = torch.bincount(idx.reshape(-1), minlength=E).float()
    return float(counts.std(unbiased=False) / counts.mean())


variants = {}
w, idx = v.softmax_topk(logits, K)                                            # Mixtral
variants["token choice, renormalised (Mixtral)"] = dict(load_cv=load_cv(idx), weight_sum=float(w.sum(-1).mean()),
                                                       experts_per_token=K, unserved_tokens=0)
w, idx = v.softmax_topk(logits, K, renormalize=False)                         # OLMoE
variants["token choice, not renormalised (OLMoE)"] = dict(load_cv=load_cv(idx), weight_sum=float(w.sum(-1).mean()),
                                                         experts_per_token=K, unserved_tokens=0)
C = K * T // E                                                                 # same total work
w_ec, tok_ec = v.expert_choice(logits, C)
per_token = torch.bincount(tok_ec.reshape(-1), minlength=T)
variants["expert choice (Zhou et al. 2022)"] = dict(load_cv=0.0, weight_sum=float("nan"),
                                                   experts_per_token=float(per_token.float().mean()),
                                                   unserved_tokens=int((per_token == 0).sum()))
bias = torch.zeros(E)
for _ in range(300):                                                           # aux-loss-free balancing
    bias = v.update_balance_bias(bias, v.sigmoid_topk(logits, K, bias)[1], rate=0.01)
w0, idx0 = v.sigmoid_topk(logits, K)
w1, idx1 = v.sigmoid_topk(logits, K, bias)
variants["sigmoid, no bias"] = dict(load_cv=load_cv(idx0), weight_sum=float(w0.sum(-1).mean()),
                                    experts_per_token=K, unserved_tokens=0)
variants["sigmoid + balance bias (DeepSeek-V3)"] = dict(load_cv=load_cv(idx1), weight_sum=float(w1.sum(-1).mean()),
                                                        experts_per_token=K, unserved_tokens=0)
table = pd.DataFrame(variants).T
table.to_csv(FIGURES / "09_variants.csv")
table

# %% [markdown]
# * **Token choice** lets the load be anything (here a favoured expert 0); a balance loss or a
#   capacity limit has to deal with it. Renormalising only changes the weights: OLMoE's top-2
#   weights sum to the probability mass of the chosen experts, Mixtral's to 1.
# * **Expert choice** fills every expert exactly (CV 0), but a token may get no expert or
#   several: the `unserved_tokens` are carried by the residual alone.
# * **DeepSeek-V3's bias** is added to the scores for *selection only*: after a few hundred
#   updates of ± a small rate, the load is balanced without any auxiliary loss, and the
#   weights still come from the unbiased sigmoid scores.
#
# **Shared + fine-grained experts (DeepSeekMoE).** Split each expert into smaller ones and
# route to more of them, and add experts every token uses. The output is the routed experts
# plus the shared ones:

# %%
fine = 2                                                     # each expert split in two: 16 experts of width I/2
g_f = gate_up.view(E, 2, I, H)                               # (E, gate|up, I, H)
gate_up_f = torch.cat([g_f[:, :, : I // 2], g_f[:, :, I // 2:]], 0).reshape(E * fine, I, H)   # (16, 2*(I/2), H)
down_f = torch.cat([down[:, :, : I // 2], down[:, :, I // 2:]], 0)                           # (16, H, I/2)
W_gf = torch.cat([W_g, W_g], 0) + 0.1 * torch.randn(E * fine, H)
shared_gu, shared_down = torch.randn(1, 2 * I, H) / H ** 0.5, torch.randn(1, H, I) / I ** 0.5


def shared(h):                                               # one always-on expert
    return v.experts_forward(h, shared_gu, shared_down, torch.zeros(h.shape[0], 1, dtype=torch.long),
                             torch.ones(h.shape[0], 1))


y = v.moe_forward(x, W_gf, gate_up_f, down_f, lambda lg: v.softmax_topk(lg, K * fine), shared=shared)
print(f"{E * fine} fine-grained experts, top-{K * fine} per token, + 1 shared expert -> output {tuple(y.shape)}; "
      f"routed combinations: C({E * fine},{K * fine}) = {comb(E * fine, K * fine):,} "
      f"vs C({E},{K}) = {comb(E, K)}")

# %% [markdown]
# More, smaller experts give far more combinations for the same compute; the shared expert
# holds what every token needs, so the routed ones need not all learn it.
#
# **Router z-loss.** It grows with the size of the logits, whatever the balance:

# %%
pd.Series({f"logits x {s}": float(v.router_z_loss(logits * s)) for s in (0.25, 1, 4)}, name="router z-loss").to_frame()

# %% [markdown]
# ### Exercise 2: the weights OLMoE mixes with
#
# For the first token, compute by hand the top-2 weights without renormalisation (softmax over
# all 8 logits, keep the two largest) and check them against `v.softmax_topk(logits, 2,
# renormalize=False)`.

# %%
my_weights = None       # your answer: a tensor of 2 weights, largest first

# %% tags=["solution"]
p0 = logits[0].softmax(-1)
my_weights = p0.sort(descending=True).values[:2]

# %%
ref_w, _ = v.softmax_topk(logits[:1], 2, renormalize=False)
assert my_weights is not None and torch.allclose(my_weights, ref_w[0], atol=1e-6), (my_weights, ref_w)
print(f"correct: {my_weights.numpy().round(4)}, summing to {float(my_weights.sum()):.3f}, not 1")

# %% [markdown]
# ## Summary
#
# * Without a balance loss nothing stops a router from favouring a few experts; a loss that
#   pools all layers can be satisfied while each layer stays unbalanced. Balance each layer.
# * Expert choice balances by construction and gives up "every token gets k experts";
#   DeepSeek-V3 balances with a selection bias instead of a loss; OLMoE does not renormalise
#   its top-k weights; DeepSeekMoE adds shared experts to many fine-grained ones; the z-loss
#   keeps router logits small.
#
# **Where next.** Notebook 04 §7 shows the pooled vs per-layer contrast on the embedded models;
# notebook 10 (appendix) shows how to keep and query traces on disk.
