"""Statistic figures drawn next to the baseline that accounts for the load (notebooks 03, 04).

    >>> import pandas as pd
    >>> idx = pd.MultiIndex.from_product([["code", "prose"], [0, 1]], names=["domain", "layer"])
    >>> rates = pd.DataFrame({"first": [.3, .2, .25, .2], "any": [.6, .5, .55, .5], "first_shuffled": .15,
    ...                       "any_shuffled": .5, "first_random": .125, "any_random": .464}, index=idx)
    >>> fig = repeat_rates_vs_baseline(rates)     # rates: metrics.baselines.repeat_rate_baselines(trace, by="domain")
    >>> [ax.get_title() for ax in fig.axes]
    ['first choice', 'any of top-k']

An unbalanced router repeats, co-activates and "specialises" on its busiest experts by chance,
so each figure here draws the observed statistic together with what the same loads give by
chance (`moelab.metrics.baselines` computes those):

repeat_rates_vs_baseline   Mixtral Table 5 per layer: observed (solid) vs shuffled within the
                           domain (dashed, same colour) and uniform random (grey).
distribution_vs_overall    Mixtral Figure 7 with every layer's overall load (all tokens) as black
                           marks: a domain's bar differs from its mark only if it is routed differently.
lift_heatmap               a lift matrix (observed / expected from the loads; 1 = no association)
                           on a log scale centred on 1: co-activation or layer transitions.
specialization_scatter     OLMoE domain specialization of every (domain, expert) against the
                           expert's overall load: on the diagonal = routed like every other domain.
vocab_vs_chance            OLMoE's vocabulary scalar per layer next to its exact chance level.
saturation_vs_training     router saturation against the share of training (the final checkpoint
                           at 100 %), each layer's chance level from its loads (dashed), and
                           reference points (e.g. OLMoE's reported values, moelab.papers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .style import SEQUENTIAL_CMAP, expert_colors, group_colors, styled

__all__ = ["repeat_rates_vs_baseline", "distribution_vs_overall", "lift_heatmap", "specialization_scatter", "vocab_vs_chance",
           "saturation_vs_training"]


def _need(df, cols, fn, source):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{fn}() takes the DataFrame of {source}; got {type(df).__name__}")
    have = set(df.columns) | set(df.index.names)
    missing = [c for c in cols if c not in have]
    if missing:
        raise ValueError(f"{fn}(): the frame lacks {missing}; pass the frame of {source}")


@styled
def repeat_rates_vs_baseline(rates: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Two panels (first choice, any of top-k): per group, observed (solid) and shuffled (dashed).

    `rates` is the frame of `metrics.baselines.repeat_rate_baselines(trace, by=...)` (or any frame
    with layer, first, any, first_shuffled, any_shuffled, first_random, any_random).
    """
    _need(rates, ["layer", "first", "any", "first_shuffled", "any_shuffled", "first_random", "any_random"],
          "repeat_rates_vs_baseline", "metrics.baselines.repeat_rate_baselines(trace, by='domain')")
    grouped = rates.index.nlevels > 1
    groups = list(dict.fromkeys(rates.index.get_level_values(0))) if grouped else [None]
    colors = group_colors(groups) if grouped else {None: "#0072B2"}
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=False)
    for ax, col, name in zip(axes, ["first", "any"], ["first choice", "any of top-k"]):
        for g in groups:
            sub = rates.xs(g, level=0) if grouped else rates
            x = sub.index.get_level_values("layer")
            ax.plot(x, 100 * sub[col], color=colors[g], marker="o", ms=3, label="observed" if g is None else str(g))
            ax.plot(x, 100 * sub[f"{col}_shuffled"], color=colors[g], ls="--", lw=1)
        ax.axhline(100 * rates[f"{col}_random"].iloc[0], color="0.4", ls=":", lw=1.2)
        ax.set_xticks(sorted(set(rates.index.get_level_values("layer"))))
        ax.set_xlabel("layer")
        ax.set_title(name)
    axes[0].set_ylabel("consecutive tokens repeating (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="0.2", ls="--", lw=1), Line2D([], [], color="0.4", ls=":", lw=1.2)]
    labels += ["shuffled within domain (same loads)", "uniform random routing"]
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def distribution_vs_overall(dist: pd.DataFrame, overall: pd.Series, *, title: str | None = None) -> Figure:
    """`plots.domain_distribution_bars(dist)` with the overall load of each (layer, expert) drawn as a
    black mark over its group of bars: the baseline a domain is compared with.

    dist     `metrics.domain_distribution(trace, layers=...)`
    overall  `metrics.expert_load(trace)["fraction"]` (index (layer, expert))
    """
    from .figures import domain_distribution_bars

    if not isinstance(overall, pd.Series) or list(overall.index.names) != ["layer", "expert"]:
        raise TypeError("distribution_vs_overall(): overall must be metrics.expert_load(trace)['fraction'], "
                        "a Series indexed (layer, expert)")
    fig = domain_distribution_bars(dist, title=title)
    layers = list(dict.fromkeys(dist.index.get_level_values("layer")))
    for ax, layer in zip(fig.axes, layers):
        o = overall.loc[layer]
        ax.hlines(o.to_numpy(), o.index - 0.42, o.index + 0.42, color="black", lw=1.6,
                  label="all tokens (load)" if ax is fig.axes[0] else None)
    if fig.legends:
        fig.legends[0].remove()
    h, lab = fig.axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside right center", fontsize=7)
    return fig


@styled
def lift_heatmap(lift: pd.DataFrame, layer=None, *, xlabel: str = "expert j", ylabel: str = "expert i",
                 cbar_label: str = "lift (observed / expected from loads)", title: str | None = None) -> Figure:
    """One layer of a lift frame (indexed (layer, expert), one column per expert) on a log colour
    scale centred on 1, each cell annotated; NaN cells (e.g. the diagonal) are blank.

    Takes `metrics.baselines.coactivation_lift` or `transition_lift`.
    """
    if not isinstance(lift, pd.DataFrame) or "layer" not in lift.index.names:
        raise TypeError("lift_heatmap() takes a frame indexed (layer, expert), e.g. coactivation_lift(trace)")
    layers = list(dict.fromkeys(lift.index.get_level_values("layer")))
    layer = layers[0] if layer is None else layer
    if layer not in layers:
        raise KeyError(f"lift_heatmap(): layer {layer!r} is not in the frame; it has layers {layers}")
    mat = lift.loc[layer].to_numpy(float)                                   # (E, E)
    finite = mat[np.isfinite(mat) & (mat > 0)]
    span = float(np.max(np.abs(np.log(finite)))) if finite.size else 1.0
    span = min(max(span, np.log(2)), np.log(100))
    E = mat.shape[0]
    fig = Figure(figsize=(1.8 + 0.45 * E, 1.0 + 0.42 * E), layout="constrained")
    ax = fig.add_subplot()
    shown = np.where(mat > 0, mat, np.nan)
    im = ax.imshow(shown, cmap="RdBu_r", norm=LogNorm(vmin=np.exp(-span), vmax=np.exp(span)))
    if E <= 16:
        for i in range(E):
            for j in range(E):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.1f}", ha="center", va="center", fontsize=6,
                            color="white" if abs(np.log(max(mat[i, j], 1e-9))) > 0.6 * span else "black")
    ax.set_xticks(range(E)), ax.set_yticks(range(E))
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.85)
    ax.set_title(title or f"lift, layer {layer}", fontsize=9)
    return fig


