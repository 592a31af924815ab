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
# # 01 · Routing from scratch
#
# **What you will learn.**
# * where the MoE layer sits in a transformer block, and what it computes for one token:
#   hidden state → router logits → softmax → top-2 → renormalised weights → weighted sum of
#   two SwiGLU experts, written with `einops` and checked with `torch.allclose` against
#   transformers' own `MixtralSparseMoeBlock`;
# * why renormalising the top-k weights matters, and that not every MoE does it (OLMoE);
# * why training needs a load-balancing loss, what the Switch auxiliary loss and the router
#   z-loss measure (`moelab.metrics.balance`), and how to read them;
# * what a fixed expert *capacity* would drop (`moelab.metrics.capacity_drops`), on synthetic
#   routers and on a real routing trace.
#
# **What you need.** Python, PyTorch and a little linear algebra; nothing but a CPU. A tiny
# random Mixtral block built from a config, synthetic routers, and (last section) the
# embedded model `moelab-mixtral-tiny`.
#
# **On real Mixtral 8x7B.** Parts 1–2 use no weights. For the capacity section on the real
# model set `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16 MOELAB_DEVICE=cuda`
# (a local folder with `config.json` + `*.safetensors` works too; moelab never downloads).
#
# References: Jiang et al. 2024, *Mixtral of Experts* (arXiv:2401.04088) §2.1;
# Shazeer et al. 2017 (arXiv:1701.06538); Fedus et al. 2021, *Switch Transformer* (arXiv:2101.03961);
# Lepikhin et al. 2020, *GShard* (arXiv:2006.16668); Zoph et al. 2022, *ST-MoE* (arXiv:2202.08906).

# %% tags=["parameters"]
# Parameters: MOELAB_* environment variables over this notebook's defaults (moelab.params; papermill style).
from moelab.params import notebook_params

P = notebook_params(docs_per_domain=12)          # MOELAB_FAST=1 caps documents and window length
MODEL, DTYPE, DEVICE, FIGURES = P.model, P.dtype, P.device, P.figures
DOCS_PER_DOMAIN, SEQ_LEN, FAST = P.docs_per_domain, P.seq_len, P.fast

# %%
# %matplotlib inline
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from einops import einsum
from IPython.display import display

from pathlib import Path

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import balance, capacity_drops
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import load_heatmap, save
from moelab.plots.teaching import capacity_drops_plot
from moelab.toy import synthetic_routers
from moelab.readings import balance_reading, nearest_row

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
pd.set_option("display.precision", 4)
print(f"moelab {moelab.__version__} | device {device} | dtype {dtype} | figures -> {FIGURES.resolve()}")

# %% [markdown]
# ## 1. One MoE layer, step by step
#
# In every decoder layer of Mixtral the MoE block replaces the dense MLP: after attention and
# its residual add, the normalised hidden state of each token goes to the **router**, which
# picks k = 2 of E = 8 **experts** (each a SwiGLU MLP); their outputs, weighted by the router,
# are summed and added back to the residual stream. Everything else in the block (attention,
# norms, residuals) is shared by all experts.

# %%
from moelab.plots.diagrams import moe_block_diagram

fig = moe_block_diagram()
save(fig, "01_moe_block", outdir=FIGURES)
fig

# %% [markdown]
# A tiny random Mixtral (hidden size H = 16, expert width I = 32, E = 8 experts, top-k = 2),
# in float32 so that our re-implementation can match it to rounding error. In transformers 5
# the MoE block of layer *i* is `model.model.layers[i].mlp`:
#
# * `block.gate` is the router (`MixtralTopKRouter`): one weight matrix `W_g` of shape (E, H);
#   it returns `(logits, weights, indices)`. Its module path in the model is
#   `model.layers.{i}.mlp.gate`;
# * `block.experts` (module path `model.layers.{i}.mlp.experts`) runs the experts:
#   `block.experts.gate_up_proj` (E, 2I, H) holds every expert's gate and up projections
#   stacked, `block.experts.down_proj` (E, H, I) their down projections. The block calls it
#   with the router's `indices` and `weights`.
#
# moelab's tracer (notebook 02) reads what `mlp.experts` *receives*: a forward pre-hook on it
# records the expert ids it runs and the weights it multiplies their outputs by. That hook is
# named `layers.{i}.router`, a name that is the same for every supported architecture. The
# router `mlp.gate` itself is hooked (as `layers.{i}.router.logits`) only when you ask for its
# full logits or scores (`moelab.trace(model, logits=True)` or `scores=True`).

