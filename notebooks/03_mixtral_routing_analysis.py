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
# **What you learn.** How the three analyses of *Mixtral of Experts* §5 are computed, and what
# they show on a model trained on moelab's 12-domain corpus:
#
# * **Table 5** — how often two consecutive tokens are sent to the same expert
#   (`moelab.metrics.repeat_rates`), per domain and layer, against random routing;
# * **Figure 7** — the share of each domain's tokens that each expert receives at the first,
#   middle and last layer (`domain_distribution`, `domain_distribution_bars`);
# * **Figure 8** — text coloured by each token's first-choice expert, for code and for prose
#   (`token_colors_html` inline, `token_colors_figure` saved);
#
# plus the interactive explorer of the whole trace (`moelab.explorer.show`), saved as `03_explorer.html`.
#
# **Needs.** The embedded model `moelab-mixtral-tiny` and the held-out split of the corpus
# (`MOELAB_DOCS_PER_DOMAIN` documents of each domain, windows of `MOELAB_SEQ_LEN` tokens).
# **Takes** 48 s (measured by `make figures` on a fresh clone, 2-core AVX2-only CPU, fp32, 2026-12-01),
# most of it the trace cell (the decoder stack alone: no LM head is computed).
#
# **On real Mixtral 8x7B:** `MOELAB_MODEL=mistralai/Mixtral-8x7B-v0.1 MOELAB_DTYPE=float16
# MOELAB_DEVICE=cuda` — see the note in section 4 for what changes.
#
# Reference: Jiang et al. 2024, *Mixtral of Experts*, arXiv:2401.04088, §5 "Routing analysis".

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
import numpy as np
import pandas as pd
import torch
from IPython.display import HTML, display
from matplotlib.ticker import MaxNLocator

import moelab
from moelab.notebooks import figures_dir, resolve_device_dtype
from moelab.data import load_documents
from moelab.metrics import domain_distribution, expert_load, repeat_rates
from moelab.models import DEFAULT_MODEL
from moelab.notebooks import trace_documents
from moelab.plots import domain_distribution_bars, repeat_rates_plot, save, token_colors_figure, token_colors_html

