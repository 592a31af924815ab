"""
A Mixtral-like synthetic router: top-2 of 8 routing with the published locality, uniform load.

    >>> from moelab.serving import mixtral_like_trace
    >>> tr = mixtral_like_trace(tokens=4096, seq_len=512, seed=0)
    >>> tr.experts.shape                                        # (tokens, layers, k)
    (4096, 32, 2)

Real Mixtral 8x7B traces cannot be made here, and the embedded model is far less balanced than
Mixtral, so the serving simulations also run on this stand-in, calibrated to two published facts
of Jiang et al. 2024, "Mixtral of Experts" (arXiv:2401.04088v1), §5 "Routing analysis":

* Table 5, per layer: the share of consecutive tokens whose first choice repeats ("First choice")
  and whose top-2 sets share an expert ("First or second choice"), on The Pile's domains, at
  layers 0, 15 and 31. `TABLE5` holds the table; `table5_targets()` averages the domains and
  interpolates linearly over the 32 layers (only layers 0, 15, 31 are published).
* Figure 7: expert load is close to uniform in every layer and domain. The generator's stationary
  load is exactly uniform (it is symmetric in the experts); only sampling noise remains.

Each sequence is a Markov chain over ordered pairs (first, second) of distinct experts, per layer
independently; token t draws one of four moves from token t-1's pair (f', s'):

    copy      (f', s')                                      first repeats, sets share
    shift     (s', uniform != s')                           first differs, sets share
    fresh     uniform pair                                  repeats by chance: 1/E, r = 1 - C(E-2,2)/C(E,2)
    disjoint  uniform pair avoiding {f', s'}                first differs, sets disjoint

with probabilities solving  first = copy + fresh/E,  any = copy + shift + fresh r,  taking the
most "fresh" solution (shift = 0 when `any` is at or below random, disjoint = 0 otherwise). Every
move maps the uniform distribution over pairs to itself, so load stays uniform.
"""

from __future__ import annotations

from math import comb

import numpy as np

# Jiang et al. 2024 (arXiv:2401.04088v1) §5, Table 5 "Percentage of expert assignment repetitions":
# domain -> (first choice at layers 0, 15, 31, first or second choice at layers 0, 15, 31), in %.
TABLE5 = {
    "ArXiv": (14.0, 27.9, 22.7, 46.5, 62.3, 52.9),
    "DM Mathematics": (14.1, 28.4, 19.7, 44.9, 67.0, 44.5),
    "Github": (14.9, 28.1, 19.7, 49.9, 66.9, 49.2),
    "Gutenberg": (13.9, 26.1, 26.3, 49.5, 63.1, 52.2),
    "PhilPapers": (13.6, 25.3, 22.1, 46.9, 61.9, 51.3),
    "PubMed Abstracts": (14.2, 24.6, 22.0, 48.6, 61.6, 51.8),
    "StackExchange": (13.6, 27.2, 23.6, 48.2, 64.6, 53.6),
    "Wikipedia (en)": (14.4, 23.6, 25.3, 49.8, 62.1, 51.8),
}
TABLE5_LAYERS = (0, 15, 31)


def table5_targets(layers: int = 32, domains=None) -> tuple[np.ndarray, np.ndarray]:
    """(first (layers,), any (layers,)) target repeat rates as fractions: Table 5 averaged over
    `domains` (default all eight), linear in the layer index between layers 0, 15 and 31."""
    names = list(TABLE5) if domains is None else list(domains)
    for n in names:
        if n not in TABLE5:
            raise ValueError(f"domain {n!r} is not in Mixtral's Table 5; use some of {list(TABLE5)}")
    t = np.mean([TABLE5[n] for n in names], axis=0) / 100
    pos = np.linspace(0, 31, layers) if layers > 1 else np.zeros(1)
    return np.interp(pos, TABLE5_LAYERS, t[:3]), np.interp(pos, TABLE5_LAYERS, t[3:])


def move_probabilities(first, any_, E: int = 8) -> np.ndarray:
    """(..., 4) probabilities of (copy, shift, fresh, disjoint) hitting repeat rates (first, any)."""
    f, a = np.broadcast_arrays(np.asarray(first, float), np.asarray(any_, float))
    r = 1 - comb(E - 2, 2) / comb(E, 2)
    fresh0 = (1 - a) / (1 - r)  # disjoint = 0
    copy0 = f - fresh0 / E
    shift0 = 1 - copy0 - fresh0
    fresh1 = (a - f) / (r - 1 / E)  # shift = 0
    copy1 = f - fresh1 / E
    dis1 = 1 - copy1 - fresh1
    use0 = shift0 >= 0
    p = np.where(use0[..., None], np.stack([copy0, shift0, fresh0, 0 * f], -1),
                 np.stack([copy1, 0 * f, fresh1, dis1], -1))
    if (p < -1e-12).any() or (p > 1 + 1e-12).any():
        raise ValueError(f"repeat rates first={f.tolist()}, any={a.tolist()} cannot be reached by this router")
    return np.clip(p, 0, 1)


