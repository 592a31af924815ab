"""Expert co-occurrence: which experts are used together, within a layer and across layers.

    >>> import numpy as np, moelab
    >>> ex = np.array([[[0, 1]], [[0, 1]], [[0, 2]]])              # (tokens, layers, k)
    >>> coactivation(moelab.RoutingTrace.from_arrays(ex, num_experts=3)).loc[0].round(3).values.tolist()
    [[1.0, 0.667, 0.333], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]

coactivation       OLMoE (Muennighoff et al. 2024) §5, "expert co-activation": for experts
                   i, j of one layer, N(i, j) / N(i), the fraction of tokens that use
                   expert i (i in their top-k) that also use expert j. Rows are
                   conditioned on i, so the matrix is not symmetric; the diagonal is 1
                   (0 counts give NaN). Unlike OLMoE's released script, which counts only
                   adjacent ranks (r, r+1), every pair of the top-k set counts, as the
                   paper's definition says. `normalize=False` gives the joint counts
                   N(i, j) (diagonal N(i)).
layer_transitions  how often first choice i at MoE layer l is followed by first choice j
                   at the next MoE layer: counts, or row-normalised P(j at l+1 | i at l)
                   (OLMoE's cross-layer expert counts, restricted to first choices).

Both are long-and-square DataFrames indexed (layer, expert): `df.loc[layer]` is
the (E, E) matrix of that layer, with rows i and columns j.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import streamable, apply_where, check_trace

__all__ = ["coactivation", "layer_transitions"]


def _frame(mats: np.ndarray, layer_ids, col_name: str) -> pd.DataFrame:
    L, E, _ = mats.shape
    index = pd.MultiIndex.from_arrays([np.repeat(layer_ids, E), np.tile(np.arange(E), L)], names=["layer", "expert"])
    return pd.DataFrame(mats.reshape(L * E, E), index=index, columns=pd.RangeIndex(E, name=col_name))


def _row_normalise(counts: np.ndarray, diag: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if diag:
            n = np.diagonal(counts, axis1=-2, axis2=-1)[..., None]     # N(i)
        else:
            n = counts.sum(-1, keepdims=True)
        return counts / n


@streamable
def coactivation(trace: RoutingTrace, *, normalize: bool = True, where=None) -> pd.DataFrame:
    """OLMoE co-activation: per layer, P(j in top-k | i in top-k) as an (E, E) matrix.

        >>> ex = np.array([[[0, 1]], [[1, 0]]])                     # (tokens, layers, k)
        >>> coactivation(RoutingTrace.from_arrays(ex, num_experts=2), normalize=False).loc[0].values.tolist()
        [[2, 2], [2, 2]]

    Indexed (layer, expert i); columns `coexpert` j. See the module docstring.
    """
    trace = apply_where(check_trace(trace, "coactivation"), where)
    counts = coactivation_counts(trace.experts, trace.num_experts)           # (L, E, E)
    return _frame(_row_normalise(counts, diag=True) if normalize else counts, trace.layer_ids, "coexpert")


def coactivation_counts(experts: np.ndarray, E: int) -> np.ndarray:
    """N(i, j) per layer, (L, E, E), diagonal N(i), from experts (tokens, L, k). Sums over disjoint token sets."""
    T, L, k = experts.shape
    counts = np.zeros((L, E, E), np.int64)
    r, s = np.triu_indices(k, 1)                                   # every pair of ranks r < s
    diag = np.arange(E) * (E + 1)
    for l in range(L):
        ex = experts[:, l, :].astype(np.int64)                     # (tokens, k)
        c = np.bincount((ex[:, r] * E + ex[:, s]).reshape(-1), minlength=E * E)   # one pass over all pairs
        c[diag] += np.bincount(ex.reshape(-1), minlength=E)        # diagonal: N(i)
        c = c.reshape(E, E)
        off = c - np.diag(np.diag(c))
        counts[l] = off + off.T + np.diag(np.diag(c))             # pairs counted both ways
    return counts


@streamable
def layer_transitions(trace: RoutingTrace, *, normalize: bool = True, where=None) -> pd.DataFrame:
    """First choice at layer l → first choice at the next MoE layer, per l.

        >>> ex = np.array([[[0], [1]], [[0], [1]], [[1], [1]]])    # (tokens, layers, k)
        >>> layer_transitions(RoutingTrace.from_arrays(ex, num_experts=2)).loc[0].values.tolist()
        [[0.0, 1.0], [0.0, 1.0]]

    Indexed (layer, expert i) for the L-1 source layers; columns `next_expert` j.
    `normalize=False` gives counts; the default divides each row by its sum.
    """
    trace = apply_where(check_trace(trace, "layer_transitions"), where)
    counts = transition_counts(trace.experts, trace.num_experts)             # (L-1, E, E)
    return _frame(_row_normalise(counts, diag=False) if normalize else counts, trace.layer_ids[:-1], "next_expert")


def transition_counts(experts: np.ndarray, E: int) -> np.ndarray:
    """First choice i at layer l -> j at l+1, counts (L-1, E, E), from experts (tokens, L, k)."""
    L = experts.shape[1]
    counts = np.zeros((max(L - 1, 0), E, E), np.int64)
    prev = experts[:, 0, 0].astype(np.int64) if L else None
    for l in range(L - 1):
        nxt = experts[:, l + 1, 0].astype(np.int64)
        counts[l] = np.bincount(prev * E + nxt, minlength=E * E).reshape(E, E)
        prev = nxt
    return counts
