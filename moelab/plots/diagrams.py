"""Three teaching pictures drawn with matplotlib code, so they regenerate with the figures.

    >>> from moelab.plots.diagrams import moe_block_diagram, decode_crossover_batch
    >>> fig = moe_block_diagram()                              # a Figure; nothing is shown
    >>> from moelab.compute import mixtral_8x7b_config
    >>> round(decode_crossover_batch(mixtral_8x7b_config(), "A100-80GB-SXM", context=0))   # fp16, uniform routing
    559

moe_block_diagram       where the MoE sits in a decoder block: norm, router, top-k, experts,
                        weighted sum, residual add
dispatch                GShard/Switch dispatch of one batch into per-expert buffers of
                        C = ⌈cf·k·T/E⌉ slots: which assignments are kept and which overflow
capacity_diagram        that dispatch drawn: each expert's buffer filling, overflow above it
decode_step_costs       bytes read and FLOPs of one decode step per batch size (moelab.compute)
decode_crossover_batch  the batch where a decode step stops being memory-bound
decode_roofline_diagram bytes and FLOPs (as times) against batch, with the crossover marked
"""

from __future__ import annotations

from math import ceil

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from .style import expert_colors, use_style

__all__ = ["moe_block_diagram", "dispatch", "capacity_diagram", "decode_step_costs", "decode_crossover_batch",
           "decode_roofline_diagram"]


# ------------------------------------------------------------------------ the block
def _box(ax, x, y, w, h, text, color="#DDDDDD", **kw):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.2", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=kw.get("fontsize", 8))


def _arrow(ax, a, b, **kw):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=9, color=kw.get("color", "0.25"),
                                 lw=kw.get("lw", 1), ls=kw.get("ls", "-"), shrinkA=2, shrinkB=2))


