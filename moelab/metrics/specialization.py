"""Specialization: do experts prefer some domains or some tokens?

    >>> import numpy as np, moelab
    >>> ex = np.array([[[0, 1]], [[0, 2]], [[3, 1]]])               # (tokens, layers, k)
    >>> t = moelab.RoutingTrace.from_arrays(ex, num_experts=4, domain=["a", "a", "b"])
    >>> float(domain_specialization(t).loc[("a", 0, 0), "specialization"])  # both "a" tokens use expert 0
    1.0

Definitions, per MoE layer, counting an expert for a token when it is among
the token's top-k (rank 0 only with `first_only=True`):

domain_distribution   Mixtral (Jiang et al. 2024) Figure 7: the share of domain D's expert
    assignments that go to expert E, N(E, D) / Σ_E' N(E', D). Sums to 1 over experts;
    uniform routing gives 1/E ("we consider experts selected as first or second choice").
domain_specialization OLMoE (Muennighoff et al. 2024) §5, "domain specialization":
    N_k(E, D) / N(D), the fraction of domain D's tokens that have E among their top-k.
    Sums to k over experts; uniform routing gives k/E.
vocab_specialization  OLMoE §5, "vocabulary specialization": N_k(x, E) / N(x) for token
    id x (input ids, or the next / predicted token via any per-token id column), i.e.
    of all occurrences of x, the fraction routed to E. Summarised per expert as the
    mean over the tokens it receives (token-weighted) and over its vocabulary
    (each id once). OLMoE's released analysis uses first choices (`first_only=True`)
    and reports mean_x max_E N(x, E)/N(x); get it from `detail=True` as
    `d.groupby(["layer", by]).specialization.max().groupby("layer").mean()`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import (
    streamable,
    apply_where,
    assignment_counts,
    check_trace,
    column,
    default_layers,
    group_codes,
    group_sizes,
    layer_index,
)

__all__ = ["domain_distribution", "domain_specialization", "vocab_specialization"]


def _layers(trace, layers):
    ids = tuple(trace.layer_ids) if layers is None else tuple(np.atleast_1d(layers))
    return np.asarray(ids, dtype=np.int64), layer_index(trace, ids)


def _by_layer_expert(trace, by, layers, first_only):
    codes, labels, name = group_codes(trace, by)
    ids, pos = _layers(trace, layers)
    counts = assignment_counts(trace, codes, len(labels), 1 if first_only else trace.top_k, pos)   # (G, layers, E)
    return counts, group_sizes(codes, len(labels)), labels, name, ids


def _index(labels, name, ids, E):
    G = len(labels)
    return pd.MultiIndex.from_arrays(
        [np.repeat(labels, len(ids) * E), np.tile(np.repeat(ids, E), G), np.tile(np.arange(E), G * len(ids))],
        names=[name, "layer", "expert"],
    )


def _dist_frame(counts, labels, name, ids, E) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = counts / counts.sum(-1, keepdims=True)
    return pd.DataFrame(
        {"count": counts.reshape(-1), "fraction": frac.reshape(-1), "uniform": 1.0 / E}, index=_index(labels, name, ids, E)
    )


def _spec_frame(counts, sizes, labels, name, ids, E, kk) -> pd.DataFrame:
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = counts / sizes[:, None, None]
    tokens = np.broadcast_to(sizes[:, None, None], counts.shape)
    return pd.DataFrame(
        {
            "count": counts.reshape(-1),
            "tokens": tokens.reshape(-1),
            "specialization": spec.reshape(-1),
            "random": kk / E,
        },
        index=_index(labels, name, ids, E),
    )


@streamable
def domain_distribution(trace: RoutingTrace, by: str = "domain", layers=None, *, first_only=False, where=None):
    """Mixtral Figure 7: per domain, the share of expert assignments each expert gets.

        >>> ex = np.array([[[0, 1]], [[0, 2]]])                     # (tokens, layers, k)
        >>> t = RoutingTrace.from_arrays(ex, num_experts=4, domain=["a", "a"])
        >>> domain_distribution(t)["fraction"].tolist()
        [0.5, 0.25, 0.25, 0.0]

    Long DataFrame indexed (by, layer, expert) with columns count, fraction
    (sums to 1 per (domain, layer)) and uniform (1/E). `layers` are decoder-layer
    ids; the default is the first, middle and last MoE layer.
    """
    trace = apply_where(check_trace(trace, "domain_distribution"), where)
    layers = default_layers(trace) if layers is None else layers
    counts, _, labels, name, ids = _by_layer_expert(trace, by, layers, first_only)
    return _dist_frame(counts, labels, name, ids, trace.num_experts)


@streamable
def domain_specialization(trace: RoutingTrace, by: str = "domain", layers=None, *, first_only=False, where=None):
    """OLMoE domain specialization N_k(E, D) / N(D), per (domain, layer, expert).

        >>> ex = np.array([[[0, 1]], [[0, 2]]])                     # (tokens, layers, k)
        >>> t = RoutingTrace.from_arrays(ex, num_experts=4, domain=["a", "a"])
        >>> domain_specialization(t)["specialization"].tolist()
        [1.0, 0.5, 0.5, 0.0]

    Long DataFrame indexed (by, layer, expert): count (tokens of the domain with
    the expert in their top-k), tokens (N(D)), specialization, random (k/E, or
    1/E with first_only). All layers unless `layers` (decoder-layer ids) is given.
    """
    trace = apply_where(check_trace(trace, "domain_specialization"), where)
    counts, sizes, labels, name, ids = _by_layer_expert(trace, by, layers, first_only)
    return _spec_frame(counts, sizes, labels, name, ids, trace.num_experts, 1 if first_only else trace.top_k)


@streamable
def vocab_specialization(
    trace: RoutingTrace,
    by="token_id",
    layers=None,
    *,
    first_only: bool = False,
    min_count: int = 1,
    detail: bool = False,
    where=None,
) -> pd.DataFrame:
    """OLMoE vocabulary specialization N_k(x, E) / N(x), summarised per (layer, expert).

        >>> ex = np.array([[[0]], [[0]], [[1]], [[1]]])             # (tokens, layers, k)
        >>> t = RoutingTrace.from_arrays(ex, num_experts=2, token_id=[7, 7, 7, 9])
        >>> vocab_specialization(t)["specialization"].round(3).tolist()   # expert 0 gets 7s, 1 gets 7 and 9
        [0.667, 0.667]

    `by` is the per-token id: "token_id" (input tokens), "next_token_id" /
    "predicted_id" (attach with `trace.with_columns(next_token_id=next_token_ids(trace))`)
    or any per-token column or array. Negative ids (unknown, no next token) are
    skipped, as are ids seen fewer than `min_count` times.

    Summary, indexed (layer, expert): tokens (Σ_x N(x, E)), vocab (distinct ids
    the expert receives), specialization (token-weighted mean of N(x,E)/N(x) over
    the tokens it receives), specialization_vocab (mean over its distinct ids),
    random (k/E, or 1/E with first_only).
    With `detail=True`: one row per (layer, id, expert) with N(x, E) > 0:
    count, total (N(x)) and specialization.
    """
    trace = apply_where(check_trace(trace, "vocab_specialization"), where)
    values, name = column(trace, by)
    if name == "group":
        name = "id"
    if np.issubdtype(values.dtype, np.integer):
        valid = values >= 0
        values = np.where(valid, values, 0)
        codes, labels = pd.factorize(values, sort=True)
        codes = np.where(valid, codes, -1)
    else:
        codes, labels = pd.factorize(values, sort=True)
    codes = codes.astype(np.int64)
    V, E = len(labels), trace.num_experts
    n_x = group_sizes(codes, V)                                  # (V,) occurrences of each id
    ids, pos = _layers(trace, layers)
    kk = 1 if first_only else trace.top_k
    layer_counts = lambda i: assignment_counts(trace, codes, V, kk, pos[i : i + 1])[:, 0]   # noqa: E731 (V, E)
    return _vocab_frame(layer_counts, n_x, labels, name, ids, E, kk, min_count, detail)


def _vocab_frame(layer_counts, n_x, labels, name, ids, E, kk, min_count, detail) -> pd.DataFrame:
    """vocab_specialization's frame from N(x) (V,) and `layer_counts(i)`, layer i's N(x, E) counts (V, E), ids sorted.

    One layer at a time, over the nonzero N(x, E) only: memory is one layer's (V, E), never (V, layers, E)
    (at DeepSeek-V3's shape, 58 layers x 256 experts, that is 14,848 counts per token id).
    """
    ok_id = n_x >= max(int(min_count), 1)                        # (V,)
    tokens, vocab, weighted, per_id, detail_rows = [], [], [], [], []
    for i in range(len(ids)):
        c = layer_counts(i)                                      # (V, E) N(x, E)
        v, e = np.nonzero(c if ok_id.all() else c * ok_id[:, None])
        n = c[v, e]                                              # (nonzero,)
        spec = n / n_x[v]                                        # N(x, E) / N(x)
        if detail:
            detail_rows.append((np.full(len(v), ids[i]), v, e, n, spec))
            continue
        tokens.append(np.bincount(e, weights=n, minlength=E).astype(np.int64))
        vocab.append(np.bincount(e, minlength=E))
        weighted.append(np.bincount(e, weights=n * spec, minlength=E))
        per_id.append(np.bincount(e, weights=spec, minlength=E))
    if detail:
        lay, v, e, n, spec = (np.concatenate(x) for x in zip(*detail_rows))
        return pd.DataFrame(
            {"count": n, "total": n_x[v], "specialization": spec.astype(np.float64)},
            index=pd.MultiIndex.from_arrays([lay, labels[v], e], names=["layer", name, "expert"]),
        ).sort_index()
    tokens, vocab = np.stack(tokens), np.stack(vocab)            # (layers, E)
    weighted, per_id = np.stack(weighted), np.stack(per_id)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame(
            {
                "tokens": tokens.reshape(-1),
                "vocab": vocab.reshape(-1),
                "specialization": (weighted / tokens).reshape(-1),
                "specialization_vocab": (per_id / vocab).reshape(-1),
                "random": kk / E,
            },
            index=pd.MultiIndex.from_arrays(
                [np.repeat(ids, E), np.tile(np.arange(E), len(ids))], names=["layer", "expert"]
            ),
        )
    return out
