"""One function per figure kind; each returns a matplotlib Figure and never shows it.

    >>> import numpy as np, moelab
    >>> t = moelab.RoutingTrace.from_arrays(np.random.default_rng(0).integers(0, 8, (50, 4, 1)), num_experts=8)
    >>> fig = moelab.plots.load_heatmap(t)
    >>> moelab.plots.save(fig, "load_heatmap")                    # doctest: +SKIP

Each takes either a trace (and computes its metric) or the DataFrame a
`moelab.metrics` function returned, so a notebook can filter the frame first.
Figures are built with `matplotlib.figure.Figure`, not pyplot: nothing is
registered globally, and they display in Jupyter as they are.

load_heatmap              layer x expert load fractions                     metrics.expert_load
domain_distribution_bars  Mixtral Fig. 7: panels for layers, bars per expert per domain
repeat_rates_plot         Mixtral Table 5 per layer, per domain, vs random   metrics.repeat_rates
coactivation_heatmap      OLMoE co-activation matrix of one layer           metrics.coactivation
specialization_bars       OLMoE domain / vocabulary specialization           metrics.*_specialization
saturation_curve          OLMoE router saturation over checkpoints          metrics.router_saturation
agreement_plot            per-layer agreement of two traces                 metrics.agreement
transitions_heatmap       first choice at layer l -> layer l+1              metrics.layer_transitions
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .. import metrics
from ..routing_trace import RoutingTrace
from .style import SEQUENTIAL_CMAP, expert_colors, group_colors, styled

__all__ = [
    "load_heatmap",
    "domain_distribution_bars",
    "repeat_rates_plot",
    "coactivation_heatmap",
    "specialization_bars",
    "saturation_curve",
    "agreement_plot",
    "transitions_heatmap",
]


def _frame(obj, fn, name, **kwargs) -> pd.DataFrame:
    if isinstance(obj, RoutingTrace):
        return fn(obj, **kwargs)
    if isinstance(obj, pd.DataFrame):
        return obj
    raise TypeError(f"{name}() takes a RoutingTrace or the DataFrame of metrics.{fn.__name__}; got {type(obj).__name__}")


def _need(df: pd.DataFrame, names, name: str, source: str):
    have = set(df.columns) | set(n for n in df.index.names if n is not None)
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(
            f"{name}() needs {missing} in the frame (it has {sorted(map(str, have))}); pass the output of {source}"
        )


def _heatmap(ax, fig, mat, *, xlabel, ylabel, yticks, cbar_label, vmin=None, vmax=None, annotate=None):
    im = ax.imshow(mat, aspect="auto", cmap=SEQUENTIAL_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    E = mat.shape[1]
    ax.set_xticks(range(E) if E <= 32 else range(0, E, max(E // 16, 1)))
    ax.set_yticks(range(len(yticks)) if len(yticks) <= 40 else range(0, len(yticks), max(len(yticks) // 20, 1)))
    ax.set_yticklabels([str(yticks[i]) for i in ax.get_yticks().astype(int)])
    fig.colorbar(im, ax=ax, label=cbar_label)
    if annotate is None:
        annotate = mat.size <= 100
    if annotate:
        lo, hi = np.nanmin(mat), np.nanmax(mat)
        for (i, j), v in np.ndenumerate(mat):
            if np.isfinite(v):
                light = (v - lo) / (hi - lo + 1e-12) > 0.6
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if light else "white")
    return im


def shared_note(n: int) -> str:
    """The line a load figure carries when the model also has `n` shared experts.

        >>> shared_note(2)
        '+2 shared experts run for every token (not shown)'
    """
    return f"+{n} shared expert{'s' if n != 1 else ''} run for every token (not shown)"


def shared_count(obj, shared_experts: int | None = None) -> int:
    """Shared experts per MoE layer: the explicit count, else a trace's meta["shared_experts"], else 0."""
    if shared_experts is not None:
        return int(shared_experts)
    return int((obj.meta.get("shared_experts") or 0) if isinstance(obj, RoutingTrace) else 0)