# %%
from transformers import MixtralConfig, MixtralForCausalLM

torch.manual_seed(0)
cfg = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, num_local_experts=8, num_experts_per_tok=2)
block = MixtralForCausalLM(cfg).float().eval().model.layers[0].mlp
E, k, H = cfg.num_local_experts, cfg.num_experts_per_tok, cfg.hidden_size
W_g = block.gate.weight.detach()                   # (E, H)
W_gu = block.experts.gate_up_proj.detach()         # (E, 2I, H)
W_d = block.experts.down_proj.detach()             # (E, H, I)
print(type(block).__name__, "| router", tuple(W_g.shape), "| gate_up", tuple(W_gu.shape), "| down", tuple(W_d.shape))

# hidden states of 6 tokens (scaled up so the router is not near-uniform at random init)
x = 5 * torch.randn(6, H)                          # (tokens, H)

# %% [markdown]
# **Router.** Logits are one matrix product, `x W_gᵀ`. Mixtral takes the softmax over all E
# logits, keeps the top-2 probabilities and renormalises them to sum to 1 — which is exactly
# the paper's G(x) = `Softmax(TopK(x · W_g))` with K = 2 (Mixtral §2.1), a softmax over the two
# largest logits only.

# %%
logits = einsum(x, W_g, "t h, e h -> t e")                     # (tokens, E)
probs = logits.float().softmax(-1)                             # (tokens, E)
top_p, top_i = probs.topk(k, dim=-1)                           # (tokens, k) rank 0 = largest
weights = top_p / top_p.sum(-1, keepdim=True)                  # renormalised: rows sum to 1

# the paper's formula: softmax over the top-k logits only
assert torch.allclose(weights, logits.gather(-1, top_i).softmax(-1), atol=1e-6)

ref_logits, ref_weights, ref_index = block.gate(x)
assert torch.allclose(logits, ref_logits, atol=1e-6)
assert torch.equal(top_i, ref_index)
assert torch.allclose(weights, ref_weights, atol=1e-6)
pd.DataFrame({"expert 1": top_i[:, 0], "weight 1": weights[:, 0], "expert 2": top_i[:, 1], "weight 2": weights[:, 1],
              "p(top-2) before renorm": top_p.sum(-1)}).rename_axis("token")

# %% [markdown]
# **Why renormalise?** After the top-2 the two probabilities sum to `p(top-2)` (last column
# above), anywhere between 2/E and 1. Renormalised, the block's output is a weighted *average*
# of two expert outputs, whose scale does not depend on how confident the router is; without
# renormalisation the output shrinks when the router spreads its probability over many
# experts, and the residual stream sees a router-dependent scale. Renormalising also changes
# what the router learns: with k = 1 the only weight would always be 1 and the router would
# get no gradient from the language-modelling loss; Switch Transformer (k = 1) multiplies
# the expert's output by the unnormalised probability (Fedus et al. 2021, §2.1). Not every MoE
# renormalises: OLMoE multiplies each selected expert's output by its probability from the
# softmax over all experts (OLMoE paper §2, Equation 1), transformers' `OlmoeConfig` defaults to
# `norm_topk_prob=False`, and the released OLMoE checkpoints keep it, so OLMoE's top-8 weights
# sum to less than 1. Mixtral's router in transformers always renormalises.

# %%
raw_weights = top_p                                              # OLMoE-style: no renormalisation
print("sum of the top-2 weights, renormalised (Mixtral):", weights.sum(-1).numpy().round(3))
print("sum of the top-2 weights, raw softmax (OLMoE):   ", raw_weights.sum(-1).numpy().round(3))

