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
* Near-uniform load: OLMoE's paper measured Mixtral-8x7B's experts "activated close to the uniform
  routing baseline for all layers and domains" (arXiv:2409.02060 §5.3, Figure 22, bottom); the
  Mixtral paper's Figure 7 draws each domain's shares beside 1/8, and its text says only that the
  domains are routed alike. The generator's stationary load is exactly uniform (it is symmetric in
  the experts); only sampling noise remains.

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
# All 48 values re-checked against a transcription of the paper (issue 17): moelab.papers.VERIFIED.
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


def _transition_table(E: int):
    """(E*E, O) uint: next state f*E + s from state f'*E + s' and outcome o, with O outcomes laid out as
    [copy | shift: E-1 | fresh: E(E-1) | disjoint: (E-2)(E-3)]; returns the table and the move offsets."""
    sizes = np.array([1, E - 1, E * (E - 1), (E - 2) * (E - 3)])
    off = np.concatenate([[0], np.cumsum(sizes)])
    dt = np.uint8 if E * E <= 256 else np.uint16
    tab = np.zeros((E * E, off[-1]), dt)
    p = np.arange(E * (E - 1))
    f2 = p // (E - 1)
    fresh = f2 * E + (p % (E - 1)) + (p % (E - 1) >= f2)
    for f in range(E):
        for s in range(E):
            if f == s:
                continue
            rest = [e for e in range(E) if e not in (f, s)]
            z = [e for e in range(E) if e != s]
            row = tab[f * E + s]
            row[0] = f * E + s
            row[off[1]:off[2]] = [s * E + e for e in z]
            row[off[2]:off[3]] = fresh
            row[off[3]:off[4]] = [a * E + b for a in rest for b in rest if b != a]
    return tab, off, sizes


def mixtral_like_trace(tokens: int = 100_000, layers: int = 32, seq_len: int = 1024, *, num_experts: int = 8,
                       first=None, any_=None, seed: int = 0):
    """A RoutingTrace of `tokens` tokens in sequences of `seq_len`, top-2 of `num_experts`, calibrated to
    per-layer repeat rates (default: `table5_targets(layers)`). Weights are not modelled (None).

    All random draws are made at once: per token and layer a move (against the layer's cumulative
    move probabilities) and a uniform integer choosing its outcome; a precomputed transition table
    then advances every sequence and layer together, one numpy gather per position."""
    from ..routing_trace import RoutingTrace

    E, T, L = int(num_experts), int(tokens), int(layers)
    if T <= 0 or L <= 0 or int(seq_len) <= 0 or not 4 <= E <= 16:
        raise ValueError(f"need tokens, layers, seq_len > 0 and 4 <= num_experts <= 16; got tokens={tokens!r}, "
                         f"layers={layers!r}, seq_len={seq_len!r}, num_experts={num_experts!r}")
    if first is None or any_ is None:
        f0, a0 = table5_targets(L)
        first = f0 if first is None else first
        any_ = a0 if any_ is None else any_
    cum = np.cumsum(move_probabilities(np.broadcast_to(first, (L,)), np.broadcast_to(any_, (L,)), E), -1)  # (L, 4)
    tab, off, sizes = _transition_table(E)
    O = tab.shape[1]
    M = int(np.lcm.reduce(sizes[1:]))  # one draw mod each move's outcome count stays exactly uniform
    rng = np.random.default_rng(seed)
    P = min(int(seq_len), T)
    S = -(-T // P)
    u = rng.random((P, S, L), dtype=np.float32)
    move = (u > cum[:, 0].astype(np.float32)).view(np.uint8)
    move += u > cum[:, 1].astype(np.float32)
    move += u > cum[:, 2].astype(np.float32)
    del u
    w = rng.integers(0, M, (P, S, L), dtype=np.uint16 if M < 2**16 else np.uint32)
    o = (off[:-1].astype(w.dtype)[move] + w % sizes.astype(w.dtype)[move]).astype(np.uint16)  # (P, S, L) outcome
    del w, move
    flat = tab.reshape(-1)
    state = np.empty((P, S, L), tab.dtype)
    state[0] = tab[1, off[2] + rng.integers(0, E * (E - 1), (S, L))]  # a uniform pair starts each sequence
    for i in range(1, P):
        state[i] = flat[state[i - 1].astype(np.int32) * O + o[i]]
    del o
    state = state.transpose(1, 0, 2).reshape(S * P, L)[:T]
    ex = np.stack([state // E, state % E], axis=-1).astype(np.uint8)  # (tokens, layers, 2)
    seq = (np.arange(T) // P).astype(np.int64)
    return RoutingTrace.from_arrays(ex, num_experts=E, sequence=seq, position=np.arange(T) % P,
                                    meta={"model": "synthetic Mixtral-like router (Table 5 calibrated, uniform load)"})
