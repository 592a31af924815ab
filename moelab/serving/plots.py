"""
Figures of notebook 08 (routing -> serving). Each function takes the library's tables, returns a Figure.

    hit_rate_curves(table)        hit rate vs cache size per policy (mean over layers, min-max band), per trace
    offload_speed_plot(df)        offloaded decode tokens/s vs cache size per weight dtype, per trace
    imbalance_plot(windows)       EP imbalance over time windows, before / after rebalancing, per trace
    break_even_plot(df)           monthly cost, API vs self-hosted, by volume (one panel per utilisation)
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..plots.style import styled

_POLICY_STYLE = {"belady": ("k", "-", "Bélády (offline bound)"), "lru": ("#4477AA", "-", "LRU"),
                 "lfu": ("#EE6677", "--", "LFU"), "prefetch": ("#228833", ":", "prefetch (prev. layer)")}


def _panels(n):
    fig = Figure(figsize=(4.2 * n, 3.3), layout="constrained")
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


@styled
def hit_rate_curves(table, *, title=None) -> Figure:
    """table: `hit_rate_table(...)` rows with a `trace` column (one panel each). Per policy: the mean
    over layers (line) and the min-max over layers (shaded band), so the per-layer spread shows."""
    from matplotlib.patches import Patch

    traces = list(dict.fromkeys(table["trace"])) if "trace" in table else [None]
    fig, axes = _panels(len(traces))
    for ax, tr in zip(axes, traces):
        d = table if tr is None else table[table["trace"] == tr]
        m = d.groupby(["policy", "capacity"]).hit_rate.agg(["mean", "min", "max"]).reset_index()
        for pol, g in m.groupby("policy"):
            c, ls, lab = _POLICY_STYLE.get(pol, (None, "-", pol))
            line, = ax.plot(g.capacity, g["mean"], ls, color=c, marker="o", ms=3, label=lab)
            ax.fill_between(g.capacity, g["min"], g["max"], color=line.get_color(), alpha=0.15, lw=0)
        E = int(d.capacity.max())
        ax.plot(range(int(d.capacity.min()), E + 1), [c / E for c in range(int(d.capacity.min()), E + 1)],
                color="0.6", lw=0.8, label="C/E (iid uniform)")
        n = d.layer.nunique() if "layer" in d else 1
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + [Patch(color="0.5", alpha=0.3, lw=0)], labels + [f"band: min-max over {n} layers"],
                  loc="lower right", fontsize=7)
        ax.set(xlabel="experts cached per layer (C)", ylabel="hit rate (line: mean over layers)", ylim=(0, 1.02),
               title=str(tr) if tr is not None else None)
    if title:
        fig.suptitle(title)
    return fig


@styled
def offload_speed_plot(df, *, title=None) -> Figure:
    """df columns: trace, dtype, capacity, tokens_per_s (and optional fits bool)."""
    traces = list(dict.fromkeys(df["trace"]))
    fig, axes = _panels(len(traces))
    for ax, tr in zip(axes, traces):
        for dt, g in df[df.trace == tr].groupby("dtype", sort=False):
            ax.plot(g.capacity, g.tokens_per_s, marker="o", ms=3, label=dt)
            if "fits" in g:
                ok = g[g.fits]
                ax.scatter(ok.capacity, ok.tokens_per_s, s=30, facecolors="none", edgecolors="k", zorder=3)
        ax.set(xlabel="experts cached per layer (C)", ylabel="decode tokens/s (batch 1, LRU)", yscale="log", title=tr)
    axes[0].legend(title="weights (circled: fits the GPU)")
    if title:
        fig.suptitle(title)
    return fig


@styled
def imbalance_plot(windows, *, title=None) -> Figure:
    """windows: `imbalance_over_windows(...)` rows with a `trace` column (mean over layers per window), or
    per-window rows already averaged, with columns `<placement>_mean_over_layers`."""
    traces = list(dict.fromkeys(windows["trace"]))
    fig, axes = _panels(len(traces))
    labels = {"contiguous": "contiguous", "balanced_previous": "EPLB, refit every window",
              "balanced_global": "EPLB, fit on whole trace"}
    for ax, tr in zip(axes, traces):
        d = windows[windows.trace == tr]
        if "contiguous_mean_over_layers" in d:
            m = d.set_index("window")[[f"{c}_mean_over_layers" for c in labels]].set_axis(list(labels), axis=1)
        else:
            m = d.groupby("window")[list(labels)].mean()
        for col, lab in labels.items():
            ax.plot(m.index, m[col], label=lab, lw=1)
        ax.axhline(1, color="0.6", lw=0.8)
        ax.set(xlabel="window", ylabel="max / mean GPU load (mean over layers)", title=tr)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig


@styled
def break_even_plot(df, *, title=None) -> Figure:
    """df from `break_even_table` (or `report.break_even_sweep`) with a `setup` column (one line per setup)
    plus the API line; with a `utilisation` column, one panel per utilisation (shared axes)."""
    us = list(dict.fromkeys(df["utilisation"])) if "utilisation" in df else [None]
    fig = Figure(figsize=(3.4 * len(us) + 0.6, 3.4), layout="constrained")
    axes = fig.subplots(1, len(us), sharey=True, squeeze=False)[0]
    colors = {s: f"C{i}" for i, s in enumerate(dict.fromkeys(df["setup"]))}
    for ax, u in zip(axes, us):
        d = df if u is None else df[df["utilisation"] == u]
        first = True
        for setup, g in d.groupby("setup", sort=False):
            if first:
                ax.plot(g.volume, g.api_cost, "k--", label="API")
                first = False
            ax.step(g.volume, g.self_hosted_cost, where="post", color=colors[setup], label=setup)
        ax.set(xscale="log", yscale="log", xlabel="tokens per month",
               title=None if u is None else f"GPU utilisation {u:.0%}")
    axes[0].set_ylabel("$ per month")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