# %% [markdown]
# **Experts.** Each expert is a SwiGLU MLP, `down(silu(gate(x)) ⊙ up(x))`. We gather the
# weights of each token's two experts and apply them with `einsum`; the layer's output is the
# router-weighted sum of the two expert outputs.

# %%
gate_up = einsum(x, W_gu[top_i], "t h, t k i2 h -> t k i2")   # (tokens, k, 2I): both chosen experts
gate, up = gate_up.chunk(2, dim=-1)                           # (tokens, k, I) each
expert_out = einsum(F.silu(gate) * up, W_d[top_i], "t k i, t k h i -> t k h")   # (tokens, k, H)
y = einsum(expert_out, weights, "t k h, t k -> t h")          # (tokens, H)

with torch.no_grad():
    y_ref = block(x[None])[0]                                 # the real MixtralSparseMoeBlock
assert torch.allclose(y, y_ref, atol=1e-5), (y - y_ref).abs().max()
print(f"matches MixtralSparseMoeBlock: max |difference| = {(y - y_ref).abs().max():.2e}")

# %% [markdown]
# The same thing written densely: run **all** E experts and weight them with a sparse gate
# G(x) that is zero outside the top-2. Identical output, but E/k = 4× the expert FLOPs —
# the saving an MoE buys is that only k of E experts run per token.

# %%
all_gu = einsum(x, W_gu, "t h, e i2 h -> t e i2")
g_all, u_all = all_gu.chunk(2, dim=-1)
all_out = einsum(F.silu(g_all) * u_all, W_d, "t e i, e h i -> t e h")           # (tokens, E, H)
G = torch.zeros(x.shape[0], E).scatter(-1, top_i, weights)                      # (tokens, E) sparse gate
assert torch.allclose(einsum(all_out, G, "t e h, t e -> t h"), y_ref, atol=1e-5)
print(f"expert FLOPs: dense-over-all-experts / top-{k} = {E / k:.0f}x")

# %% [markdown]
# ## 2. Why a load-balancing loss is needed
#
# Nothing in next-token cross-entropy asks the router to spread tokens. Early in training
# the experts that happen to get more tokens get more gradient, improve faster, and so attract
# even more tokens: the router can *collapse* onto a few experts, leaving the others untrained
# (Shazeer et al. 2017, §4 and appendix A). Switch Transformer (Fedus et al. 2021, §2.2,
# eq. 4) adds an auxiliary loss per MoE layer,
#
# $$\mathcal{L}_{aux} = E \sum_i f_i \, P_i ,$$
#
# with $f_i$ the share of the batch's tokens routed to expert $i$ and $P_i$ the mean router
# probability of $i$; it is smallest, 1, when both are uniform. The Mixtral paper does not
# describe its training loss; transformers' Mixtral implements this loss
# (`load_balancing_loss_func`, switched on by `output_router_logits=True` and weighted by
# `router_aux_loss_coef`), counting all top-k slots, so at perfect balance it equals k — the
# `hf_aux` column below (`switch_aux` is the Switch form, first choices only).
#
# One detail of that implementation is the subject of notebook 09: it concatenates the router
# outputs of **all layers** before computing $f_i$ and $P_i$, so it balances the load pooled
# over layers, not each layer. A model whose layers each favour different experts can look
# balanced to it.
#
# **The router z-loss** (ST-MoE, Zoph et al. 2022, eq. 5) is the other common router loss:
# $\mathcal{L}_z = \frac{1}{T}\sum_t \big(\log\sum_i e^{x_{t,i}}\big)^2$, the squared
# log-sum-exp of each token's router logits. It does not balance anything: it keeps the logits
# small, so that the softmax stays numerically stable in low precision (notebook 06 shows
# what rounding does to near-ties). The `z_loss` column below is its value.
#
# Below: synthetic routers over the same 4,096 random tokens, from balanced (bias 0) to
# collapsed (a growing bias towards experts 0 and 1). Each row of the trace's "layer" axis is
# one synthetic router.