@styled
def load_heatmap(load, *, first_only: bool = False, title: str | None = None,
                 shared_experts: int | None = None) -> Figure:
    """Heatmap of the fraction of assignments each expert gets, layers x experts.

        >>> fig = load_heatmap(trace)                               # doctest: +SKIP

    `load` is a trace or the frame of `metrics.expert_load` (index (layer, expert)).
    Only routed experts are shown; when the model has shared experts (a trace's
    meta["shared_experts"], or `shared_experts=` for a frame) a note below says so.
    """
    df = _frame(load, metrics.expert_load, "load_heatmap", first_only=first_only)
    _need(df, ["layer", "expert", "fraction"], "load_heatmap", "metrics.expert_load(trace)")
    mat = df["fraction"].unstack("expert")                          # (layers, E)
    fig = Figure(figsize=(min(1.2 + 0.45 * mat.shape[1], 16.0), 1.2 + 0.22 * mat.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(ax, fig, mat.to_numpy(), xlabel="expert", ylabel="layer", yticks=list(mat.index),
             cbar_label="fraction of assignments", annotate=False)
    ax.set_title(title or f"Expert load (uniform = {1 / mat.shape[1]:.3f})")
    n_shared = shared_count(load, shared_experts)
    if n_shared > 0:
        fig.supxlabel(shared_note(n_shared), fontsize=8, color="0.35")
    return fig


def _bars(ax, frame, value, groups, colors, E):
    """Grouped bars: x = expert, one bar per group."""
    width = 0.8 / max(len(groups), 1)
    for gi, g in enumerate(groups):
        s = frame.xs(g, level=0)[value] if g is not None else frame[value]
        x = np.asarray(s.index.get_level_values("expert"))
        ax.bar(x - 0.4 + width * (gi + 0.5), s.to_numpy(), width=width, color=colors[g], label=str(g))
    ax.set_xticks(range(E) if E <= 32 else range(0, E, max(E // 16, 1)))
    ax.set_xlabel("expert")


@styled
def domain_distribution_bars(dist, *, by: str = "domain", layers=None, title: str | None = None) -> Figure:
    """Mixtral Figure 7: one panel per layer, bars per expert per domain, dashed 1/E.

        >>> fig = domain_distribution_bars(trace)                   # doctest: +SKIP

    `dist` is a trace (with a `by` column) or the frame of `metrics.domain_distribution`.
    """
    df = _frame(dist, metrics.domain_distribution, "domain_distribution_bars", by=by, layers=layers)
    _need(df, ["layer", "expert", "fraction"], "domain_distribution_bars", "metrics.domain_distribution(trace)")
    gname = df.index.names[0]
    groups = list(dict.fromkeys(df.index.get_level_values(0)))
    colors = group_colors(groups)
    layer_vals = list(dict.fromkeys(df.index.get_level_values("layer")))
    E = int(df.index.get_level_values("expert").max()) + 1
    fig = Figure(figsize=(3.2 * len(layer_vals) + 1.0, 3.2), layout="constrained")
    axes = fig.subplots(1, len(layer_vals), sharey=True, squeeze=False)[0]
    for ax, layer in zip(axes, layer_vals):
        sub = df.xs(layer, level="layer")
        _bars(ax, sub, "fraction", groups, colors, E)
        ax.axhline(1.0 / E, color="0.3", ls="--", lw=1, label="uniform 1/E")
        ax.set_title(f"layer {layer}")
    axes[0].set_ylabel("selection proportion")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title=gname)
    if title:
        fig.suptitle(title)
    return fig


@styled
def repeat_rates_plot(rates, *, by=None, title: str | None = None) -> Figure:
    """Mixtral Table 5 per layer: first-choice (solid) and any-shared (dashed) repeat rates.

        >>> fig = repeat_rates_plot(moelab.metrics.repeat_rates(trace, by="domain"))  # doctest: +SKIP

    One colour per group (domain); grey dotted lines are the random-routing
    baselines of the same E and k. `rates` is a trace or the frame of
    `metrics.repeat_rates`.
    """
    df = _frame(rates, metrics.repeat_rates, "repeat_rates_plot", by=by)
    _need(df, ["layer", "first", "any", "first_random", "any_random"], "repeat_rates_plot", "metrics.repeat_rates(trace)")
    grouped = df.index.nlevels > 1
    groups = list(dict.fromkeys(df.index.get_level_values(0))) if grouped else [None]
    colors = group_colors(groups) if grouped else {None: "#0072B2"}
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for g in groups:
        sub = df.xs(g, level=0) if grouped else df
        x = sub.index.get_level_values("layer")
        lab = "" if g is None else f"{g}: "
        ax.plot(x, 100 * sub["first"], color=colors[g], marker="o", ms=3, label=f"{lab}first choice")
        ax.plot(x, 100 * sub["any"], color=colors[g], ls="--", marker="s", ms=3, label=f"{lab}any of top-k")
    ax.axhline(100 * df["first_random"].iloc[0], color="0.4", ls=":", lw=1.2, label="random: first")
    ax.axhline(100 * df["any_random"].iloc[0], color="0.4", ls="-.", lw=1.2, label="random: any")
    ax.set_xlabel("layer")
    ax.set_ylabel("consecutive tokens repeating (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "Expert repetition of consecutive tokens")
    return fig


def _pick_layer(df, layer, name):
    layers = list(dict.fromkeys(df.index.get_level_values("layer")))
    if not layers:
        raise ValueError(f"{name}(): the frame has no layers")
    layer = layers[0] if layer is None else layer
    if layer not in layers:
        raise KeyError(f"{name}(): layer {layer!r} is not in the frame; it has layers {layers}")
    return layer


@styled
def coactivation_heatmap(coact, layer=None, *, mask_diagonal: bool = True, title: str | None = None) -> Figure:
    """OLMoE co-activation of one layer: P(column expert | row expert), in %.

        >>> fig = coactivation_heatmap(trace, layer=15)             # doctest: +SKIP

    `coact` is a trace or the frame of `metrics.coactivation`. The diagonal
    (always 100 %) is hidden unless `mask_diagonal=False`.
    """
    df = _frame(coact, metrics.coactivation, "coactivation_heatmap")
    layer = _pick_layer(df, layer, "coactivation_heatmap")
    mat = df.loc[layer].to_numpy(dtype=float) * 100                 # (E, E)
    if mask_diagonal:
        np.fill_diagonal(mat, np.nan)
    E = mat.shape[0]
    fig = Figure(figsize=(1.5 + 0.4 * E, 1.0 + 0.4 * E) if E <= 16 else (8, 7), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(ax, fig, mat, xlabel="co-activated expert j", ylabel="expert i", yticks=list(range(E)),
             cbar_label="P(j | i) (%)", vmin=0)
    ax.set_title(title or f"Expert co-activation, layer {layer}")
    return fig


@styled
def transitions_heatmap(trans, layer=None, *, title: str | None = None) -> Figure:
    """First choice at layer l (rows) -> first choice at the next MoE layer (columns).

        >>> fig = transitions_heatmap(trace, layer=0)               # doctest: +SKIP

    `trans` is a trace or the frame of `metrics.layer_transitions` (row-normalised or counts).
    """
    df = _frame(trans, metrics.layer_transitions, "transitions_heatmap")
    layer = _pick_layer(df, layer, "transitions_heatmap")
    mat = df.loc[layer].to_numpy(dtype=float)
    E = mat.shape[0]
    normalised = np.allclose(np.nansum(mat, 1)[np.nansum(mat, 1) > 0], 1.0)
    fig = Figure(figsize=(1.5 + 0.4 * E, 1.0 + 0.4 * E) if E <= 16 else (8, 7), layout="constrained")
    ax = fig.add_subplot()
    _heatmap(ax, fig, mat, xlabel="expert at next layer", ylabel=f"expert at layer {layer}",
             yticks=list(range(E)), cbar_label="P(next | this)" if normalised else "tokens", vmin=0)
    ax.set_title(title or f"First-choice transitions from layer {layer}")
    return fig


@styled
def specialization_bars(spec, *, layers=None, title: str | None = None) -> Figure:
    """OLMoE specialization bars: per expert, per domain (or per layer for vocabulary).

        >>> fig = specialization_bars(moelab.metrics.domain_specialization(trace))  # doctest: +SKIP

    Takes the frame of `metrics.domain_specialization` (one panel per layer,
    bars per domain) or of `metrics.vocab_specialization` (one panel per layer,
    one bar per expert, in the expert's colour). A dashed line marks random routing.
    """
    if not isinstance(spec, pd.DataFrame):
        raise TypeError(
            "specialization_bars() takes the DataFrame of metrics.domain_specialization or "
            f"metrics.vocab_specialization; got {type(spec).__name__}"
        )
    _need(spec, ["layer", "expert", "specialization", "random"], "specialization_bars",
          "metrics.domain_specialization(trace) or metrics.vocab_specialization(trace)")
    domain = spec.index.nlevels == 3
    all_layers = list(dict.fromkeys(spec.index.get_level_values("layer")))
    if layers is None:
        layers = all_layers if len(all_layers) <= 3 else [all_layers[0], all_layers[(len(all_layers) - 1) // 2], all_layers[-1]]
    E = int(spec.index.get_level_values("expert").max()) + 1
    fig = Figure(figsize=(3.2 * len(layers) + 1.0, 3.2), layout="constrained")
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        sub = spec.xs(layer, level="layer")
        if domain:
            groups = list(dict.fromkeys(spec.index.get_level_values(0)))
            _bars(ax, sub, "specialization", groups, group_colors(groups), E)
        else:
            ax.bar(sub.index.get_level_values("expert"), sub["specialization"], color=expert_colors(E))
            ax.set_xlabel("expert")
        ax.axhline(float(spec["random"].iloc[0]), color="0.3", ls="--", lw=1, label="random")
        ax.set_title(f"layer {layer}")
    axes[0].set_ylabel("domain specialization" if domain else "vocabulary specialization")
    if domain:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", title=spec.index.names[0])
    if title:
        fig.suptitle(title)
    return fig


@styled
def saturation_curve(sat, *, title: str | None = None) -> Figure:
    """OLMoE router saturation: % of the final checkpoint's experts already chosen, per layer.

        >>> fig = saturation_curve(moelab.metrics.router_saturation(ckpts, final))  # doctest: +SKIP

    Two panels (top-1 and top-k); x = checkpoint (in the frame's order), one
    line per layer, coloured from early (dark) to late (light) layers.
    """
    if not isinstance(sat, pd.DataFrame):
        raise TypeError(f"saturation_curve() takes the DataFrame of metrics.router_saturation; got {type(sat).__name__}")
    _need(sat, ["checkpoint", "layer", "top1", "topk"], "saturation_curve", "metrics.router_saturation(...)")
    import matplotlib

    cmap = matplotlib.colormaps[SEQUENTIAL_CMAP]
    steps = list(dict.fromkeys(sat.index.get_level_values("checkpoint")))
    layers = list(dict.fromkeys(sat.index.get_level_values("layer")))
    k = int(sat["k"].iloc[0]) if "k" in sat else None
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(len(steps))
    for ax, col, name in zip(axes, ["top1", "topk"], ["top-1", f"top-{k}" if k else "top-k"]):
        for i, layer in enumerate(layers):
            y = sat.xs(layer, level="layer").reindex(steps)[col] * 100
            ax.plot(x, y, marker="o", ms=3, color=cmap(i / max(len(layers) - 1, 1)), label=str(layer))
        ax.set_xticks(x, [str(s) for s in steps])
        ax.set_xlabel("checkpoint")
        ax.set_title(name)
    axes[0].set_ylabel("router saturation (%)")
    axes[0].set_ylim(0, 100)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="layer",
               ncols=1 if len(layers) <= 16 else 2)
    if title:
        fig.suptitle(title)
    return fig


@styled
def agreement_plot(agree, *, labels=None, title: str | None = None) -> Figure:
    """Per-layer agreement of two traces: top1, topk_overlap, exact_set (in %).

        >>> fig = agreement_plot(moelab.metrics.agreement(a, b))    # doctest: +SKIP

    `agree` is a frame of `metrics.agreement`, or a dict {name: frame} to
    compare several pairs (e.g. several quantisations against bf16).
    """
    frames = agree if isinstance(agree, dict) else {None: agree}
    for f in frames.values():
        if not isinstance(f, pd.DataFrame):
            raise TypeError(f"agreement_plot() takes the DataFrame of metrics.agreement (or a dict of them); got {type(f).__name__}")
        _need(f, ["layer", "top1", "topk_overlap", "exact_set"], "agreement_plot", "metrics.agreement(a, b)")
    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    colors = group_colors(list(frames))
    styles = {"top1": ("-", "o"), "topk_overlap": ("--", "s"), "exact_set": (":", "^")}
    for name, f in frames.items():
        x = f.index.get_level_values("layer")
        for col, (ls, mk) in styles.items():
            lab = col if name is None else f"{name}: {col}"
            ax.plot(x, 100 * f[col], ls=ls, marker=mk, ms=3, color=colors[name] if name is not None else None, label=lab)
    ax.set_xlabel("layer")
    ax.set_ylabel("agreement (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "Routing agreement")
    return fig
