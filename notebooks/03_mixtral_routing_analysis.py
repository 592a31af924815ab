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
# # 03 · Reproducing the Mixtral paper's routing analysis (§5)
#
# **What you will learn.** How the three analyses of *Mixtral of Experts* §5 are computed, what
# they show on a model trained on moelab's 12-domain corpus, and how to read each statistic
# against the baseline that accounts for how unevenly the experts are loaded:
#
# * **Table 5** — how often two consecutive tokens are sent to the same expert
#   (`metrics.baselines.repeat_rate_baselines`), against uniform random routing *and* against
#   the same tokens with their routing shuffled within the domain (same loads, no order);
# * **Figure 7** — the share of each domain's tokens that each expert receives at the first,
#   middle and last layer, against the layer's overall load (`domain_distribution`,
#   `metrics.baselines.domain_tv`);
# * **Figure 8** — text coloured by each token's first-choice expert, for code and for prose;
# * the whole held-out trace in the interactive explorer (`moelab.show`), saved as
#   `03_explorer.html`.
#
# **What you need.** Notebooks 01–02 (a router; a trace). The embedded model
# `moelab-mixtral-tiny` and the held-out split of the corpus (`MOELAB_DOCS_PER_DOMAIN`
# documents of each domain, windows of `MOELAB_SEQ_LEN` tokens).
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` — see the note in section 4 for what changes.
#
# Reference: Jiang et al. 2024, *Mixtral of Experts*, arXiv:2401.04088, §5 "Routing analysis".

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
from IPython.display import HTML, display

from pathlib import Path

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import domain_distribution, expert_load
from moelab.metrics.baselines import domain_tv, repeat_rate_baselines, representative_layers
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import save, token_colors_figure, token_colors_html
from moelab.text import readable_pieces
from moelab.plots.baselined import distribution_vs_overall, repeat_rates_vs_baseline
from moelab.readings import balance_reading
from moelab.papers import MIXTRAL, cite, mixtral_table5

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
pd.set_option("display.precision", 3)

model, tok = moelab.load_model(MODEL, dtype=dtype, device_map="auto" if device == "cuda" else None)
MODEL_NAME = Path(str(MODEL or DEFAULT_MODEL)).name
print(f"{MODEL_NAME}: {model.config.num_hidden_layers} layers, top-{model.config.num_experts_per_tok} "
      f"of {model.config.num_local_experts} experts | {dtype} on {model.device}")

# %% [markdown]
# ## 1. Trace the held-out corpus, tagged by domain
#
# The paper traces subsets of The Pile; moelab's corpus has 12 small domains built from
# redistributable text (see `data/README.md`). Seven have a direct Pile analogue, which we
# use where the paper shows the Pile subsets:
#
# | moelab domain | Pile subset in the paper |
# |---|---|
# | `tex` (PARI/GP manuals, TeX) | ArXiv |
# | `math` (mathematics_dataset) | DM Mathematics |
# | `code` (CPython stdlib) | Github |
# | `fiction` (Jane Austen) | Gutenberg |
# | `biomedical` (Gene Ontology definitions) | PubMed Abstracts |
# | `docs_en` (Linux man pages) | StackExchange |
# | `encyclopedic` (FOLDOC) | Wikipedia (en) |
#
# `legal` (licence texts) has no counterpart among the paper's subsets (PhilPapers has none
# here), and `docs_fr/de/es/it` — man pages in four more languages — extend the analysis
# across languages.

# %%
PILE = {"tex": "ArXiv", "math": "DM Mathematics", "code": "Github", "fiction": "Gutenberg",
        "biomedical": "PubMed Abstracts", "docs_en": "StackExchange", "encyclopedic": "Wikipedia (en)"}
docs = {d: ds[:DOCS_PER_DOMAIN] for d, ds in load_documents("heldout").items()}
tr = trace_documents(model, tok, docs, seq_len=SEQ_LEN, desc="trace held-out")
ids = list(tr.layer_ids)
LAYERS = list(representative_layers(tr))     # first, middle, last (Mixtral: 0, 15, 31)
print(tr)
tr.token_frame().groupby("domain").agg(documents=("document", "nunique"), windows=("sequence", "nunique"),
                                       tokens=("sequence", "size")).T

# %% [markdown]
# ## 2. Table 5 — repeated expert assignments of consecutive tokens
#
# For every pair of consecutive tokens (t, t+1) of one window, at each layer: is the first
# choice the same (`first`), and do the two top-2 sets share an expert (`any`, the paper's
# "first or second choice")? With uniformly random routing these are 1/8 = 12.5 % and
# 1 − C(6,2)/C(8,2) ≈ 46.4 %. The paper (Table 5) reports 13.6–14.9 % (first choice) at
# layer 0, 23.6–28.4 % at layer 15 and 19.7–26.3 % at layer 31 on its Pile subsets; its
# caption: "Repetitions at the first layer are close to random, but are significantly higher
# at layers 15 and 31. The high number of repetitions shows that expert choice exhibits high
# temporal locality at these layers."
#
# **Uniform random routing is the right baseline only for a balanced router.** A router that
# sends most tokens to a few experts repeats them often *by chance*: if consecutive tokens
# were routed independently with first-choice loads $p_i$, they would share a first choice
# with probability $\sum_i p_i^2$ (≥ 1/E, equal only for uniform loads). The control that
# keeps each expert's load and removes only the order is to shuffle each domain's routing
# decisions among its tokens; `repeat_rate_baselines` computes its exact expectation
# (`first_shuffled`, `any_shuffled`) next to the observed rates. Only the excess over it is
# locality that comes from context.

# %%
rr = repeat_rate_baselines(tr, by="domain")
rr.to_csv(FIGURES / "03_table5_repeat_rates.csv")

table5 = (rr.loc[(slice(None), LAYERS), ["first", "first_shuffled", "any", "any_shuffled"]].mul(100)
            .unstack("layer").rename(columns={"first": "first choice", "first_shuffled": "first, shuffled",
                                              "any": "first or second", "any_shuffled": "first or second, shuffled"}))
table5.index = [f"{d} ({PILE[d]})" if d in PILE else d for d in table5.index]
r_first, r_any = rr["first_random"].iloc[0] * 100, rr["any_random"].iloc[0] * 100
table5.loc["uniform random routing"] = [r_first if c[0].startswith("first ch") or c[0] == "first, shuffled" else r_any
                                        for c in table5.columns]
table5.to_csv(FIGURES / "03_table5_paper_layout.csv")
table5.style.format("{:.1f}").background_gradient(cmap="cividis", axis=None)

# %% [markdown]
# The paper's own numbers at its layers 0, 15 and 31 of 32 (`moelab.papers`, typed in with
# their source and where they were checked):

# %%
from moelab.papers import VERIFIED

print(MIXTRAL["table5"].source)
print("verified:", VERIFIED["mixtral_table5"])
print("the paper's reading:", cite(MIXTRAL["locality"]))
paper5 = mixtral_table5()
paper5.loc["uniform random routing"] = [12.5] * 3 + [46.4] * 3
paper5

# %%
pile = [d for d in PILE if d in rr.index.get_level_values(0)]
fig = repeat_rates_vs_baseline(rr.loc[pile], title=f"Table 5 per layer: observed vs shuffled within domain ({MODEL_NAME})")
save(fig, "03_table5_repeat_rates", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# Solid lines are the observed rates, dashed lines the same domain shuffled (same loads, no
# order), grey dotted uniform random routing. The excess of observed over shuffled, in
# percentage points, is the locality this model has beyond its loads:

# %%
excess = rr["first_excess"].mul(100).unstack("layer")
excess.columns = [f"first choice, layer {c}" for c in excess.columns]
excess.round(1).sort_values(excess.columns[-1], ascending=False)

# %%
mean_excess = rr["first_excess"].groupby("layer").mean() * 100
above_random = (rr["first_shuffled"].groupby("layer").mean() - rr["first_random"].iloc[0]) * 100
pd.DataFrame({"mean excess over shuffled (points)": mean_excess,
              "shuffled above uniform random (points), from the loads alone": above_random}).round(1)

# %% [markdown]
# The second column is how far each domain's loads alone lift the shuffled rate above 12.5 %;
# the first is what context adds on top. The second column is near 0 only when every domain
# uses its experts evenly. (Mixtral's Figure 7 draws each Pile domain's shares beside the
# uniform 1/8 line; the paper states that the domains' distributions are very similar to
# each other, not that they are uniform.) A model that is
# balanced over all tokens can still have domains that each favour a few experts (section 3):
# then uniform random routing overstates its locality, and the shuffled baseline does not.
#
# ### Exercise 1: predict the shuffled repeat rate from the loads
#
# Take the `code` domain at the last layer. From its first-choice loads $p_i$ alone (the share
# of its tokens whose first choice is expert *i*), predict how often two consecutive tokens
# would share a first choice if their order were shuffled.

# %%
code_last = tr.select(tr.columns["domain"] == "code")
my_prediction = None    # your answer: a float, from code_last.experts[:, -1, 0]

# %% tags=["solution"]
p = np.bincount(code_last.experts[:, -1, 0], minlength=tr.num_experts) / code_last.num_tokens
my_prediction = float((p ** 2).sum())                       # two independent draws agree

# %%
shuffled_code = rr.loc[("code", ids[-1]), "first_shuffled"]
assert my_prediction is not None and abs(my_prediction - shuffled_code) < 0.01, (my_prediction, shuffled_code)
print(f"correct: Σ p² = {my_prediction:.4f}; the exact shuffled expectation is {shuffled_code:.4f} "
      f"(it draws without replacement, hence the tiny difference); observed {rr.loc[('code', ids[-1]), 'first']:.4f}")

# %% [markdown]
# ## 3. Figure 7 — which experts each domain uses
#
# The share of a domain's expert assignments (first or second choice) that go to each expert,
# at the first, middle and last layer. The dashed line is uniform use, 1/8; the black marks
# are the layer's overall load over all domains, the baseline a domain should be compared
# with: a bar differs from its mark only where the domain is routed differently from the rest.
# The paper's finding (§5, Figure 7): "we do not observe obvious patterns in the assignment of
# experts based on the topic" — the distributions are similar across ArXiv, PubMed,
# PhilPapers, Github…, with DM Mathematics standing out somewhat, which the paper suggests
# may come from its synthetic nature and limited coverage of the natural-language spectrum.

# %%
dist = domain_distribution(tr, layers=LAYERS)
dist.to_csv(FIGURES / "03_fig7_domain_distribution.csv")
overall = expert_load(tr)["fraction"]                                 # (layer, expert), all domains
pile_domains = [d for d in PILE if d in dist.index.get_level_values(0)]
fig = distribution_vs_overall(dist.loc[pile_domains], overall,
                              title=f"Figure 7: expert selection per domain (Pile analogues, {MODEL_NAME})")
save(fig, "03_fig7_domain_distribution", outdir=FIGURES, formats=("png", "pdf"))
print("Mixtral paper:", cite(MIXTRAL["figure7_domains"]))
print("Mixtral paper:", cite(MIXTRAL["figure7_dm_math"]))
fig

# %% [markdown]
# The same across languages: man pages in English, French, German, Spanish and Italian.

# %%
langs = [d for d in ["docs_en", "docs_fr", "docs_de", "docs_es", "docs_it"] if d in dist.index.get_level_values(0)]
fig = distribution_vs_overall(dist.loc[langs], overall, title="Expert selection per language (man pages)")
save(fig, "03_fig7_languages", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# How far is each domain from the overall load? Total-variation distance
# ½ Σ_e |p_domain(e) − p_all(e)| at each layer (0 = routed exactly like all tokens together;
# `metrics.baselines.domain_tv`):

# %%
tvd = domain_tv(tr, layers=LAYERS)
tvd.round(3).sort_values(LAYERS[-1], ascending=False)

# %% [markdown]
# ## 4. Figure 8 — text coloured by first-choice expert
#
# Every token is shown on the colour of the expert it was routed to first (the same colour
# for expert *i* in every moelab figure). What the paper reports (§5, Figure 8 and its
# discussion): the selection of experts "appears to be more aligned with the syntax rather
# than the domain, especially at the initial and final layers"; the word `self` in Python and
# `Question` in English often go through the same expert even though they are made of several
# tokens; in code, indentation tokens are always assigned to the same experts, particularly at
# the first and last layers, whose hidden states the paper describes as more correlated with
# the model's input and output; and consecutive tokens are often assigned the same experts
# (Table 5).

# %%
print("Mixtral paper:", cite(MIXTRAL["figure8_syntax"]))


def sample(domain: str, n_tokens: int = 160):
    """(token strings, the trace of the first window of the domain's first document), BOS dropped."""
    c = tr.columns
    first_doc = c["document"][c["domain"] == domain].min()
    sub = tr.select((c["domain"] == domain) & (c["document"] == first_doc) & (c["offset"] == 0)).sorted()
    sub = sub.select(slice(1, n_tokens + 1))
    return readable_pieces(tok.token_strings(sub.token_id)), sub


for domain, name in [("code", "code"), ("fiction", "prose")]:
    toks, sub = sample(domain)
    for layer in LAYERS:
        pos = ids.index(layer)
        display(HTML(token_colors_html(toks, sub.experts[:, pos, 0], tr.num_experts,
                                       title=f"{domain} · layer {layer}", legend=layer == LAYERS[-1])))
    for layer, suffix, formats in [(LAYERS[0], "", ("png", "pdf")), (LAYERS[-1], "_last", ("png",))]:
        fig = token_colors_figure(toks, sub.experts[:, ids.index(layer), 0], tr.num_experts,
                                  title=f"{domain}, first-choice expert at layer {layer} ({MODEL_NAME})")
        save(fig, f"03_fig8_{name}{suffix}", outdir=FIGURES, formats=formats)

# %% [markdown]
# ### What would change on real Mixtral 8x7B
#
# Everything above runs unchanged on the real model; set
#
# ```bash
# MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16 MOELAB_DEVICE=cuda make figures
# ```
#
# (or `moelab figures --only 03` with those variables; `MOELAB_MODEL` may also be a local
# folder with `config.json` + `*.safetensors`; moelab never downloads weights unless asked).
# What differs:
#
# * **32 layers, hidden size 4096, 14336-wide experts** instead of 4 × 128 × 256: the first /
#   middle / last layers become 0, 15, 31 — exactly the paper's — and locality can build up
#   over many more layers. The paper's Table 5 values (first choice 13.6–28.4 %, first or
#   second choice 44.5–67.0 %) are the reference to compare with.
# * **Its training data** (the paper says only that Mixtral "is pretrained with multilingual
#   data using a context size of 32k tokens", §1) instead of moelab's 2.9 M tokens of 12
#   domains. Our tiny model was trained with domains sampled uniformly, so each domain is a
#   large share of its world; the paper's finding that expert assignment shows no obvious
#   pattern by topic (§5, Figure 7) may or may not hold on such a small model — compare
#   Figure 7 here with the paper's.
# * **Balance.** Mixtral's Figure 7 shows, at layers 0, 15 and 31, each domain's expert shares
#   beside the uniform 1/8 line (the paper comments on the domains' similarity, not on balance;
#   it does not describe a balance loss either). The OLMoE paper measured Mixtral-8x7B's experts
#   "activated close to the uniform routing baseline for all layers and domains" (Muennighoff
#   et al. 2024, §5.3, Figure 22 bottom; `moelab.papers.OLMOE["mixtral_near_uniform"]`). The
#   reading of this model's layers (notebook 02's `balance_reading`) is printed below. Where a layer, or a domain within it,
#   uses its experts unevenly, uniform random routing is the wrong baseline, and only the
#   excess over the shuffled baseline (section 2) and over the overall load (section 3)
#   compares with the paper.
# * **Scale of the trace**: ~47 B parameters need ≈ 94 GB in fp16 (one 141 GB GPU, two 80 GB
#   GPUs, or offloading with `device_map="auto"`). What tracing costs was measured on random
#   Mixtral-shaped models, not on 8x7B itself (README, "Tracing overhead" and "Tracing overhead
#   on a GPU"): on a CPU (fp32, one thread) a decode step inside an open trace takes 1.02–1.03×
#   its untraced time and a 4 × 256 prefill 0.98× (`python bench/bench_tracer.py`,
#   `bench/results/tracer_cpu_quiet.json`); on an H200 (fp16/bf16) decode takes 1.06–1.12× and
#   prefill 1.03–1.05×, the largest ratio with Mixtral 8x7B's layer sizes (`bash
#   bench/gpu_check.sh`, `bench/results/gpu/tracer_cuda_*.json`). For the full held-out corpus
#   use the CLI, which streams to disk:
#   `moelab trace --model mistralai/Mixtral-8x7B-v0.1 --dtype float16 --device cuda --corpus heldout --out runs/mx`
#   and `moelab.load_trace("runs/mx")`.

