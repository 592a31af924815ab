"""Figures of routing interventions (notebook 07): ablation heatmaps, importance vs usage, frontiers.

    >>> from moelab.plots.interventions import ablation_heatmaps     # doctest: +SKIP
    >>> fig = ablation_heatmaps(moelab.interventions.ablation_sweep(model, tok))   # doctest: +SKIP

Inputs are the DataFrames of `moelab.interventions` (`ablation_sweep`, `frontier`) or small frames
built in the notebook; nothing here imports torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .style import group_colors, styled


@styled
def ablation_heatmaps(sweep: pd.DataFrame, value: str = "delta_ppl", *, domains=None, ncols: int = 4,
                      title: str | None = None) -> Figure:
    """One layer x expert heatmap of `value` (Δ perplexity when that expert is ablated) per domain."""
    df = sweep[sweep.layer >= 0]
    domains = list(dict.fromkeys(df.domain)) if domains is None else list(domains)
    nrows = math.ceil(len(domains) / ncols)
    fig = Figure(figsize=(3.2 * min(ncols, len(domains)), 2.5 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, min(ncols, len(domains)), squeeze=False)
    vals = df[value].to_numpy()
    hi = float(np.nanmax(np.abs(vals))) if len(vals) else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-max(hi * 0.2, 1e-9), vmax=max(hi, 1e-9))
    im = None
    for ax, d in zip(axes.flat, domains):
        mat = df[df.domain == d].pivot_table(index="layer", columns="expert", values=value)
        im = ax.imshow(mat.to_numpy(), aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
        ax.grid(False)
        ax.set_title(d, fontsize=9)
        ax.set_xticks(range(mat.shape[1]), [str(c) for c in mat.columns], fontsize=7)
        ax.set_yticks(range(mat.shape[0]), [str(i) for i in mat.index], fontsize=7)
        ax.set_xlabel("expert ablated", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
    for ax in list(axes.flat)[len(domains):]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, label={"delta_ppl": "Δ perplexity"}.get(value, value), shrink=0.8)
    fig.suptitle(title or "Perplexity change when one expert is ablated (routed around)")
    return fig


@styled
def importance_vs_usage(sweep: pd.DataFrame, value: str = "delta_ppl", *, title: str | None = None) -> Figure:
    """Scatter of each (domain, layer, expert): routing share vs Δ perplexity; Spearman ρ per domain."""
    df = sweep[sweep.layer >= 0]
    domains = list(dict.fromkeys(df.domain))
    colors = group_colors(domains)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for d in domains:
        sub = df[df.domain == d]
        rho = sub[["share", value]].corr(method="spearman").iloc[0, 1]
        ax.scatter(sub.share, sub[value], s=14, color=colors[d], label=f"{d} (ρ={rho:.2f})", alpha=0.8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("routing share of the expert in the domain (baseline)")
    ax.set_ylabel({"delta_ppl": "Δ perplexity when ablated"}.get(value, value))
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(title or "Does usage predict importance?")
    return fig


@styled
def frontier_plot(front: pd.DataFrame, *, y: str = "ppl", x: str = "flops_per_token", title: str | None = None) -> Figure:
    """Quality (`y`) vs compute (`x`) per intervention; dense baselines as dotted vertical lines."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    moe = front[front.kind == "moe"]
    ax.plot(moe[x], moe[y], "o", color="#0072B2")
    for _, r in moe.iterrows():
        ax.annotate(str(r.intervention), (r[x], r[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    par = moe[moe.pareto].sort_values(x)
    ax.plot(par[x], par[y], "-", color="#0072B2", alpha=0.5, label="Pareto front")
    for _, r in front[front.kind == "dense"].iterrows():
        ax.axvline(r[x], ls=":", color="#D55E00")
        ax.annotate(str(r.intervention) + "\n(quality not measured)", (r[x], ax.get_ylim()[1]), fontsize=6,
                    color="#D55E00", va="top", rotation=90, xytext=(2, -2), textcoords="offset points")
    ax.set_xlabel({"flops_per_token": "FLOPs per token (prefill, accounting)"}.get(x, x))
    ax.set_ylabel({"ppl": "held-out perplexity"}.get(y, y))
    ax.legend(fontsize=8)
    ax.set_title(title or "Quality vs compute")
    return fig


@styled
def replay_gap_plot(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bars per domain of perplexity columns (e.g. fp32, bf16, bf16 with fp32 routing replayed)."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    cols = list(table.columns)
    w = 0.8 / len(cols)
    xs = np.arange(len(table))
    for j, c in enumerate(cols):
        ax.bar(xs + (j - (len(cols) - 1) / 2) * w, table[c], w, label=c)
    ax.set_xticks(xs, table.index, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=8)
    ax.set_title(title or "bf16 vs fp32, and bf16 with fp32 routing replayed")
    return fig


@styled
def bias_sweep_plot(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Router bias on one expert: its traffic share (left) and Δ perplexity (right) vs the bias, per domain."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    a, b = fig.subplots(1, 2)
    colors = group_colors(list(dict.fromkeys(df.domain)))
    for d, sub in df.groupby("domain", sort=False):
        sub = sub.sort_values("bias")
        a.plot(sub.bias, sub.share, "o-", color=colors[d], label=d, ms=3)
        b.plot(sub.bias, sub.delta_ppl, "o-", color=colors[d], label=d, ms=3)
    a.set_xlabel("bias added to the expert's logit")
    a.set_ylabel("share of assignments to the expert")
    b.set_xlabel("bias added to the expert's logit")
    b.set_ylabel("Δ perplexity")
    b.set_yscale("symlog", linthresh=1.0)
    a.legend(fontsize=7)
    fig.suptitle(title or "Steering by router bias: how far to move traffic, and what it costs")
    return fig
