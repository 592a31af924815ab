"""Pooled vs per-layer balance: per-layer expert load and CV of several models side by side.

    >>> import numpy as np, moelab
    >>> rng = np.random.default_rng(0)
    >>> a = moelab.RoutingTrace.from_arrays(rng.integers(0, 8, (400, 4, 1)), num_experts=8)  # (tokens, layers, k)
    >>> b = moelab.RoutingTrace.from_arrays(rng.integers(0, 3, (400, 4, 1)), num_experts=8)  # 3 experts used
    >>> fig = balance_compare({"per-layer loss": a, "pooled loss": b}, perplexity={"per-layer loss": 90.0})
    >>> len(fig.axes)                                 # a load panel per model, the CV panel, a colour bar
    4

Left: one heatmap per model, layers x experts, the fraction of that layer's
top-k assignments each expert gets (uniform = 1/E); the smallest share of each
layer is written next to its row. Right: the coefficient of variation of each
layer's load (`moelab.metrics.balance`, 0 = balanced) for every model, with an
optional bar (e.g. issue 16's 0.35) and the perplexities in the legend. Only routed
experts are shown: a trace whose meta["shared_experts"] is above 0 gets a note below
("+N shared experts run for every token (not shown)").

Why it matters: transformers' `load_balancing_loss_func` pools all layers before
E·Σᵢ fᵢ·Pᵢ, so it is satisfied when layers favour different experts; the Switch
loss per layer (Fedus et al. 2021 eq. 4; `moelab.train.switch_balance_loss`)
balances each layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import metrics
from ..routing_trace import RoutingTrace
from .figures import shared_count, shared_note
from .style import SEQUENTIAL_CMAP, group_colors, styled

__all__ = ["balance_compare", "layer_load_table"]


def _load(obj, label) -> pd.DataFrame:
    """(layers, E) fractions from a trace or a metrics.expert_load frame."""
    if isinstance(obj, RoutingTrace):
        obj = metrics.expert_load(obj)
    if isinstance(obj, pd.DataFrame) and "fraction" in obj.columns and "expert" in obj.index.names:
        return obj["fraction"].unstack("expert")
    if isinstance(obj, pd.DataFrame) and obj.index.name == "layer":
        return obj                                                  # already (layers, E), e.g. routing_load.csv
    raise TypeError(
        f"balance_compare(): model {label!r} must be a RoutingTrace, a metrics.expert_load frame or a "
        f"(layer x expert) fraction frame such as routing_load.csv; got {type(obj).__name__}"
    )


def layer_load_table(models: dict) -> pd.DataFrame:
    """Per model and layer: the smallest and largest expert share and the CV of the load.

        >>> layer_load_table({"m": pd.DataFrame([[0.5, 0.5]], index=pd.Index([0], name="layer"))}).iloc[0].tolist()
        [0.5, 0.5, 0.0]
    """
    rows = []
    for label, obj in models.items():
        load = _load(obj, label)                                    # (layers, E)
        x = load.to_numpy(float)
        cv = x.std(1) / x.mean(1)                                   # population std, as metrics.balance
        for layer, lo, hi, c in zip(load.index, x.min(1), x.max(1), cv):
            rows.append({"model": label, "layer": layer, "min_share": lo, "max_share": hi, "cv": c})
    return pd.DataFrame(rows).set_index(["model", "layer"])


@styled
def balance_compare(models: dict, *, perplexity: dict | None = None, cv_bar: float | None = 0.35,
                    title: str | None = None) -> Figure:
    """Load heatmaps (layers x experts) of each model, then per-layer CV of all of them.

    models      {label: RoutingTrace | metrics.expert_load frame | (layer x expert) fractions}
    perplexity  optional {label: mixed held-out perplexity}, shown in the CV legend
    cv_bar      a dashed horizontal line on the CV panel (None for none)
    """
    if not models:
        raise ValueError("balance_compare() needs at least one model, e.g. {'per-layer': trace_a, 'pooled': trace_b}")
    loads = {label: _load(obj, label) for label, obj in models.items()}
    table = layer_load_table(loads)
    vmax = max(float(m.to_numpy().max()) for m in loads.values())
    n = len(loads)
    fig = Figure(figsize=(3.6 * n + 3.6, 3.2), layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)     # room between the colour bar's label and the CV axis label
    axes = fig.subplots(1, n + 1, width_ratios=[1.0] * n + [0.9])
    colors = group_colors(list(loads))
    for ax, (label, load) in zip(axes[:-1], loads.items()):
        mat = load.to_numpy(float)
        im = ax.imshow(mat, aspect="auto", cmap=SEQUENTIAL_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.grid(False)
        E = mat.shape[1]
        ax.set_xticks(range(E) if E <= 32 else range(0, E, max(E // 16, 1)))
        ax.set_yticks(range(mat.shape[0]))
        ax.set_yticklabels([str(i) for i in load.index])
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        for i, lo in enumerate(mat.min(1)):
            ax.text(mat.shape[1] - 0.4, i, f" min {lo:.3f}", va="center", ha="left", fontsize=7)
        ax.set_title(str(label))
    fig.colorbar(im, ax=list(axes[:-1]), label=f"share of assignments (1/E = {1 / mat.shape[1]:.3f})")
    ax = axes[-1]
    for label in loads:
        cv = table.loc[label, "cv"]
        ppl = f", ppl {perplexity[label]:.1f}" if perplexity and label in perplexity else ""
        ax.plot(np.arange(len(cv)), cv.to_numpy(), "o-", color=colors[label], label=f"{label}{ppl}")
    if cv_bar is not None:
        ax.axhline(cv_bar, color="0.4", ls="--", lw=1, label=f"CV = {cv_bar}")
    ax.set_xticks(range(len(cv)))
    ax.set_xticklabels([str(i) for i in cv.index])
    ax.set_xlabel("layer")
    ax.set_ylabel("CV of the layer's load (0 = balanced)")
    ax.set_ylim(bottom=0)
    # below the panel, not over it: a collapsed layer's CV can sit anywhere on the axis
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, frameon=False)
    ax.set_title("per-layer imbalance")
    if title:
        fig.suptitle(title)
    shared = {label: shared_count(obj) for label, obj in models.items()}
    if any(shared.values()):                 # routed experts only are shown: say what runs besides them
        if len(set(shared.values())) == 1:
            note = shared_note(next(iter(shared.values())))
        else:
            note = "; ".join(f"{label}: {shared_note(n)}" for label, n in shared.items() if n)
        fig.supxlabel(note, fontsize=8, color="0.35")
    return fig