FIGURES = figures_dir(FIGURES)                               # says where figures go
FIGURES.mkdir(parents=True, exist_ok=True)
device, dtype = resolve_device_dtype(DEVICE, DTYPE, MODEL)   # prints its choice: cuda fp16; cpu bf16 only where native
if FAST:
    DOCS_PER_DOMAIN, SEQ_LEN = min(DOCS_PER_DOMAIN, 2), min(SEQ_LEN, 128)
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
LAYERS = sorted({ids[0], ids[(len(ids) - 1) // 2], ids[-1]})     # first, middle, last (Mixtral: 0, 15, 31)
print(tr)
tr.token_frame().groupby("domain").agg(documents=("document", "nunique"), windows=("sequence", "nunique"),
                                       tokens=("sequence", "size")).T

# %% [markdown]
# ## 2. Table 5 — repeated expert assignments of consecutive tokens
#
# For every pair of consecutive tokens (t, t+1) of one window, at each layer: is the first
# choice the same (`first`), and do the two top-2 sets share an expert (`any`, the paper's
# "first or second choice")? With uniformly random routing these are 1/8 = 12.5 % and
# 1 − C(6,2)/C(8,2) ≈ 46.4 %. The paper finds 14–28 % and 46–63 % on The Pile, far above random
# at layers 15 and 31: routing has temporal locality, which matters for caching and batching.

# %%
rr = repeat_rates(tr, by="domain")

# A second baseline: the same tokens with their routing shuffled within each domain. It keeps
# every expert's load (an unbalanced router repeats experts more often by chance alone) and
# removes only the order, so observed - shuffled is the locality that comes from context.
rng = np.random.default_rng(0)
dom = tr.columns["domain"]
perm = np.arange(tr.num_tokens)
for d in np.unique(dom):
    idx = np.flatnonzero(dom == d)
    perm[idx] = rng.permutation(idx)
shuffled = moelab.RoutingTrace.from_arrays(tr.experts[perm], num_experts=tr.num_experts, sequence=tr.sequence,
                                           position=tr.position, layer_ids=tr.layer_ids, domain=dom)
rr_shuffled = repeat_rates(shuffled, by="domain")
rr["first_shuffled"], rr["any_shuffled"] = rr_shuffled["first"], rr_shuffled["any"]
rr.to_csv(FIGURES / "03_table5_repeat_rates.csv")

table5 = (rr.loc[(slice(None), LAYERS), ["first", "any"]].mul(100).unstack("layer")
            .rename(columns={"first": "First choice (%)", "any": "First or second choice (%)"}))
table5.index = [f"{d} ({PILE[d]})" if d in PILE else d for d in table5.index]
r_first, r_any = rr["first_random"].iloc[0] * 100, rr["any_random"].iloc[0] * 100
table5.loc["random routing"] = [r_first] * len(LAYERS) + [r_any] * len(LAYERS)
shuf = rr.loc[(slice(None), LAYERS), ["first_shuffled", "any_shuffled"]].mul(100).groupby("layer").mean()
table5.loc["shuffled within domain (mean)"] = list(shuf["first_shuffled"]) + list(shuf["any_shuffled"])
table5.to_csv(FIGURES / "03_table5_paper_layout.csv")
table5.style.format("{:.1f}").background_gradient(cmap="cividis", axis=None)

# %%
fig = repeat_rates_plot(rr.loc[[d for d in PILE if d in rr.index.get_level_values(0)]],
                        title=f"Table 5 per layer: consecutive tokens repeating experts ({MODEL_NAME})")
fig.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))       # integer layer ticks
save(fig, "03_table5_repeat_rates", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# Random routing is not the only baseline that matters. The bottom row of the table shuffles
# each domain's routing decisions across its tokens: the experts' loads stay the same, only
# the order is lost. A router that sends most tokens to a few experts repeats them often *by
# chance* (the shuffled rate is Σ_e p_e², p_e = the experts' load); only the excess over the
# shuffled rate is locality that comes from context. Excess per domain, in percentage points:

# %%
excess = (rr["first"] - rr["first_shuffled"]).mul(100).unstack("layer")
excess.columns = [f"first choice, layer {c}" for c in excess.columns]
excess.round(1).sort_values(excess.columns[-1], ascending=False)

# %% [markdown]
# ## 3. Figure 7 — which experts each domain uses
#
# The share of a domain's expert assignments (first or second choice) that go to each expert,
# at the first, middle and last layer. The dashed line is uniform use, 1/8. The paper's
# finding: *no* clear expert-per-domain specialisation on The Pile — the distributions are
# similar across ArXiv, PubMed, PhilPapers, Github…, with DM Mathematics standing out
# somewhat, attributed to its synthetic nature and limited coverage of natural language.

# %%
dist = domain_distribution(tr, layers=LAYERS)
dist.to_csv(FIGURES / "03_fig7_domain_distribution.csv")
pile_domains = [d for d in PILE if d in dist.index.get_level_values(0)]
fig = domain_distribution_bars(dist.loc[pile_domains],
                               title=f"Figure 7: expert selection per domain (Pile analogues, {MODEL_NAME})")
save(fig, "03_fig7_domain_distribution", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# The same across languages: man pages in English, French, German, Spanish and Italian.

# %%
langs = [d for d in ["docs_en", "docs_fr", "docs_de", "docs_es", "docs_it"] if d in dist.index.get_level_values(0)]
fig = domain_distribution_bars(dist.loc[langs], title="Expert selection per language (man pages)")
save(fig, "03_fig7_languages", outdir=FIGURES, formats=("png", "pdf"))
fig

# %% [markdown]
# How far is each domain from the corpus-wide distribution? Total-variation distance
# ½ Σ_e |p_domain(e) − p_all(e)| at each layer (0 = identical expert use):

# %%
overall = expert_load(tr)["fraction"]                                 # (layer, expert), all domains
tvd = (dist["fraction"] - overall.reindex(dist.index.droplevel(0)).to_numpy()).abs().groupby(["domain", "layer"]).sum() / 2
tvd.unstack("layer").round(3).sort_values(LAYERS[-1], ascending=False)

# %% [markdown]
# ## 4. Figure 8 — text coloured by first-choice expert
#
# Every token is shown on the colour of the expert it was routed to first (the same colour
# for expert *i* in every moelab figure). The paper's observation: assignments follow
# *syntax* more than topic — e.g. `self` in Python, indentation, or the first tokens of words
# tend to go to the same expert, and consecutive tokens often share one (Table 5).

# %%
def readable(pieces):
    """SentencePiece byte-fallback pieces such as '<0x0A>' shown as the character (newline, tab)."""
    return [chr(int(p[3:5], 16)) if len(p) == 6 and p.startswith("<0x") and int(p[3:5], 16) < 128 else p
            for p in pieces]


def sample(domain: str, n_tokens: int = 160):
    """(token strings, the trace of the first window of the domain's first document), BOS dropped."""
    c = tr.columns
    first_doc = c["document"][c["domain"] == domain].min()
    sub = tr.select((c["domain"] == domain) & (c["document"] == first_doc) & (c["offset"] == 0)).sorted()
    sub = sub.select(slice(1, n_tokens + 1))
    return readable(tok.token_strings(sub.token_id)), sub


for domain, name in [("code", "code"), ("fiction", "prose")]:
    toks, sub = sample(domain)
    for layer in LAYERS:
        pos = ids.index(layer)
        display(HTML(token_colors_html(toks, sub.experts[:, pos, 0], tr.num_experts,
                                       title=f"{domain} · layer {layer}", legend=layer == LAYERS[-1])))
    for layer, suffix in [(LAYERS[0], ""), (LAYERS[-1], "_last")]:       # first layer; last layer
        fig = token_colors_figure(toks, sub.experts[:, ids.index(layer), 0], tr.num_experts,
                                  title=f"{domain}, first-choice expert at layer {layer} ({MODEL_NAME})")
        save(fig, f"03_fig8_{name}{suffix}", outdir=FIGURES, formats=("png", "pdf"))

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
#   over many more layers. The paper's Table 5 values (first choice ≈ 14–28 %, either choice
#   ≈ 46–63 %) are the reference to compare with.
# * **Its training data** (undisclosed web-scale text, multilingual) instead of moelab's 2.9 M
#   tokens of 12 domains. Our tiny model was trained with domains sampled uniformly, so each
#   domain is a large share of its world; the paper's finding of *weak* domain specialisation
#   may or may not hold on such a small model — compare Figure 7 here with the paper's.
# * **Scale of the trace**: ~47 B parameters need ≈ 94 GB in fp16 (one 141 GB GPU, two 80 GB
#   GPUs, or offloading with `device_map="auto"`); tracing itself adds < 1 % time. For the full
#   held-out corpus use the CLI, which streams to disk:
#   `moelab trace --model mistralai/Mixtral-8x7B-v0.1 --dtype float16 --device cuda --corpus heldout --out runs/mx`
#   and `moelab.load_trace("runs/mx")`.

# %% [markdown]
# ## 5. Interactive explorer
#
# The held-out trace in `moelab.explorer` (the first window of every document: the whole trace,
# 250k tokens at full size, is above the explorer's 200k limit): tokens coloured by expert at the chosen layer
# (←/→ or the slider; "both choices" splits each token's colour), hover a token for its experts
# and weights in every layer, click an expert for its tokens, its most frequent tokens and its
# share of each domain, filter by domain or sequence. The same view is saved as one standalone
# HTML file, `03_explorer.html`, that opens offline in any browser (docs/explorer.md).

# %%
from moelab.explorer import show

first_windows = tr.select(tr.columns["offset"] == 0)    # every document's first window: all domains, < 5 MB
view = show(first_windows, tok, layer=ids[-1],
            title=f"held-out corpus, first {SEQ_LEN} tokens of each document, {MODEL_NAME}")
path = view.save(FIGURES / "03_explorer.html")
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB for {first_windows.num_tokens:,} of the trace's {tr.num_tokens:,} tokens")
view
