"""The notebooks' hand-built figures as functions: capacity drops, MoE vs dense, roofline, toy loads.

    >>> import pandas as pd
    >>> from moelab.plots.teaching import capacity_drops_plot
    >>> drops = pd.DataFrame({"layer": [0, 0], "batch_size": [512, 512], "capacity_factor": [1.0, 2.0],
    ...                       "dropped": [0.3, 0.05]}).set_index(["layer", "batch_size", "capacity_factor"])
    >>> fig = capacity_drops_plot(drops)                     # a Figure; nothing is shown

capacity_drops_plot   notebook 01: % of assignments dropped vs capacity factor, a line per
                      (layer, batch size), from `moelab.metrics.capacity_drops`
moe_vs_dense_bars     notebook 05: measured speed-up vs the FLOP and byte ratios, per
                      baseline and batch, from `moelab.bench.ratio_table`
roofline_cost_plot    notebook 05: decode tokens/s and $ per 1M tokens vs batch, roofline
                      curves (each labelled by its routing source) and a published reference
toy_load_heatmaps     the collapse lesson: per-layer load over training, one panel per
                      (balance loss, layer), from `moelab.toy.collapse_lesson`
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .style import group_colors, use_style

__all__ = ["capacity_drops_plot", "moe_vs_dense_bars", "roofline_cost_plot", "toy_load_heatmaps"]


def capacity_drops_plot(drops, title: str = "Dropped expert assignments", solid_batch=None) -> Figure:
    """Lines of 100 · dropped vs capacity factor per (layer, batch size); the largest batch solid."""
    d = drops["dropped"] if hasattr(drops, "columns") else drops
    layers = list(dict.fromkeys(d.index.get_level_values("layer")))
    batches = list(dict.fromkeys(d.index.get_level_values("batch_size")))
    numeric = [b for b in batches if not isinstance(b, str)]
    solid = solid_batch if solid_batch is not None else (max(numeric) if numeric else batches[-1])
    with use_style():
        fig = Figure(figsize=(7.0, 3.4), layout="constrained")
        ax = fig.add_subplot()
        colors = group_colors(layers)
        for (bs, layer), s in d.groupby(["batch_size", "layer"]):
            s = s.droplevel(["layer", "batch_size"]).sort_index()
            ax.plot(s.index, 100 * s.values, marker="o", ms=3, ls="-" if bs == solid else "--",
                    color=colors[layer], label=f"layer {layer}, batch {bs}")
        ax.set_xlabel("capacity factor cf")
        ax.set_ylabel("assignments dropped (%)")
        ax.set_title(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncols=1 if len(layers) <= 8 else 2, fontsize=7)
    return fig


def moe_vs_dense_bars(ratios, title: str | None = None) -> Figure:
    """Per phase, bars of measured / FLOP-ratio / byte-ratio speed-up for each (baseline, batch).

    `ratios` is `bench.ratio_table(...)` (columns baseline, phase, batch, measured, flop_ratio,
    byte_ratio; several MoE implementations allowed: the fastest is shown).
    """
    best = ratios.sort_values("measured").groupby(["baseline", "phase", "batch"]).tail(1)
    phases = [p for p in ("prefill", "decode") if p in set(best.phase)] or sorted(set(best.phase))
    with use_style():
        fig = Figure(figsize=(4.5 * len(phases), 3.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(phases), sharey=True))
        for ax, phase in zip(axes, phases):
            sub = best[best.phase == phase].sort_values(["baseline", "batch"])
            labels = [f"{str(b).removeprefix('dense_')}\nB={n}" for b, n in zip(sub.baseline, sub.batch)]
            x = np.arange(len(sub))
            ax.bar(x - 0.27, sub.measured, 0.27, color="#4477AA", label="measured")
            ax.bar(x, sub.flop_ratio, 0.27, color="#CCBB44", label="FLOP ratio (compute bound)")
            ax.bar(x + 0.27, sub.byte_ratio, 0.27, color="#AA3377", label="byte ratio (memory bound)")
            ax.axhline(1, color="0.3", lw=1)
            ax.set_xticks(x, labels)
            ax.set_title(f"{phase}: MoE speed-up over dense")
        axes[0].set_ylabel("dense time / MoE time")
        axes[-1].legend(loc="upper left", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def roofline_cost_plot(roofs: dict, published=None, published_usd=None, title: str | None = None) -> Figure:
    """Left: decode tokens/s vs batch; right: $ per 1M output tokens. One line per roofline.

    `roofs` is {label: decode_roofline(...) DataFrame}; label each by its routing source (e.g.
    "uniform routing", "Mixtral-like synthetic router"). `published` is a
    `moelab.compute.PublishedResult` drawn as a dashed black reference (with `published_usd`,
    e.g. `compare_published(...).reported_usd_per_million`, on the right).
    """
    with use_style():
        fig = Figure(figsize=(9.0, 3.5), layout="constrained")
        ax, ax2 = fig.subplots(1, 2)
        names = list(roofs) + ["published"]
        colors = group_colors(names)
        batches = sorted({int(b) for df in roofs.values() for b in df.batch})
        for name, df in roofs.items():
            ax.plot(df.batch, df.tokens_per_s, marker="o", ms=3, color=colors[name], label=f"roofline, {name}")
            if "usd_per_million_tokens" in df:
                ax2.plot(df.batch, df.usd_per_million_tokens, marker="o", ms=3, color=colors[name],
                         label=f"roofline, {name}")
        if published is not None:
            ax.plot(published.batch_sizes, published.tokens_per_s, marker="s", color="black", ls="--",
                    label=f"published ({published.name})")
            if published_usd is not None:
                ax2.plot(published.batch_sizes, list(published_usd), marker="s", color="black", ls="--", label="published")
        for a in (ax, ax2):
            a.set_xscale("log", base=2)
            a.set_xticks(batches, [str(b) for b in batches])
            a.set_xlabel("batch (sequences decoding together)")
            a.set_yscale("log")
            a.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "2358" else ""))
        ax.set_ylabel("output tokens / s")
        ax2.set_ylabel("\\$ per 1M output tokens")
        ax.set_title(title or "Decode throughput (roofline upper bound)", fontsize=9)
        ax2.set_title("Serving cost", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def toy_load_heatmaps(runs: dict, title: str = "Per-layer expert load over training") -> Figure:
    """Small multiples: a row per balance loss, a column per layer; each panel steps x experts,
    colour = share of that layer's assignments (1/E = balanced). `runs` = {mode: ToyRun}."""
    modes = list(runs)
    L, E = runs[modes[0]].loads.shape[1:]
    with use_style():
        fig = Figure(figsize=(2.2 * L + 1.0, 1.7 * len(modes) + 0.6), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(modes), L, squeeze=False))
        im = None
        vmax = max(2.0 / E, max(float(r.loads.max()) for r in runs.values()))
        for r, mode in enumerate(modes):
            run = runs[mode]
            for l in range(L):
                ax = axes[r, l]
                im = ax.imshow(run.loads[:, l, :].T, aspect="auto", cmap="cividis", vmin=0, vmax=vmax,
                               interpolation="nearest", origin="lower")
                ax.set_yticks(range(E))
                if r == 0:
                    ax.set_title(f"layer {l}", fontsize=8)
                if l == 0:
                    ax.set_ylabel(f"{mode}\nexpert", fontsize=8)
                if r == len(modes) - 1:
                    ax.set_xlabel("training step", fontsize=8)
                cv = run.cv()[l]
                ax.text(0.98, 0.95, f"CV {cv:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        color="white")
        fig.colorbar(im, ax=axes, shrink=0.8, label=f"share of assignments (balanced = {1 / E:.2f})")
        fig.suptitle(title, fontsize=9)
    return fig