# %%
strengths = [0.0, 0.5, 1.0, 2.0, 4.0]
syn = synthetic_routers(strengths, num_experts=E, top_k=k, tokens=4096)   # logits: noise + strength x bias to 0, 1
syn_balance = balance(syn).rename_axis("router").assign(bias=strengths)
syn_balance = syn_balance[["bias", "cv", "maxvio", "entropy", "switch_aux", "hf_aux", "z_loss"]]
syn_balance.to_csv(FIGURES / "01_synthetic_balance.csv")
syn_balance

# %%
fig = load_heatmap(syn, title="Synthetic routers: balanced (top) to collapsed (bottom)")
ax = fig.axes[0]
ax.set_ylabel("bias to experts 0, 1")
ax.set_yticks(range(len(strengths)), [f"{s:g}" for s in strengths])
save(fig, "01_synthetic_router_load", outdir=FIGURES)
fig

# %% [markdown]
# Reading the table: at bias 0 the coefficient of variation of the load (`cv`) is ≈ 0, the
# normalised entropy ≈ 1 and `hf_aux` ≈ k = 2. As the router collapses, `cv` and the
# max-violation `maxvio` (the busiest expert's excess over the mean) grow, the entropy falls
# and the auxiliary loss rises towards its maximum of E = 8 (every token's two slots on the
# same two experts, with probability ≈ ½ each). Minimising $\mathcal{L}_{aux}$ pushes the
# router back to the top row. `z_loss` grows with the bias too, because the favoured logits
# grow; a z-loss alone would shrink all logits, not spread the tokens.

# %% [markdown]
# ## 3. Capacity and dropped tokens
#
# Systems that batch tokens per expert with fixed-size buffers (GShard §2.2, Switch §2.2)
# give each expert a capacity $C = \lceil cf \cdot k \cdot T / E \rceil$ per batch of T tokens;
# assignments beyond C are *dropped* (the token skips that expert, the residual carries it).
# Mixtral in transformers and vLLM drops nothing, but the simulation shows what an imbalance
# would cost under a capacity factor `cf`. The picture: one batch of tokens dispatched into
# the experts' buffers, which fill and overflow.

# %%
from moelab.plots.diagrams import capacity_diagram

batch16 = syn.experts[:16, strengths.index(1.0), :]          # 16 tokens of the bias-1 router: (tokens, k)
fig = capacity_diagram(batch16, num_experts=E, capacity_factor=1.0,
                       title="16 tokens, top-2 of 8, capacity factor 1: C = 4 slots per expert")
save(fig, "01_capacity_buffers", outdir=FIGURES)
fig

# %% [markdown]
# ### Exercise 1: the size of a buffer
#
# A batch of T = 4,096 tokens, top-2 of 8 experts, capacity factor 1.25: how many assignments
# fit in each expert's buffer? Compute it by hand (integers only), then check.

# %%
my_capacity = None      # your answer: an int

