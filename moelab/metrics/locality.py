"""Temporal locality: do consecutive tokens go to the same experts?

    >>> import numpy as np, moelab
    >>> ex = np.tile([[[0, 1]]], (5, 3, 1))                     # (tokens, layers, k): always experts 0, 1
    >>> moelab.metrics.repeat_rates(moelab.RoutingTrace.from_arrays(ex, num_experts=8))["first"].tolist()
    [1.0, 1.0, 1.0]

Jiang et al. 2024, "Mixtral of Experts", §5 and Table 5 ("percentage of
expert assignment repetitions"): for every pair of consecutive tokens t, t+1
(same sequence, positions p and p+1; never across sequences or gaps)

first   P[first choice of t == first choice of t+1]          the paper's "First choice"
any     P[top-k set of t ∩ top-k set of t+1 ≠ ∅]            the paper's "First or second
        choice" column for k = 2: at least one shared expert
first_random  1 / E                                           same, for uniformly random routing
any_random    1 − C(E−k, k) / C(E, k)                         (top-2 of 8: 1 − 6/8·5/7 ≈ 0.464)

The paper reports ≈ 14–28 % / 46–63 % for Mixtral on The Pile, vs the 12.5 % /
46 % of random routing. Both baselines come from the trace's own E and k.

`next_token_ids` gives, per token, the id of the token that follows it (the
"ground-truth next token" of OLMoE's vocabulary-specialization analysis).
"""

from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import streamable, apply_where, check_trace, consecutive_pairs, group_codes, index_frame, overlap

__all__ = ["repeat_rates", "consecutive_pairs", "next_token_ids", "random_repeat_rates"]


def random_repeat_rates(num_experts: int, top_k: int) -> tuple[float, float]:
    """(first, any) repeat rates of uniformly random top-k routing.

        >>> [round(x, 4) for x in random_repeat_rates(8, 2)]
        [0.125, 0.4643]
    """
    E, k = int(num_experts), int(top_k)
    return 1.0 / E, 1.0 - comb(E - k, k) / comb(E, k)


@streamable
def repeat_rates(trace: RoutingTrace, by=None, *, where=None) -> pd.DataFrame:
    """Mixtral Table 5: how often consecutive tokens repeat their experts, per layer.

        >>> ex = np.array([[[0, 1]], [[0, 2]], [[3, 4]]])           # (tokens, layers, k)
        >>> repeat_rates(RoutingTrace.from_arrays(ex, num_experts=8))[["first", "any", "pairs"]].values.tolist()
        [[0.5, 0.5, 2.0]]

    Index `layer`, or (by, layer) with `by=` a per-token column name (e.g.
    "domain"; a pair belongs to the group of its first token). Columns: first,
    any, first_random, any_random, pairs (consecutive pairs counted). Pivot
    with `df["first"].unstack(0)` for a layer x domain table.
    """
    trace = apply_where(check_trace(trace, "repeat_rates"), where)
    codes, labels, name = group_codes(trace, by)
    G = len(labels)
    a, b = consecutive_pairs(trace)                          # (pairs,), (pairs,)
    first, anyk, pairs = pair_counts(trace.experts[a], trace.experts[b], codes[a], G, trace.num_experts)
    return _repeat_frame(first, anyk, pairs, labels, name, trace.layer_ids, trace.num_experts, trace.top_k)


def pair_counts(ea: np.ndarray, eb: np.ndarray, g: np.ndarray, G: int, E: int):
    """Counts over consecutive pairs (ea[i], eb[i]), each (pairs, L, k), of group g[i] (-1: skipped):
    same first choice (G, L), any shared expert (G, L), pairs (G,). Sums over disjoint sets of pairs."""
    keep = g >= 0
    ea, eb, g = ea[keep], eb[keep], g[keep]
    L = ea.shape[1]
    pairs = np.bincount(g, minlength=G).astype(np.float64)   # (G,)
    first = np.zeros((G, L))
    anyk = np.zeros((G, L))
    for l in range(L):
        xa, xb = ea[:, l, :], eb[:, l, :]                    # (pairs, k)
        first[:, l] = np.bincount(g, weights=(xa[:, 0] == xb[:, 0]), minlength=G)
        anyk[:, l] = np.bincount(g, weights=(overlap(xa, xb, E) > 0), minlength=G)
    return first, anyk, pairs


def _repeat_frame(first, anyk, pairs, labels, name, layer_ids, E, k) -> pd.DataFrame:
    G, L = first.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        first = first / pairs[:, None]
        anyk = anyk / pairs[:, None]
    r_first, r_any = random_repeat_rates(E, k)
    df = pd.DataFrame(
        {
            "layer": np.tile(layer_ids, G),
            "first": first.reshape(-1),
            "any": anyk.reshape(-1),
            "first_random": r_first,
            "any_random": r_any,
            "pairs": np.repeat(pairs.astype(np.int64), L),
        }
    )
    if name is not None:
        df.insert(0, name, np.repeat(labels, L))
    return index_frame(df, name, ["layer"])


@streamable
def next_token_ids(trace: RoutingTrace) -> np.ndarray:
    """Per token, the token_id at position + 1 of the same sequence; -1 when there is none.

        >>> t = RoutingTrace.from_arrays(np.zeros((3, 1, 1), int), num_experts=2, token_id=[5, 6, 7])
        >>> next_token_ids(t)
        array([ 6,  7, -1])

    Attach it to study what experts predict: `trace.with_columns(next_token_id=next_token_ids(trace))`.
    """
    trace = check_trace(trace, "next_token_ids")
    out = np.full(trace.num_tokens, -1, np.int64)
    a, b = consecutive_pairs(trace)
    out[a] = trace.token_id[b]
    return out
