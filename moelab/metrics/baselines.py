"""Load-aware baselines: what each routing statistic would be by chance, given the experts' loads.

    >>> import numpy as np, moelab
    >>> round(max_share_chance(5, np.full(8, 1 / 8)), 4)     # 5 draws from 8 equal experts
    0.3865
    >>> representative_layers(32)                            # Mixtral's Figure 7 / Table 5 layers
    (0, 15, 31)

An unbalanced router repeats, co-activates and "specialises" on its busy experts by chance
alone, so every statistic of notebooks 03/04 is read against the baseline that keeps the
load it was computed under:

repeat_rate_baselines  Mixtral (Jiang et al. 2024) Table 5 controls: the exact expected repeat
                       rates when each group's (domain's) routing decisions are shuffled among
                       its tokens (`*_shuffled`), and the with-replacement plug-in Σ pᵢ²
                       (`*_independent`), next to the observed rates and the excess.
independent_repeat_rates  (first, any) for tokens routed independently, top-k drawn without
                       replacement from loads p (Plackett-Luce): first = Σ pᵢ².
coactivation_lift      OLMoE §5 co-activation P(j | i) divided by P(j): 1 = no association.
max_share_chance       expected max_E share of n occurrences of one token id routed by chance
                       with loads p: the chance level of OLMoE's vocabulary specialization.
transition_baseline    layer transitions if layers routed independently: the outer product of
                       the marginals (rows P(j at l+1)); `transition_lift` = observed / that.
specialization_vs_load OLMoE domain specialization next to the expert's overall load.
domain_tv              total-variation distance ½ Σ_e |p_D(e) − p_all(e)| per domain and layer.
saturation_chance      OLMoE §5.1 router saturation of two routings that are independent token by
                       token but keep the experts' loads: top-1 Σ pᵢqᵢ, top-k Σ πᵢρᵢ / k
                       (πᵢ = P(expert i in a token's top-k)); uniform loads give 1/E and k/E.
representative_layers  first, middle and last layer (Mixtral's 0, 15, 31 of 32).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations, permutations
from math import lgamma, log

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import apply_where, assignment_counts, check_trace, consecutive_pairs, group_codes, layer_index
from .coactivation import _frame, coactivation_counts, transition_counts
from .locality import repeat_rates
from .specialization import domain_distribution, domain_specialization

__all__ = [
    "representative_layers",
    "independent_repeat_rates",
    "repeat_rate_baselines",
    "coactivation_lift",
    "max_share_chance",
    "vocab_chance",
    "transition_baseline",
    "transition_lift",
    "specialization_vs_load",
    "total_variation",
    "domain_tv",
    "independent_saturation",
    "saturation_chance",
]


def representative_layers(layers) -> tuple[int, ...]:
    """First, middle and last layer: of `n` layers (an int), of a list of layer ids, or of a trace.

        >>> representative_layers(4), representative_layers([1, 3, 5, 7, 9]), representative_layers(1)
        ((0, 1, 3), (1, 5, 9), (0,))
    """
    if isinstance(layers, RoutingTrace):
        layers = layers.layer_ids
    ids = list(range(int(layers))) if np.ndim(layers) == 0 else [int(i) for i in layers]
    if not ids:
        raise ValueError(f"representative_layers({layers!r}): need at least one layer")
    return tuple(sorted({ids[0], ids[(len(ids) - 1) // 2], ids[-1]}))


# ------------------------------------------------------------------------- Table 5
def independent_repeat_rates(p, k: int = 2) -> tuple[float, float]:
    """(first, any) repeat rates of consecutive tokens routed independently with loads p.

        >>> [round(x, 4) for x in independent_repeat_rates(np.full(8, 1 / 8), 2)]   # uniform: 1/8, 1 - C(6,2)/C(8,2)
        [0.125, 0.4643]

    `p` is the first-choice distribution; each token's top-k is drawn from p without
    replacement (Plackett-Luce, what Gumbel-top-k sampling of fixed logits gives).
    first = Σ pᵢ²; any = P(two independent top-k sets share an expert), by enumerating
    the ordered top-k tuples (E!/(E-k)! of them; at most 10⁶).
    """
    p = np.asarray(p, float)
    if p.ndim != 1 or (p < 0).any() or not np.isclose(p.sum(), 1):
        raise ValueError(f"p must be a probability vector (non-negative, summing to 1); got {p!r}")
    E, k = len(p), int(k)
    n_tuples = np.prod(np.arange(E - k + 1, E + 1, dtype=float))
    if not 1 <= k <= E or n_tuples > 1e6:
        raise ValueError(f"k={k} with E={E}: need 1 <= k <= E and E!/(E-k)! <= 1e6 ordered top-k tuples")
    sets: dict[frozenset, float] = {}
    for t in permutations(range(E), k):
        prob, left = 1.0, 1.0
        for e in t:
            prob *= p[e] / left if left > 0 else 0.0
            left -= p[e]
        sets[frozenset(t)] = sets.get(frozenset(t), 0.0) + prob
    # P(share) = Σ_{A ≠ ∅} (-1)^{|A|+1} q_A², q_A = P(A ⊆ set)   (inclusion-exclusion)
    q: dict[frozenset, float] = {}
    for s, prob in sets.items():
        for r in range(1, k + 1):
            for a in combinations(sorted(s), r):
                q[frozenset(a)] = q.get(frozenset(a), 0.0) + prob
    anyk = sum((-1) ** (len(a) + 1) * v * v for a, v in q.items())
    return float((p * p).sum()), float(anyk)


def _subset_keys(ex: np.ndarray, E: int):
    """Every non-empty subset of each token's top-k set, as (keys, signs (-1)^{|A|+1}, token index)."""
    T, k = ex.shape
    srt = np.sort(ex.astype(np.int64), 1)
    keys, signs, tok = [], [], []
    for r in range(1, k + 1):
        for cols in combinations(range(k), r):
            key = np.full(T, r, np.int64)                                  # base-(E+1) code of the subset
            for c in cols:
                key = key * (E + 1) + srt[:, c] + 1
            keys.append(key), signs.append(np.full(T, (-1) ** (r + 1))), tok.append(np.arange(T))
    return np.concatenate(keys), np.concatenate(signs), np.concatenate(tok)