def _skip(u, excluded):
    """Map u in [0, E - len(excluded)) to the u-th value not in `excluded` (sorted per row)."""
    x = u.copy()
    for v in np.sort(np.stack(excluded), axis=0):
        x += (x >= v).astype(x.dtype)
    return x


def mixtral_like_trace(tokens: int = 100_000, layers: int = 32, seq_len: int = 1024, *, num_experts: int = 8,
                       first=None, any_=None, seed: int = 0):
    """A RoutingTrace of `tokens` tokens in sequences of `seq_len`, top-2 of `num_experts`, calibrated to
    per-layer repeat rates (default: `table5_targets(layers)`). Weights are not modelled (None)."""
    from ..routing_trace import RoutingTrace

    E, T, L = int(num_experts), int(tokens), int(layers)
    if T <= 0 or L <= 0 or seq_len <= 0 or E < 4:
        raise ValueError(f"need tokens, layers, seq_len > 0 and num_experts >= 4; got {tokens}, {layers}, {seq_len}, {E}")
    if first is None or any_ is None:
        f0, a0 = table5_targets(L)
        first = f0 if first is None else first
        any_ = a0 if any_ is None else any_
    cum = np.cumsum(move_probabilities(np.broadcast_to(first, (L,)), np.broadcast_to(any_, (L,)), E), -1)  # (L, 4)
    rng = np.random.default_rng(seed)
    S = -(-T // seq_len)
    out = np.empty((seq_len, S, L, 2), np.uint8)
    f = rng.integers(0, E, (S, L)).astype(np.uint8)
    s = _skip(rng.integers(0, E - 1, (S, L)).astype(np.uint8), [f])
    out[0, :, :, 0], out[0, :, :, 1] = f, s
    M = int(np.lcm.reduce([E, E - 1, E - 2, E - 3]))  # one draw mod E, E-1, E-2, E-3 stays exactly uniform
    block = 64
    for b0 in range(1, seq_len, block):
        P = min(block, seq_len - b0)
        u = rng.random((P, S, L), dtype=np.float32)
        move = (u[..., None] > cum[None, None, :, :3].astype(np.float32)).sum(-1).astype(np.uint8)  # 0..3
        r1 = rng.integers(0, M, (P, S, L), dtype=np.uint16)
        r2 = rng.integers(0, M, (P, S, L), dtype=np.uint16)
        fresh_f = (r1 % E).astype(np.uint8)
        fresh_s = _skip((r2 % (E - 1)).astype(np.uint8), [fresh_f])
        r1s, r2s, r2t = (r1 % (E - 2)).astype(np.uint8), (r2 % (E - 1)).astype(np.uint8), (r2 % (E - 3)).astype(np.uint8)
        for i in range(P):
            m = move[i]
            lo, hi = np.minimum(f, s), np.maximum(f, s)
            x = r1s[i] + (r1s[i] >= lo)  # disjoint first: the r-th expert outside {f, s}
            dis_f = x + (x >= hi)
            y = r2t[i].copy()  # disjoint second: outside {f, s, dis_f}
            for v in np.sort(np.stack([lo, hi, dis_f]), axis=0):
                y += y >= v
            z = r2s[i] + (r2s[i] >= s)  # shift second: anything but the old second
            nf = np.where(m == 0, f, np.where(m == 1, s, np.where(m == 2, fresh_f[i], dis_f)))
            ns = np.where(m == 0, s, np.where(m == 1, z, np.where(m == 2, fresh_s[i], y)))
            f, s = nf.astype(np.uint8), ns.astype(np.uint8)
            out[b0 + i, :, :, 0], out[b0 + i, :, :, 1] = f, s
    out = out.transpose(1, 0, 2, 3)
    ex = out.reshape(S * seq_len, L, 2)[:T]
    seq = (np.arange(T) // seq_len).astype(np.int64)
    return RoutingTrace.from_arrays(ex, num_experts=E, sequence=seq, position=np.arange(T) % seq_len,
                                    meta={"model": "synthetic Mixtral-like router (Table 5 / Figure 7 calibrated)"})