# %% tags=["solution"]
my_capacity = -(-125 * 2 * 4096 // (100 * 8))                 # ceil(1.25 * 2 * 4096 / 8)

# %%
assert my_capacity == moelab.metrics.capacity(1.25, 4096, 2, 8), my_capacity
print(f"correct: C = {my_capacity} assignments per expert per batch")

# %% [markdown]
# Dropped assignments of the synthetic routers, per capacity factor:

# %%
cfs = [1.0, 1.25, 1.5, 2.0, 3.0]
syn_drops = capacity_drops(syn, cfs, batch_sizes=[4096])["dropped"].unstack("capacity_factor").droplevel("batch_size")
syn_drops.index = pd.Index([f"bias {s:g}" for s in strengths], name="router")
syn_drops.round(4)

# %% [markdown]
# Now a real routing trace: the embedded model on a slice of the held-out corpus (all 12
# domains; consecutive tokens in recording order form the batches, so a batch of 512 tokens
# holds two windows of one document).

# %%
model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
docs = {d: ds[: max(1, DOCS_PER_DOMAIN // 6)] for d, ds in load_documents("heldout").items()}
tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out slice")
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
print(tr)
drops = capacity_drops(tr, cfs, batch_sizes=[512, 4096])
drops.to_csv(FIGURES / "01_capacity_drops.csv")
drops["dropped"].unstack("capacity_factor").round(4)

# %%
fig = capacity_drops_plot(drops, title=f"Dropped expert assignments, {MODEL_NAME}")
save(fig, "01_capacity_drops", outdir=FIGURES)
fig

# %% [markdown]
# **Reading it.** Small batches drop more than large ones at the same `cf`: with T = 512 a few
# busy experts overflow their buffer by chance, while over 4,096 tokens the load averages
# out. A well-balanced router (the synthetic bias-0 row) needs `cf` ≈ 1.25 to drop almost
# nothing; a collapsed one needs `cf` → E/k, capacity for the dense worst case. Where does
# each layer of this model stand? The synthetic router whose drops at `cf` = 1.25 (batches of
# 4,096) are closest, and each layer's balance reading (notebook 02):

# %%
at = drops["dropped"].xs(4096, level="batch_size").xs(1.25, level="capacity_factor").rename(1.25)
verdict = pd.DataFrame({"dropped at cf 1.25": at,
                        "closest synthetic router": nearest_row(at, syn_drops[[1.25]]),
                        "reading": balance_reading(tr)["reading"]})
verdict

# %% [markdown]
# ### Exercise 2: re-batch across documents
#
# A serving system batches requests from many users, so a batch mixes documents. Shuffle the
# tokens of `tr` (`tr.select(permutation)`, seed 0) so that each batch of 512 tokens mixes all
# domains, and compute the share of assignments dropped at `cf` = 1.25, averaged over layers.
# Before running it: will it be more or less than for the in-order batches, and why?

# %%
my_mixed_drops = None   # your answer: a float (share of all assignments dropped, mean over layers)

# %% tags=["solution"]
perm = np.random.default_rng(0).permutation(tr.num_tokens)
mixed = capacity_drops(tr.select(perm), [1.25], batch_sizes=[512])
my_mixed_drops = float(mixed["dropped"].mean())

# %%
in_order = float(drops["dropped"].xs(512, level="batch_size").xs(1.25, level="capacity_factor").mean())
check = capacity_drops(tr.select(np.random.default_rng(0).permutation(tr.num_tokens)), [1.25], batch_sizes=[512])
assert my_mixed_drops is not None and np.isclose(my_mixed_drops, check["dropped"].mean()), my_mixed_drops
print(f"dropped at cf 1.25, batches of 512: in order {in_order:.2%}, mixed across documents {my_mixed_drops:.2%}")

# %% [markdown]
# Batches of one document concentrate that document's preferred experts (what notebook 03
# calls locality and domain preference), so their busiest experts overflow more often than in
# a batch that mixes documents, where the load of a batch approaches the model's overall load.
# What remains after mixing is the model's overall imbalance, which only training (a balance
# loss) can remove.
#
# ## Summary
#
# * An MoE layer is a router (one matrix, softmax, top-k), k experts and a weighted sum; the
#   einsum version above matches transformers' block to rounding error.
# * Mixtral renormalises the top-k weights; OLMoE does not. Only k of E experts run per token:
#   E/k times fewer expert FLOPs than running them all.
# * A router left alone can collapse; the Switch auxiliary loss (`switch_aux`, `hf_aux`)
#   measures imbalance and the router z-loss keeps logits small. transformers pools the
#   auxiliary loss over layers (notebook 09).
# * Fixed capacities drop assignments when load is uneven, more in small batches.
#
# **Where next.** Notebook 02 records the routing of a whole model with `moelab.trace`;
# notebook 09 trains toy routers with and without a balance loss and compares routing
# variants (expert choice, shared experts, no renormalisation, aux-loss-free balancing).