# %%
balance_reading(tr).round(3)

# %% [markdown]
# ## 5. Interactive explorer
#
# The whole held-out trace in `moelab.show`: tokens coloured by expert at the chosen layer
# (←/→ or the slider; "both choices" splits each token's colour), hover a token for its experts
# and weights in every layer, click an expert for its tokens, its most frequent tokens and its
# share of each domain, filter by domain or sequence. The same view is saved as one standalone
# HTML file, `03_explorer.html`, that opens offline in any browser (docs/explorer.md).

# %%
view = moelab.show(tr, tok, layer=ids[-1], max_tokens=max(tr.num_tokens, 1),
                   title=f"held-out corpus, {DOCS_PER_DOMAIN} documents per domain, {MODEL_NAME}")
path = view.save(FIGURES / "03_explorer.html")
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB for all {tr.num_tokens:,} tokens of the trace")
view

# %% [markdown]
# ### Exercise 2: the busiest expert of a domain
#
# Using `dist` (Figure 7's frame), find the expert that receives the largest share of the
# `math` domain's assignments at the last layer, and how much larger that share is than the
# expert's overall load (`overall`). Is `math` routed differently from the other domains?

# %%
my_expert, my_ratio = None, None    # your answers: an int and a float (math share / overall load)

# %% tags=["solution"]
m = dist.loc[("math", LAYERS[-1]), "fraction"]
my_expert = int(m.idxmax())
my_ratio = float(m.max() / overall.loc[(LAYERS[-1], my_expert)])

# %%
m_ref = dist.loc[("math", LAYERS[-1]), "fraction"]
assert my_expert == int(m_ref.idxmax()) and np.isclose(my_ratio, m_ref.max() / overall.loc[(LAYERS[-1], my_expert)])
print(f"math's busiest expert at layer {LAYERS[-1]}: {my_expert}, {my_ratio:.2f}x its overall load")

# %% [markdown]
# ## Summary
#
# * Table 5's repeat rates must be read against the shuffled-within-domain baseline: an
#   unbalanced router repeats experts by chance (Σ pᵢ²); only the excess is locality.
# * Figure 7's bars must be read against the layer's overall load; the TV distance says how
#   differently a domain is routed.
# * Figure 8 shows assignments at the token level; the explorer shows them for every token of
#   the held-out corpus.
#
# **Where next.** Notebook 04 runs OLMoE's analyses (co-activation, domain and vocabulary
# specialization, layer transitions, router saturation over training), each with its
# load-aware baseline, and compares a model trained with a pooled balance loss with one
# trained with a per-layer loss.