def _pair_chance(ex: np.ndarray, codes: np.ndarray, G: int, E: int):
    """Per group pair (g, h): P(first equal), P(top-k sets overlap) for two distinct random tokens
    of groups g and h (drawn without replacement when g == h). Returns (G, G) arrays."""
    n = np.bincount(codes, minlength=G).astype(float)                         # (G,)
    f = np.zeros((G, E))
    np.add.at(f, (codes, ex[:, 0].astype(np.int64)), 1.0)                     # first-choice counts (G, E)
    keys, signs, tok = _subset_keys(ex, E)
    uk, inv = np.unique(keys, return_inverse=True)
    N = np.zeros((G, len(uk)))
    np.add.at(N, (codes[tok], inv), 1.0)                                      # N_A per group (G, subsets)
    sgn = np.zeros(len(uk))
    sgn[inv] = signs
    same_first = f @ f.T                                                      # ordered pairs, i == j included
    share = (N * sgn) @ N.T
    diag = np.diag_indices(G)
    same_first[diag] -= n                                                     # drop self-pairs
    share[diag] -= n
    denom = np.outer(n, n)
    denom[diag] = n * (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return same_first / denom, share / denom, f / np.maximum(n, 1)[:, None]


def repeat_rate_baselines(trace: RoutingTrace, by=None, *, where=None) -> pd.DataFrame:
    """Table 5 with its load-aware controls: observed, shuffled-within-group and independent rates.

        >>> ex = np.array([[[0]], [[0]], [[1]], [[1]]])                # (tokens, layers, k): 0 0 1 1
        >>> df = repeat_rate_baselines(RoutingTrace.from_arrays(ex, num_experts=2))
        >>> df[["first", "first_shuffled", "first_independent"]].round(4).values.tolist()
        [[0.6667, 0.3333, 0.5]]

    Same index as `repeat_rates(trace, by)`. Columns: first, any (observed), first_shuffled,
    any_shuffled (the exact expectation over all permutations of each group's routing among
    its tokens, e.g. by="domain": notebook 03's control, without sampling noise),
    first_independent, any_independent (Σ pᵢ² of the group's first-choice loads, and the
    top-k analogue from the group's observed top-k sets, drawn with replacement),
    first_excess, any_excess (observed − shuffled: the locality that comes from context),
    first_random, any_random, pairs.
    """
    trace = apply_where(check_trace(trace, "repeat_rate_baselines"), where)
    rr = repeat_rates(trace, by=by)
    codes, labels, name = group_codes(trace, by)
    G = len(labels)
    a, b = consecutive_pairs(trace)
    keep = (codes[a] >= 0) & (codes[b] >= 0)
    a, b = a[keep], b[keep]
    pair_w = np.zeros((G, G, 1))                                             # pairs by (group of t, group of t+1)
    out = {c: np.zeros((G, trace.num_layers)) for c in ("fs", "as", "fi", "ai")}
    own = codes >= 0
    for l in range(trace.num_layers):
        ex = trace.experts[own, l, :]
        fs, as_, load = _pair_chance(ex, codes[own], G, trace.num_experts)
        pw = np.zeros((G, G))
        np.add.at(pw, (codes[a], codes[b]), 1.0)
        tot = np.maximum(pw.sum(1), 1)
        out["fs"][:, l] = np.nansum(pw * fs, 1) / tot
        out["as"][:, l] = np.nansum(pw * as_, 1) / tot
        # with replacement: add the self-pairs back (the plug-in Σ p² of the group's own loads)
        n = np.bincount(codes[own], minlength=G).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["fi"][:, l] = (load ** 2).sum(1)
            out["ai"][:, l] = (np.diag(as_) * n * (n - 1) + n) / (n * n)
    rr = rr.copy()
    for col, key in [("first_shuffled", "fs"), ("any_shuffled", "as"), ("first_independent", "fi"),
                     ("any_independent", "ai")]:
        rr[col] = out[key].reshape(-1)
    rr["first_excess"] = rr["first"] - rr["first_shuffled"]
    rr["any_excess"] = rr["any"] - rr["any_shuffled"]
    rr.loc[rr["pairs"] == 0, ["first_shuffled", "any_shuffled", "first_excess", "any_excess"]] = np.nan
    order = ["first", "any", "first_shuffled", "any_shuffled", "first_independent", "any_independent",
             "first_excess", "any_excess", "first_random", "any_random", "pairs"]
    return rr[order]


# --------------------------------------------------------------------- co-activation
def coactivation_lift(trace: RoutingTrace, *, where=None) -> pd.DataFrame:
    """Co-activation against load: lift(i, j) = P(j | i) / P(j), per layer (diagonal NaN).

        >>> ex = np.array([[[0, 1]], [[0, 2]], [[0, 1]], [[0, 2]]])    # expert 0 is in every top-k
        >>> coactivation_lift(RoutingTrace.from_arrays(ex, num_experts=3)).loc[0].round(2).values.tolist()
        [[nan, 1.0, 1.0], [1.0, nan, 0.0], [1.0, 0.0, nan]]

    P(j) is the share of tokens with j in their top-k. 1 = i tells nothing about j (a hub
    expert used by every token has lift 1 with everyone); > 1 = used together more than the
    loads imply. Same layout as `coactivation`: indexed (layer, expert i), columns j.
    """
    trace = apply_where(check_trace(trace, "coactivation_lift"), where)
    counts = coactivation_counts(trace.experts, trace.num_experts).astype(float)   # (L, E, E)
    n_i = np.diagonal(counts, axis1=1, axis2=2)                                   # (L, E)
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = counts * trace.num_tokens / (n_i[:, :, None] * n_i[:, None, :])
    idx = np.arange(trace.num_experts)
    lift[:, idx, idx] = np.nan
    return _frame(lift, trace.layer_ids, "coexpert")


# ------------------------------------------------------------------ max share chance
@lru_cache(maxsize=256)
def _max_share_table(N: int, p: tuple) -> np.ndarray:
    """E[max_e c_e] / n for every n = 1..N at once, (N,).

    P(all counts <= m | n) = n! [x^n] Π_e Σ_{c<=m} (p_e x)^c / c!. One polynomial product per m
    gives it for every n; with x = N z the coefficients stay in float range for N up to 600.
    """
    logfact = np.array([lgamma(c + 1) for c in range(N + 1)])
    c = np.arange(N + 1)
    terms = [np.exp(c * log(q * N) - logfact) if q > 0 else (c == 0) * 1.0 for q in p]   # (p_e N)^c / c!
    scale = np.exp(logfact - c * log(N))                                     # n! / N^n
    n = np.arange(1, N + 1)
    expected = np.zeros(N)                                                   # Σ_m P(max > m | n)
    for m in range(N):
        poly = np.ones(1)
        for t in terms:
            poly = np.convolve(poly, t[: m + 1])[: N + 1]
        cdf = np.zeros(N + 1)
        cdf[: len(poly)] = scale[: len(poly)] * poly
        expected += np.where(m < n, 1.0 - np.minimum(cdf[1:], 1.0), 0.0)
        if (cdf[1:] > 1 - 1e-13).all():
            break
    return expected / n


def max_share_chance(n: int, p) -> float:
    """E[max_e c_e / n] for n tokens routed independently with loads p (counts c ~ Multinomial(n, p)).

        >>> round(max_share_chance(20, [1 / 8] * 8), 4), max_share_chance(1, [0.5, 0.5])
        (0.2473, 1.0)

    The chance level of OLMoE's vocabulary specialization (mean over token ids of
    max_E N(x, E)/N(x)): a token id seen 5 times scores ≈ 0.39 with 8 equal experts, not
    1/8. Exact, from the multinomial's generating function (n up to 600).
    """
    n = int(n)
    p = np.asarray(p, float)
    if n < 1 or p.ndim != 1 or (p < 0).any() or not np.isclose(p.sum(), 1):
        raise ValueError(f"max_share_chance(n={n!r}, p={p!r}): need n >= 1 and p a probability vector")
    if n > 600:
        raise ValueError(f"max_share_chance(n={n}): exact only up to n=600 (float range); cap n, e.g. vocab_chance(max_n=200)")
    return float(_max_share_table(n, tuple(np.round(p / p.sum(), 12)))[n - 1])


def vocab_chance(trace: RoutingTrace, by: str = "token_id", *, min_count: int = 5, max_n: int = 200,
                 where=None) -> pd.Series:
    """Chance level of OLMoE's vocabulary scalar, per layer: the mean over token ids (seen >= min_count
    times) of `max_share_chance(N(x), first-choice load of the layer)`; N(x) is capped at max_n.

        >>> t = RoutingTrace.from_arrays(np.array([[[0]], [[1]]] * 5), num_experts=2, token_id=[7, 8] * 5)
        >>> round(float(vocab_chance(t).iloc[0]), 4)                   # each id seen 5 times, loads ½ ½
        0.6875
    """
    trace = apply_where(check_trace(trace, "vocab_chance"), where)
    from ._common import column

    ids, _ = column(trace, by)
    ok = ids >= 0
    _, n = np.unique(ids[ok], return_counts=True)
    n = np.minimum(n[n >= min_count], max_n)
    loads = assignment_counts(trace, np.zeros(trace.num_tokens, np.int64), 1, 1)[0]   # (L, E) first choices
    if int(max_n) > 600:
        raise ValueError(f"max_n={max_n} must be at most 600 (max_share_chance's float range)")
    vals = []
    for load in loads:
        p = load / load.sum()
        table = _max_share_table(int(max(n.max(), 1)) if len(n) else 1, tuple(np.round(p, 12)))   # every n at once
        vals.append(float(table[n - 1].mean()) if len(n) else np.nan)
    return pd.Series(vals, index=pd.Index(trace.layer_ids, name="layer"), name="chance")


# ------------------------------------------------------------------- transitions
def transition_baseline(trace: RoutingTrace, *, normalize: bool = True, where=None) -> pd.DataFrame:
    """Layer transitions if each layer routed independently: counts N·P(i at l)·P(j at l+1), or
    (normalize=True) rows P(j at l+1). Same layout as `layer_transitions`.

        >>> ex = np.array([[[0], [1]], [[1], [1]]])                    # (tokens, layers, k)
        >>> transition_baseline(RoutingTrace.from_arrays(ex, num_experts=2)).loc[0].values.tolist()
        [[0.0, 1.0], [0.0, 1.0]]
    """
    trace = apply_where(check_trace(trace, "transition_baseline"), where)
    E, T = trace.num_experts, trace.num_tokens
    m = np.stack([np.bincount(trace.experts[:, l, 0].astype(np.int64), minlength=E) for l in range(trace.num_layers)])
    m = m / max(T, 1)                                                            # (L, E) first-choice marginals
    mats = np.einsum("li,lj->lij", m[:-1], m[1:])                               # (L-1, E, E) joint
    if normalize:
        mats = np.broadcast_to(m[1:, None, :], mats.shape).copy()
    else:
        mats = mats * T
    return _frame(mats, trace.layer_ids[:-1], "next_expert")


def transition_lift(trace: RoutingTrace, *, where=None) -> pd.DataFrame:
    """Observed / independent transitions: P(j at l+1 | i at l) / P(j at l+1); 1 = no path."""
    trace = apply_where(check_trace(trace, "transition_lift"), where)
    counts = transition_counts(trace.experts, trace.num_experts).astype(float)
    base = transition_baseline(trace, normalize=False).to_numpy().reshape(counts.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _frame(counts / base, trace.layer_ids[:-1], "next_expert")


# ---------------------------------------------------------------- specialization
def specialization_vs_load(trace: RoutingTrace, by: str = "domain", layers=None, *, first_only=False,
                           where=None) -> pd.DataFrame:
    """OLMoE domain specialization next to the expert's overall load, per (domain, layer, expert).

        >>> ex = np.array([[[0]], [[0]], [[0]], [[1]]])                # expert 0 takes 3/4 of all tokens
        >>> t = RoutingTrace.from_arrays(ex, num_experts=2, domain=["a", "a", "b", "b"])
        >>> specialization_vs_load(t).loc[("a", 0, 0), ["specialization", "load", "lift"]].tolist()
        [1.0, 0.75, 1.3333333333333333]

    Adds `load` (the share of ALL tokens with the expert in their top-k: what a domain
    gets if it is routed like everyone else) and `lift` = specialization / load to
    `domain_specialization`'s columns. An expert every domain uses scores high
    specialization everywhere but lift ≈ 1.
    """
    trace = apply_where(check_trace(trace, "specialization_vs_load"), where)
    layers = representative_layers(trace) if layers is None else layers
    spec = domain_specialization(trace, by=by, layers=layers, first_only=first_only)
    pos = layer_index(trace, np.atleast_1d(layers))
    kk = 1 if first_only else trace.top_k
    load = assignment_counts(trace, np.zeros(trace.num_tokens, np.int64), 1, kk, pos)[0] / max(trace.num_tokens, 1)
    lookup = pd.Series(load.reshape(-1), index=pd.MultiIndex.from_product(
        [np.atleast_1d(layers).astype(np.int64), np.arange(trace.num_experts)], names=["layer", "expert"]))
    spec = spec.copy()
    spec["load"] = lookup.reindex(spec.index.droplevel(0)).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        spec["lift"] = spec["specialization"] / spec["load"]
    return spec


# ----------------------------------------------------------------- distributions
def total_variation(p, q) -> float:
    """½ Σ |p − q| of two distributions (normalised first): 0 identical, 1 disjoint.

        >>> total_variation([1, 0], [0.5, 0.5]), total_variation([2, 2], [1, 1])
        (0.5, 0.0)
    """
    p, q = np.asarray(p, float), np.asarray(q, float)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError(f"total_variation needs two non-empty distributions of one shape; got {p.shape}, {q.shape}")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def domain_tv(trace: RoutingTrace, by: str = "domain", layers=None, *, reference: str | None = None,
              where=None) -> pd.DataFrame:
    """TV distance between each domain's expert distribution (Mixtral Fig. 7) and a reference.

        >>> ex = np.array([[[0]], [[0]], [[1]], [[1]]])
        >>> t = RoutingTrace.from_arrays(ex, num_experts=2, domain=["a", "a", "b", "b"])
        >>> domain_tv(t).values.tolist()                              # each domain vs all tokens
        [[0.5], [0.5]]

    Rows: domains; columns: layers. `reference=None` compares with all tokens of the trace;
    a domain name compares every domain with that one (a domain × domain row).
    """
    trace = apply_where(check_trace(trace, "domain_tv"), where)
    layers = representative_layers(trace) if layers is None else layers
    dist = domain_distribution(trace, by=by, layers=layers)["count"].unstack("expert")   # (domain, layer) x E
    if reference is None:
        ref = dist.groupby(level="layer").sum()
    else:
        if reference not in dist.index.get_level_values(0):
            raise KeyError(f"reference={reference!r} is not a value of {by!r}; it has {sorted(set(dist.index.get_level_values(0)))}")
        ref = dist.loc[reference]
    out = {(d, l): total_variation(row.to_numpy(), ref.loc[l].to_numpy()) if row.sum() else np.nan
           for (d, l), row in dist.iterrows()}
    return pd.Series(out).rename_axis([by, "layer"]).unstack("layer")


# ----------------------------------------------------------------- saturation
def independent_saturation(p, q=None, k: int = 1) -> float:
    """Expected router saturation (OLMoE §5.1, Eq. 5) of two routings independent token by token.

        >>> independent_saturation(np.full(8, 1 / 8)), independent_saturation(np.full(8, 1 / 8), k=2)
        (0.125, 0.25)
        >>> round(independent_saturation(np.full(64, 1 / 64), k=8), 3)     # OLMoE's "8/64 = 12.5 %"
        0.125

    `p`, `q`: the experts' shares of the assignments of each routing (each sums to 1, like
    `expert_load(...)["fraction"]`; `q` defaults to `p`); `k`: experts per token. A token's
    top-k set contains expert i with probability πᵢ = k·pᵢ, so by linearity
    E|A ∩ B| / k = Σᵢ πᵢ ρᵢ / k = k Σᵢ pᵢ qᵢ (for k = 1 the familiar Σ pᵢ qᵢ). It depends
    only on these inclusion probabilities, not on how the rest of the top-k set is drawn.
    """
    p = np.asarray(p, float)
    q = p if q is None else np.asarray(q, float)
    for name, v in (("p", p), ("q", q)):
        if v.ndim != 1 or (v < 0).any() or not np.isclose(v.sum(), 1):
            raise ValueError(f"{name} must be a probability vector (non-negative, summing to 1); got {v!r}")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have one length (the number of experts); got {len(p)} and {len(q)}")
    k = int(k)
    if not 1 <= k <= len(p) or (k * p > 1 + 1e-9).any() or (k * q > 1 + 1e-9).any():
        raise ValueError(f"k={k}: need 1 <= k <= E={len(p)} and k * share <= 1 for every expert "
                         "(an expert is at most once in a token's top-k)")
    return float(k * (p * q).sum())


def saturation_chance(final: RoutingTrace, checkpoint: RoutingTrace | None = None, k: int | None = None) -> pd.DataFrame:
    """Per layer, the router saturation two independent routings with these loads give by chance.

        >>> ex = np.array([[[0, 1]], [[0, 2]], [[0, 3]], [[1, 2]]])   # first 0 0 0 1: Σp² = 0.625
        >>> saturation_chance(RoutingTrace.from_arrays(ex, num_experts=4)).values.tolist()
        [[0.625, 0.5625, 2.0]]

    The baseline of `metrics.router_saturation` (columns `top1`, `topk`, `k`, index `layer`):
    `top1` = Σᵢ pᵢqᵢ over first-choice shares, `topk` = k Σᵢ pᵢqᵢ over the shares of all
    top-k assignments (`independent_saturation`). p are the final checkpoint's loads; q the
    checkpoint's, or the final's again when `checkpoint` is None ("same loads"). Uniform loads
    give 1/E and k/E, OLMoE's "random routing" values (§5.1); an unbalanced router agrees
    with any other router that shares its busy experts more often than that, by chance alone.
    """
    check_trace(final, "saturation_chance")
    other = final if checkpoint is None else check_trace(checkpoint, "saturation_chance")
    k = final.top_k if k is None else int(k)
    if not 1 <= k <= min(final.top_k, other.top_k):
        raise ValueError(f"k={k} must lie in [1, {min(final.top_k, other.top_k)}] (the traces' top_k)")
    if other.num_experts != final.num_experts or list(other.layer_ids) != list(final.layer_ids):
        raise ValueError("saturation_chance: the checkpoint's trace must have the final's experts and layers; "
                         f"got E={other.num_experts}, layers {list(other.layer_ids)} vs E={final.num_experts}, "
                         f"layers {list(final.layer_ids)}")
    zeros_f, zeros_o = np.zeros(final.num_tokens, np.int64), np.zeros(other.num_tokens, np.int64)
    rows = []
    for kk, col in ((1, "top1"), (k, "topk")):
        a = assignment_counts(final, zeros_f, 1, kk)[0].astype(float)            # (L, E)
        b = assignment_counts(other, zeros_o, 1, kk)[0].astype(float)
        a, b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
        rows.append([independent_saturation(x, y, kk) for x, y in zip(a, b)])
    return pd.DataFrame({"top1": rows[0], "topk": rows[1], "k": k},
                        index=pd.Index(final.layer_ids, name="layer"))