def moe_block_diagram(num_experts: int = 8, top_k: int = 2, chosen=(1, 6), weights=(0.7, 0.3)) -> Figure:
    """One decoder layer with its MoE: h → norm → router → top-k → chosen experts → Σ wᵢ Eᵢ(x) → + h.

    The chosen experts are drawn in their moelab colour, the others grey; the attention
    sub-block sits below, as in every Mixtral/OLMoE/DeepSeek layer (`model.layers[i].mlp`
    holds the router `gate` and the `experts`).
    """
    if len(chosen) != top_k or len(weights) != top_k or not all(0 <= c < num_experts for c in chosen):
        raise ValueError(f"chosen={chosen!r} and weights={weights!r} must hold top_k={top_k} experts in [0, {num_experts})")
    colors = expert_colors(num_experts)
    with use_style():
        fig = Figure(figsize=(8.0, 4.2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_xlim(0, 10), ax.set_ylim(0, 6.2), ax.axis("off")
        _box(ax, 1.0, 0.5, 1.4, 0.5, "h (from attention\n+ residual)")
        _box(ax, 1.0, 1.6, 1.4, 0.5, "RMSNorm", "#EEEEEE")
        _box(ax, 1.0, 2.8, 1.4, 0.6, "router\nlogits = x W_gᵀ", "#CCE5FF")
        _box(ax, 1.0, 4.1, 1.4, 0.6, f"softmax, top-{top_k},\nrenormalise", "#CCE5FF")
        _arrow(ax, (1.0, 0.75), (1.0, 1.35)), _arrow(ax, (1.0, 1.85), (1.0, 2.5)), _arrow(ax, (1.0, 3.1), (1.0, 3.8))
        xs = np.linspace(3.0, 7.0, num_experts)
        for e, x in enumerate(xs):
            on = e in chosen
            _box(ax, x, 2.8, 0.42, 1.3, f"E{e}", colors[e] if on else "#F2F2F2", fontsize=7)
            _arrow(ax, (1.7, 1.6), (x, 2.15), color="0.3" if on else "0.85", lw=1.2 if on else 0.6, ls="-" if on else ":")
        _box(ax, 8.4, 2.8, 1.3, 0.7, "Σ wᵢ · Eᵢ(x)\nweighted sum", "#FFF2CC")
        for c, w in zip(chosen, weights):
            _arrow(ax, (xs[c], 3.45), (7.75, 2.9), color=colors[c], lw=1.5)
            ax.text(xs[c], 3.6, f"w={w:g}", ha="center", fontsize=7, color=colors[c])
        _arrow(ax, (1.7, 4.1), (7.9, 3.15), color="#3366AA", ls="--")
        ax.text(4.9, 4.15, f"weights w of the top-{top_k}", fontsize=7, color="#3366AA", ha="center")
        _box(ax, 8.4, 4.6, 0.6, 0.5, "+", "#FFFFFF", fontsize=11)
        _arrow(ax, (8.4, 3.15), (8.4, 4.35))
        ax.plot([0.3, 0.12, 0.12], [0.5, 0.5, 4.85], color="0.55", lw=1)          # residual path, around the MoE
        _arrow(ax, (0.12, 4.85), (8.1, 4.65), color="0.55")
        ax.text(4.2, 4.95, "residual: h skips the MoE and is added back", fontsize=7, color="0.4", ha="center")
        _box(ax, 8.4, 5.7, 1.4, 0.45, "to the next layer")
        _arrow(ax, (8.4, 4.85), (8.4, 5.47))
        ax.text(5.0, 1.3, f"only {top_k} of {num_experts} experts run for this token", ha="center", fontsize=8,
                style="italic")
        ax.set_title("Where the MoE sits: the MLP of a decoder layer, replaced by router + experts", fontsize=9)
    return fig


# ------------------------------------------------------------------- capacity buffers
def dispatch(experts, num_experts: int, capacity_factor: float):
    """GShard dispatch of one batch: (capacity C, slot (tokens, k) int, kept (tokens, k) bool).

        >>> C, slot, kept = dispatch(np.array([[0, 1], [0, 1], [0, 2]]), 4, 1.0)   # C = ⌈1·2·3/4⌉ = 2
        >>> C, kept.tolist()
        (2, [[True, True], [True, True], [False, True]])

    Rank 0 of every token is served first (in token order), then rank 1, ... (as
    `moelab.metrics.capacity_drops` counts); `slot` is the position in the expert's queue,
    kept = slot < C.
    """
    ex = np.asarray(experts, dtype=np.int64)
    if ex.ndim == 1:
        ex = ex[:, None]
    T, k = ex.shape
    C = int(ceil(round(float(capacity_factor) * k * T / num_experts, 9)))
    slot = np.zeros_like(ex)
    fill = np.zeros(num_experts, np.int64)
    for r in range(k):
        for t in range(T):
            slot[t, r] = fill[ex[t, r]]
            fill[ex[t, r]] += 1
    return C, slot, slot < C


def capacity_diagram(experts, num_experts: int, capacity_factor: float = 1.0, title: str | None = None) -> Figure:
    """Each expert's buffer of C slots filling with one batch's assignments; overflow hatched above.

    `experts` is one batch and layer of a routing, (tokens, k) (e.g. `trace.experts[:16, 0]`).
    Each assignment is a square coloured by its token's first-choice expert, labelled with the
    token index; rank-1 assignments are lighter.
    """
    ex = np.asarray(experts, dtype=np.int64)
    ex = ex[:, None] if ex.ndim == 1 else ex
    C, slot, kept = dispatch(ex, num_experts, capacity_factor)
    colors = expert_colors(num_experts)
    T, k = ex.shape
    top = max(C, int(slot.max()) + 1 if slot.size else 0)
    with use_style():
        fig = Figure(figsize=(max(4.0, 1.0 + 0.75 * num_experts), 1.2 + 0.32 * top), layout="constrained")
        ax = fig.add_subplot()
        for e in range(num_experts):
            ax.add_patch(Rectangle((e - 0.4, 0), 0.8, C, fill=False, ec="0.2", lw=1.2))
        for t in range(T):
            for r in range(k):
                e, s = ex[t, r], slot[t, r]
                ax.add_patch(Rectangle((e - 0.36, s + 0.06), 0.72, 0.88, fc=colors[ex[t, 0]], alpha=1.0 if r == 0 else 0.5,
                                       ec="#CC0000" if not kept[t, r] else "none", hatch="///" if not kept[t, r] else None,
                                       lw=1))
                ax.text(e, s + 0.5, str(t), ha="center", va="center", fontsize=6)
        ax.axhline(C, color="#CC0000", lw=1, ls="--")
        ax.text(num_experts - 0.5, C + 0.1, f"capacity C = {C}", color="#CC0000", ha="right", va="bottom", fontsize=7)
        ax.set_xlim(-0.6, num_experts - 0.4), ax.set_ylim(0, top + 1)
        ax.set_xticks(range(num_experts), [f"E{e}" for e in range(num_experts)])
        ax.set_yticks([])
        dropped = int((~kept).sum())
        ax.set_title(title or f"{T} tokens × top-{k} into {num_experts} buffers, cf = {capacity_factor:g}:\n"
                              f"{dropped} of {T * k} assignments overflow (hatched)", fontsize=8)
        fig.dropped = dropped                                   # the plotted numbers, for tests and captions
        fig.capacity = C
    return fig


# ------------------------------------------------------------------------ decode roofline
def decode_step_costs(config, gpu="A100-80GB-SXM", batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                      context: int = 0, dtype="fp16", experts_touched="uniform"):
    """`moelab.compute.decode_roofline` per batch: bytes, flops, t_memory_s, t_compute_s, bound."""
    from ..compute import decode_roofline

    return decode_roofline(config, gpu, list(batch_sizes), context=context, dtype=dtype, experts_touched=experts_touched)


def decode_crossover_batch(config, gpu="A100-80GB-SXM", context: int = 0, dtype="fp16",
                           experts_touched="uniform", max_batch: float = 1e6) -> float:
    """The (real-valued) batch B where a decode step's compute time equals its memory time.

    Below it, reading weights and KV cache dominates (memory-bound: more sequences are almost
    free); above it, FLOPs do. Found by bisection on t_compute(B) − t_memory(B), which
    grows with B; `experts_touched` as in `decode_roofline` ("uniform" or a number).
    """
    from ..compute import forward_flops, get_hardware, kv_cache_bytes, model_shape
    from ..compute.memory import _default_kv_dtype
    from ..compute.roofline import weight_bytes_read

    s, hw = model_shape(config), get_hardware(gpu)
    bw, peak = hw.bandwidth_gbs * 1e9, hw.peak_tflops * 1e12
    kv = _default_kv_dtype(dtype)

    def gap(B: float) -> float:
        lo, hi = int(np.floor(B)), int(np.floor(B)) + 1                          # linear between integer batches
        def at(b):
            b = max(b, 1)
            mem = (weight_bytes_read(s, b, dtype, experts_touched) + kv_cache_bytes(s, b, context, kv)) / bw
            return forward_flops(s, batch=b, seq_len=1, past=context, logits="last").total / peak - mem
        return at(lo) + (B - lo) * (at(hi) - at(lo))

    lo, hi = 1.0, 2.0
    if gap(lo) >= 0:
        return lo
    while gap(hi) < 0:
        lo, hi = hi, hi * 2
        if hi > max_batch:
            raise ValueError(f"decode stays memory-bound up to batch {max_batch:g} on {gpu}")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def decode_roofline_diagram(config=None, gpu="A100-80GB-SXM", context: int = 0, dtype="fp16",
                            batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), title: str | None = None) -> Figure:
    """Left: GB read and TFLOPs per decode step vs batch. Right: the time each needs on `gpu`, and
    the crossover batch where the step stops being memory-bound (default: Mixtral 8x7B, fp16)."""
    from ..compute import get_hardware, mixtral_8x7b_config

    config = config or mixtral_8x7b_config()
    df = decode_step_costs(config, gpu, batch_sizes, context, dtype)
    B_star = decode_crossover_batch(config, gpu, context, dtype)
    hw = get_hardware(gpu)
    with use_style():
        fig = Figure(figsize=(9.0, 3.4), layout="constrained")
        a1, a2 = fig.subplots(1, 2)
        a1.plot(df.batch, df.bytes / 1e9, marker="o", ms=3, color="#AA3377", label="GB read (weights + KV)")
        a1b = a1.twinx()
        a1b.plot(df.batch, df.flops / 1e12, marker="s", ms=3, color="#4477AA", label="TFLOPs")
        a1.set_ylabel("GB read per step", color="#AA3377")
        a1b.set_ylabel("TFLOPs per step", color="#4477AA")
        a1.set_title("bytes saturate once all experts are read;\nFLOPs grow with B", fontsize=8)
        a2.plot(df.batch, 1e3 * df.t_memory_s, marker="o", ms=3, color="#AA3377", label=f"memory time ({hw.bandwidth_gbs:g} GB/s)")
        a2.plot(df.batch, 1e3 * df.t_compute_s, marker="s", ms=3, color="#4477AA", label=f"compute time ({hw.peak_tflops:g} TFLOP/s)")
        a2.axvline(B_star, color="0.3", ls="--", lw=1)
        a2.text(B_star, 1e3 * df.t_memory_s.max(), f" B* ≈ {B_star:.0f}", fontsize=8, va="top")
        a2.set_yscale("log"), a2.set_ylabel("ms per step")
        a2.set_title("memory-bound below B*, compute-bound above", fontsize=8)
        a2.legend(fontsize=7, loc="upper left")
        for a in (a1, a2):
            a.set_xscale("log", base=2)
            a.set_xlabel("batch (sequences decoding together)")
        fig.suptitle(title or f"Mixtral 8x7B decode, {dtype}, {hw.name}, context {context}", fontsize=9)
        fig.crossover_batch = B_star                              # the plotted numbers, for tests and captions
        fig.costs = df
    return fig
