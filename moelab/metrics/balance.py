"""Load balance: how evenly a router spreads tokens over its experts.

    >>> import numpy as np, moelab
    >>> ex = np.random.default_rng(0).integers(0, 8, size=(1000, 4, 1))   # (tokens, layers, k)
    >>> moelab.metrics.balance(moelab.RoutingTrace.from_arrays(ex, num_experts=8)).columns[:3].tolist()
    ['tokens', 'cv', 'maxvio']

Definitions, per MoE layer, with n_i the number of assignments to expert i
(all top-k slots by default, rank 0 only with `first_only=True`), E experts,
T tokens, k experts per token, p_ti = softmax(logits_t)_i the router probability:

load      n_i, and n_i / Σ_j n_j (fraction, sums to 1) and n_i / T (per token, sums to k)
cv        std(n) / mean(n), population std: 0 when perfectly balanced
          (coefficient of variation, Shazeer et al. 2017 "importance" loss uses CV²)
maxvio    (max_i n_i − mean(n)) / mean(n)           (Wang et al. 2024, "Auxiliary-loss-free
          load balancing", MaxVio)
entropy   −Σ q_i log q_i / log E,  q_i = n_i / Σ n   1 = uniform, 0 = one expert
switch_aux  E · Σ_i f_i P_i, f_i = fraction of tokens whose first choice is i,
          P_i = mean_t p_ti                          (Fedus et al. 2021, Switch Transformer eq. 4);
          1 when balanced. Needs logits, NaN otherwise.
switch_aux_topk  E · Σ_i (n_i^topk / (k T)) P_i: the same with all top-k slots; 1 when balanced
hf_aux    E · Σ_i (n_i^topk / T) P_i = k · switch_aux_topk: the convention of transformers'
          `load_balancing_loss_func` (Mixtral); k when balanced. `hf_aux_loss(trace)` pools
          all layers' tokens the way that function does and matches it exactly.
z_loss    mean_t (logsumexp_i logits_ti)²              (Zoph et al. 2022, ST-MoE eq. 5)

The routed experts are the trace's own (`trace.experts`), not an argmax
recomputed from logits; for a trace recorded from a model these agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import (
    streamable,
    apply_where,
    assignment_counts,
    batch_codes,
    check_trace,
    group_codes,
    group_sizes,
    index_frame,
)

__all__ = ["expert_load", "balance", "hf_aux_loss"]


def _groups(trace, by, per_batch):
    if by is not None and per_batch is not None:
        raise ValueError(f"pass by= or per_batch=, not both (got by={by!r}, per_batch={per_batch!r})")
    if per_batch is not None:
        codes = batch_codes(trace.num_tokens, per_batch)
        G = int(codes[-1]) + 1 if len(codes) else 0
        return codes, np.arange(G), "batch"
    return group_codes(trace, by)


@streamable
def expert_load(trace: RoutingTrace, first_only: bool = False, *, by=None, per_batch=None, where=None) -> pd.DataFrame:
    """Tokens per expert, per layer: counts and fractions.

        >>> ex = np.array([[[0, 1]], [[0, 2]]])                          # (tokens, layers, k)
        >>> expert_load(RoutingTrace.from_arrays(ex, num_experts=3))["count"].tolist()
        [2, 1, 1]

    Index (layer, expert), or ([by | batch], layer, expert). Columns:
    `count` assignments (rank 0 only with `first_only`, else all top-k slots),
    `fraction` count / all counted assignments of the layer (sums to 1),
    `per_token` count / tokens (sums to 1 with first_only, else to k).
    """
    trace = apply_where(check_trace(trace, "expert_load"), where)
    codes, labels, name = _groups(trace, by, per_batch)
    G = len(labels)
    counts = assignment_counts(trace, codes, G, 1 if first_only else trace.top_k)   # (G, L, E)
    return _load_frame(counts, group_sizes(codes, G), labels, name, trace.layer_ids, trace.num_experts)


def _load_frame(counts, tokens, labels, name, layer_ids, E) -> pd.DataFrame:
    """expert_load's frame from counts (G, L, E) and tokens (G,): shared by the in-memory and streamed paths."""
    G, L = counts.shape[0], len(layer_ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = counts / counts.sum(-1, keepdims=True)
        per_token = counts / tokens[:, None, None]
    df = pd.DataFrame(
        {
            "layer": np.tile(np.repeat(layer_ids, E), G),
            "expert": np.tile(np.arange(E), G * L),
            "count": counts.reshape(-1),
            "fraction": fraction.reshape(-1),
            "per_token": per_token.reshape(-1),
        }
    )
    if name is not None:
        df.insert(0, name, np.repeat(labels, L * E))
    return index_frame(df, name, ["layer", "expert"])


def _softmax_stats(logits_l: np.ndarray, codes: np.ndarray, G: int):
    """Per group: summed router probabilities (G, E) and summed squared logsumexp (G,)."""
    x = logits_l.astype(np.float64)                              # (tokens, E)
    m = x.max(-1, keepdims=True)
    ex = np.exp(x - m)
    s = ex.sum(-1, keepdims=True)
    p = ex / s                                                   # (tokens, E)
    lse = (m + np.log(s))[:, 0]                                  # (tokens,)
    keep = codes >= 0
    c = codes[keep]
    psum = np.stack([np.bincount(c, weights=p[keep, i], minlength=G) for i in range(x.shape[1])], -1)
    zsum = np.bincount(c, weights=lse[keep] ** 2, minlength=G)
    return psum, zsum


@streamable
def balance(trace: RoutingTrace, *, by=None, per_batch=None, first_only: bool = False, where=None) -> pd.DataFrame:
    """Balance statistics of every MoE layer: one row per layer (and group).

        >>> ex = np.stack([np.arange(8).repeat(10)] * 2, 1)[:, :, None]   # (tokens, layers, k): uniform
        >>> balance(RoutingTrace.from_arrays(ex, num_experts=8))[["cv", "maxvio", "entropy"]].iloc[0].tolist()
        [0.0, 0.0, 1.0]

    Index `layer` (decoder-layer ids), or (by, layer) with `by=` a per-token
    column name such as "domain", or (batch, layer) with `per_batch=N` for
    consecutive chunks of N tokens in trace order. Columns: tokens, cv, maxvio,
    entropy (of the top-k load, or rank 0 only with `first_only`), switch_aux,
    switch_aux_topk, hf_aux, z_loss (NaN without logits). See the module
    docstring for the formulas and references.
    """
    trace = apply_where(check_trace(trace, "balance"), where)
    codes, labels, name = _groups(trace, by, per_batch)
    G, L, E, k = len(labels), trace.num_layers, trace.num_experts, trace.top_k
    topk = assignment_counts(trace, codes, G, k)                           # (G, L, E)
    first = topk if k == 1 else assignment_counts(trace, codes, G, 1)      # (G, L, E)
    psum = zsum = None
    if trace.logits is not None:
        psum, zsum = np.zeros((G, L, E)), np.zeros((G, L))
        for l in range(L):
            psum[:, l], zsum[:, l] = _softmax_stats(trace.logits[:, l, :], codes, G)   # (G, E), (G,)
    return _balance_frame(topk, first, group_sizes(codes, G), psum, zsum, labels, name, trace.layer_ids, E, k,
                          first_only)


def _balance_frame(topk, first, tokens, psum, zsum, labels, name, layer_ids, E, k, first_only) -> pd.DataFrame:
    """balance's frame from counts (G, L, E), tokens (G,) and summed probabilities psum (G, L, E) and
    squared logsumexp zsum (G, L) (None without logits): shared by the in-memory and streamed paths."""
    G, L = topk.shape[0], len(layer_ids)
    tokens = np.asarray(tokens).astype(np.float64)                         # (G,)
    load = (first if first_only else topk).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = load.mean(-1)
        cv = load.std(-1) / mean
        maxvio = (load.max(-1) - mean) / mean
        q = load / load.sum(-1, keepdims=True)
        plogp = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
        entropy = -plogp.sum(-1) / np.log(E) if E > 1 else np.ones_like(mean)
        entropy = np.where(load.sum(-1) > 0, entropy, np.nan)

        switch_aux = np.full((G, L), np.nan)
        switch_topk = np.full((G, L), np.nan)
        hf_aux = np.full((G, L), np.nan)
        z_loss = np.full((G, L), np.nan)
        if psum is not None:
            T = tokens[:, None]
            for l in range(L):
                P = psum[:, l] / T                                               # (G, E) mean prob
                switch_aux[:, l] = E * (first[:, l] / T * P).sum(-1)
                hf_aux[:, l] = E * (topk[:, l] / T * P).sum(-1)
                switch_topk[:, l] = hf_aux[:, l] / k
                z_loss[:, l] = zsum[:, l] / tokens
    df = pd.DataFrame(
        {
            "layer": np.tile(layer_ids, G),
            "tokens": np.repeat(tokens.astype(np.int64), L),
            "cv": cv.reshape(-1),
            "maxvio": maxvio.reshape(-1),
            "entropy": entropy.reshape(-1),
            "switch_aux": switch_aux.reshape(-1),
            "switch_aux_topk": switch_topk.reshape(-1),
            "hf_aux": hf_aux.reshape(-1),
            "z_loss": z_loss.reshape(-1),
        }
    )
    if name is not None:
        df.insert(0, name, np.repeat(labels, L))
    return index_frame(df, name, ["layer"])


@streamable
def hf_aux_loss(trace: RoutingTrace, *, where=None) -> float:
    """The whole-model auxiliary loss exactly as transformers' `load_balancing_loss_func`.

        >>> import numpy as np
        >>> lg = np.zeros((4, 2, 8), np.float32); ex = np.argsort(-lg, -1, kind="stable")[..., :2]
        >>> hf_aux_loss(RoutingTrace.from_arrays(ex, num_experts=8, logits=lg))  # all on experts 0, 1
        2.0

    E · Σ_i f_i P_i with f_i = top-k assignments to expert i over all layers'
    tokens / (layers · tokens) and P_i = router probability of i averaged over
    the same rows: HF concatenates every layer's router logits before averaging.
    Perfect balance gives k. Padding is never in a trace, which matches HF's
    `attention_mask` handling. Raises ValueError when the trace has no logits.
    """
    trace = apply_where(check_trace(trace, "hf_aux_loss"), where)
    if trace.logits is None:
        raise ValueError(
            "hf_aux_loss needs router logits, but this trace has none; record them with "
            "moelab.trace(model, logits=True) (or pass logits= to RoutingTrace.from_arrays)"
        )
    T, L, E, k = trace.num_tokens, trace.num_layers, trace.num_experts, trace.top_k
    codes = np.zeros(T, np.int64)
    counts = assignment_counts(trace, codes, 1, k)[0].sum(0)                    # (E,)
    psum = np.zeros(E)
    for l in range(L):
        psum += _softmax_stats(trace.logits[:, l, :], codes, 1)[0][0]
    return _hf_aux_value(counts, psum, T, L, E)


def _hf_aux_value(counts, psum, T: int, L: int, E: int) -> float:
    """E · Σ_i (n_i / LT) (Σ p_i / LT) from top-k counts (E,) and summed probabilities (E,) over all layers."""
    rows = float(L * T)
    return float(E * np.sum((np.asarray(counts, np.float64) / rows) * (psum / rows)))