@styled
def specialization_scatter(svl: pd.DataFrame, *, layers=None, title: str | None = None) -> Figure:
    """One panel per layer: each (domain, expert) at (expert's overall load, domain specialization),
    coloured by domain; the diagonal is "routed like every other domain".

    Takes `metrics.baselines.specialization_vs_load(trace)` (index (domain, layer, expert), columns
    specialization and load).
    """
    _need(svl, ["layer", "expert", "specialization", "load"], "specialization_scatter",
          "metrics.baselines.specialization_vs_load(trace)")
    all_layers = list(dict.fromkeys(svl.index.get_level_values("layer")))
    layers = all_layers if layers is None else list(layers)
    groups = list(dict.fromkeys(svl.index.get_level_values(0)))
    colors = group_colors(groups)
    fig = Figure(figsize=(3.0 * len(layers) + 1.6, 3.2), layout="constrained")
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    hi = float(np.nanmax(svl[["specialization", "load"]].to_numpy())) * 1.05
    for ax, layer in zip(axes, layers):
        sub = svl.xs(layer, level="layer")
        for g in groups:
            if g in sub.index.get_level_values(0):
                d = sub.xs(g, level=0)
                ax.scatter(d["load"], d["specialization"], s=12, color=colors[g], label=str(g))
        ax.plot([0, hi], [0, hi], color="0.4", ls="--", lw=1)
        ax.set_xlim(0, hi), ax.set_ylim(0, hi)
        ax.set_xlabel("expert's load over all tokens")
        ax.set_title(f"layer {layer}")
    axes[0].set_ylabel("domain specialization N(E, D) / N(D)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=7, title="domain")
    if title:
        fig.suptitle(title)
    return fig


@styled
def vocab_vs_chance(scalar: pd.DataFrame, chance: pd.DataFrame, *, title: str | None = None) -> Figure:
    """OLMoE's vocabulary scalar per layer (one solid line per kind of token) and its chance level
    (dashed, same colour). `scalar` and `chance`: index layer, one column per kind."""
    if not isinstance(scalar, pd.DataFrame) or not isinstance(chance, pd.DataFrame):
        raise TypeError("vocab_vs_chance() takes two frames indexed by layer, one column per kind of token")
    kinds = [c for c in scalar.columns if c in chance.columns]
    if not kinds:
        raise ValueError(f"vocab_vs_chance(): no column in both frames; {list(scalar.columns)} vs {list(chance.columns)}")
    colors = group_colors(kinds)
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for c in kinds:
        ax.plot(scalar.index, scalar[c], marker="o", ms=3, color=colors[c], label=f"{c}")
        ax.plot(chance.index, chance[c], ls="--", lw=1, color=colors[c], label=f"{c}: chance")
    ax.set_xticks(list(scalar.index))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean max share of a token id")
    ax.set_ylim(0, 1)
    ax.legend(loc="outside right center" if False else "center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    ax.set_title(title or "Vocabulary specialization vs chance")
    return fig


@styled
def saturation_vs_training(sat: pd.DataFrame, share: dict, *, reference: pd.DataFrame | None = None,
                           reference_label: str = "reported", chance: pd.DataFrame | None = None,
                           caption: str | None = None, title: str | None = None) -> Figure:
    """Router saturation (%) against the share of training, one line per layer, the final checkpoint
    drawn at 100 %; two panels (top-1, top-k).

    sat        `metrics.router_saturation(...)` frame, index (checkpoint, layer), columns top1, topk
    share      {checkpoint: share of training in [0, 1]} for every checkpoint in `sat`
    reference  optional frame with columns share, value (%) and metric ("top1" or "topk"),
               drawn as black markers (e.g. `moelab.papers.olmoe_saturation_reference()`)
    chance     optional `metrics.baselines.saturation_chance(final)` frame (index layer, columns
               top1, topk as fractions): each layer's chance level, a dashed line in its colour,
               labelled "chance (independent routing, same loads)"
    caption    optional text under the panels (e.g. where the reference comes from)
    """
    _need(sat, ["checkpoint", "layer", "top1", "topk"], "saturation_vs_training", "metrics.router_saturation(...)")
    if chance is not None:
        _need(chance, ["layer", "top1", "topk"], "saturation_vs_training", "metrics.baselines.saturation_chance(final)")
    steps = list(dict.fromkeys(sat.index.get_level_values("checkpoint")))
    missing = [s for s in steps if s not in share]
    if missing:
        raise KeyError(f"saturation_vs_training(): no share of training for checkpoints {missing}")
    import matplotlib

    cmap = matplotlib.colormaps[SEQUENTIAL_CMAP]
    layers = list(dict.fromkeys(sat.index.get_level_values("layer")))
    k = int(sat["k"].iloc[0]) if "k" in sat else None
    x = np.array([share[s] for s in steps] + [1.0]) * 100
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, col, name in zip(axes, ["top1", "topk"], ["top-1", f"top-{k}" if k else "top-k"]):
        for i, layer in enumerate(layers):
            y = list(sat.xs(layer, level="layer").reindex(steps)[col] * 100) + [100.0]
            color = cmap(i / max(len(layers) - 1, 1))
            ax.plot(x, y, marker="o", ms=3, color=color, label=f"layer {layer}")
            if chance is not None and layer in chance.index:
                ax.axhline(100 * float(chance.loc[layer, col]), color=color, ls="--", lw=1)
        if chance is not None:
            ax.plot([], [], color="0.4", ls="--", lw=1, label="chance (independent routing, same loads)")
        if reference is not None and len(reference):
            r = reference[reference["metric"] == col]
            if len(r):
                ax.plot(100 * r["share"], r["value"], "k*", ms=8, ls="none", label=reference_label)
        ax.set_xlim(0, 102)
        ax.set_xlabel("share of training (%)")
        ax.set_title(name)
    axes[0].set_ylabel("router saturation (%)")
    axes[0].set_ylim(0, 102)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h), labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    if caption:
        import textwrap

        fig.supxlabel(textwrap.fill(caption, 150), fontsize=7, ha="center")
    if title:
        fig.suptitle(title)
    return fig
