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
# **What you learn.** What a Mixtral MoE layer computes for one token, written out with
# `einops` on small tensors: hidden state → router logits → softmax → top-2 → renormalised
# weights → weighted sum of two SwiGLU experts. We check every step against transformers'
# own `MixtralSparseMoeBlock` with `torch.allclose`. Then: why training needs a
# load-balancing loss (a collapsed router vs a balanced one, measured with
# `moelab.metrics.balance`), and what a fixed expert *capacity* would drop
# (`moelab.metrics.capacity_drops`) on a real routing trace.
#
# **Needs.** Nothing but CPU: a tiny random Mixtral block built from a config, synthetic
# routers, and (last section) the embedded model `moelab-mixtral-tiny`.
# **Takes** 15 s (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01).
#
# **On real Mixtral 8x7B.** Parts 1–2 use no weights. For the capacity section on the real
# model set `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16 MOELAB_DEVICE=cuda`
# (a local folder with `config.json` + `*.safetensors` works too; moelab never downloads).
#
# References: Jiang et al. 2024, *Mixtral of Experts* (arXiv:2401.04088) §2.1;
# Shazeer et al. 2017 (arXiv:1701.06538); Fedus et al. 2021, *Switch Transformer* (arXiv:2101.03961);
# Lepikhin et al. 2020, *GShard* (arXiv:2006.16668).

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
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from einops import einsum
from IPython.display import display

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import balance, capacity_drops
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import load_heatmap, save, use_style

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
pd.set_option("display.precision", 4)
print(f"moelab {moelab.__version__} | device {device} | dtype {dtype} | figures -> {FIGURES.resolve()}")

# %% [markdown]
# ## 1. One MoE layer, step by step
#
# A tiny random Mixtral (hidden size H = 16, expert width I = 32, E = 8 experts, top-k = 2),
# in float32 so that our re-implementation can match it to rounding error. In transformers 5
# the MoE block of layer *i* is `model.model.layers[i].mlp`:
#
# * `block.gate` is the router (`MixtralTopKRouter`): one weight matrix `W_g` of shape (E, H);
#   it returns `(logits, weights, indices)`;
# * `block.experts.gate_up_proj` (E, 2I, H) holds every expert's gate and up projections
#   stacked, `block.experts.down_proj` (E, H, I) their down projections.

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
# the paper's `Softmax(Top2(x · W_g))`, a softmax over the two largest logits only.

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
# (Shazeer et al. 2017). Mixtral, like Switch Transformer, adds an auxiliary loss
#
# $$\mathcal{L}_{aux} = E \sum_i f_i \, P_i ,$$
#
# with $f_i$ the share of tokens routed to expert $i$ and $P_i$ the mean router probability of
# $i$; it is smallest when both are uniform (transformers' convention, `hf_aux`, equals k at
# perfect balance). Below: synthetic routers over the same 4,096 random tokens, from balanced
# (bias 0) to collapsed (a growing bias towards experts 0 and 1). Each row of the trace's
# "layer" axis is one synthetic router.

# %%
rng = np.random.default_rng(0)
T_syn, strengths = 4096, [0.0, 0.5, 1.0, 2.0, 4.0]
base = rng.normal(size=(T_syn, E))                                  # router logits of a balanced router
favour = np.r_[1.0, 0.9, -np.linspace(0.0, 0.6, E - 2)]              # experts 0, 1 favoured
syn_logits = np.stack([base + s * favour for s in strengths], 1).astype(np.float32)    # (tokens, routers, E)
syn_experts = np.argsort(-syn_logits, -1, kind="stable")[..., :k]                       # (tokens, routers, k)
syn = moelab.RoutingTrace.from_arrays(syn_experts, num_experts=E, logits=syn_logits)
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
# router back to the top row.

# %% [markdown]
# ## 3. Capacity and dropped tokens
#
# Systems that batch tokens per expert with fixed-size buffers (GShard, Switch) give each
# expert a capacity $C = \lceil cf \cdot k \cdot T / E \rceil$ per batch of T tokens;
# assignments beyond C are *dropped* (the token skips that expert, the residual carries it).
# Mixtral in transformers/vLLM drops nothing, but the simulation shows what an imbalance would
# cost under a capacity factor `cf`. First the synthetic routers:

# %%
cfs = [1.0, 1.25, 1.5, 2.0, 3.0]
syn_drops = capacity_drops(syn, cfs, batch_sizes=[4096])["dropped"].unstack("capacity_factor").droplevel("batch_size")
syn_drops.index = pd.Index([f"bias {s:g}" for s in strengths], name="router")
syn_drops.round(4)

# %% [markdown]
# Now a real routing trace: the embedded model on a slice of the held-out corpus (all 12
# domains, consecutive tokens in recording order form the batches).

# %%
model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
docs = {d: ds[: max(1, DOCS_PER_DOMAIN // 4)] for d, ds in load_documents("heldout").items()}
tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out slice")
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
print(tr)
drops = capacity_drops(tr, cfs, batch_sizes=[512, 4096])
drops.to_csv(FIGURES / "01_capacity_drops.csv")
drops["dropped"].unstack("capacity_factor").round(4)

# %%
with use_style():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    colors = moelab.plots.group_colors(list(tr.layer_ids))           # one colour per layer
    for (bs, layer), s in drops["dropped"].groupby(["batch_size", "layer"]):
        s = s.droplevel(["layer", "batch_size"])
        ax.plot(s.index, 100 * s.values, marker="o", ms=3, ls="-" if bs == 4096 else "--",
                color=colors[layer], label=f"layer {layer}, batch {bs}")
    ax.set_xlabel("capacity factor cf")
    ax.set_ylabel("assignments dropped (%)")
    ax.set_title(f"Dropped expert assignments, {MODEL_NAME}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncols=1 if tr.num_layers <= 8 else 2)
save(fig, "01_capacity_drops", outdir=FIGURES)
fig

# %% [markdown]
# Small batches drop more than large ones at the same `cf`: with T = 512 a few busy experts
# overflow their buffer by chance, while over 4,096 tokens the load averages out. A
# well-balanced router (the synthetic bias-0 row) needs `cf` ≈ 1.25 to drop almost nothing; a
# collapsed one needs `cf` → E/k, i.e. capacity for the dense worst case. Compare each real
# layer with the synthetic rows to see how unbalanced it is: the embedded model was trained
# dropless, so nothing pushed its layers towards a small `cf` beyond the auxiliary loss.
