"""
How many distinct experts a batch of tokens touches -- the quantity that sets an MoE's decode cost.

In a decode step of B tokens, each MoE layer must read the weights of every expert that at
least one token picked. With uniform top-k routing (each token picks a uniformly random
k-subset of E experts, independently of the other tokens), an expert is missed by one token
with probability 1 - k/E, so

    E[distinct] = E * (1 - (1 - k/E)^B)                                        (closed form)

B=1 gives k; B -> infinity gives E. Mixtral (E=8, k=2): 2, 5.47, 7.20, 7.92, 8.00 at
B = 1, 4, 8, 16, 32. A real router is not uniform: tokens of one sequence tend to reuse
experts, so `distinct_experts_per_batch` measures it from a routing trace instead.

Trace interface (duck-typed, e.g. `moelab.RoutingTrace`): `experts` (tokens, layers, k)
int array of expert ids, `num_experts`, `top_k`, `num_layers`, `sequence` (tokens,) and
`step` (tokens,) with 0 = prefill, n = n-th decode step.
"""

from __future__ import annotations

import numpy as np


def expected_distinct_experts(num_experts: int, top_k: int, batch: int) -> float:
    """Expected number of distinct experts a batch of `batch` tokens touches in one layer (uniform routing).

    >>> round(expected_distinct_experts(8, 2, 4), 2)
    5.47
    """
    if not 0 < top_k <= num_experts:
        raise ValueError(f"need 0 < top_k <= num_experts, got top_k={top_k}, num_experts={num_experts}")
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)


def simulate_distinct_experts(num_experts: int, top_k: int, batch: int, samples: int = 2000, seed: int = 0) -> float:
    """Monte-Carlo estimate of `expected_distinct_experts` (each token: a random k-subset).

    >>> abs(simulate_distinct_experts(8, 2, 4) - expected_distinct_experts(8, 2, 4)) < 0.1
    True
    """
    rng = np.random.default_rng(seed)
    # a random k-subset per token = the first k of a random permutation; (samples, batch, k)
    picks = np.argsort(rng.random((samples, batch, num_experts)), axis=-1)[..., :top_k]
    hit = np.zeros((samples, num_experts), dtype=bool)
    hit[np.arange(samples)[:, None, None], picks] = True
    return float(hit.sum(-1).mean())


def _draw_batch(rng, n_tokens: int, batch: int, groups) -> np.ndarray:
    """Token indices of one batch: one token from each of `batch` distinct sequences where possible.

    groups: None (no sequence ids) or (order, starts, counts) of the tokens sorted by sequence.
    """
    if groups is None:
        return rng.choice(n_tokens, size=batch, replace=batch > n_tokens)
    order, starts, counts = groups
    chosen = rng.choice(len(starts), size=min(batch, len(starts)), replace=False)
    idx = order[starts[chosen] + rng.integers(0, counts[chosen])]
    if batch > len(idx):  # fewer sequences than batch: fill with other tokens
        rest = np.setdiff1d(np.arange(n_tokens), idx)
        extra = rng.choice(rest, size=batch - len(idx), replace=batch - len(idx) > len(rest))
        idx = np.concatenate([idx, extra])
    return idx


def distinct_experts_per_batch(
    experts,
    batch_sizes=(1, 4, 8, 16, 32),
    num_experts: int | None = None,
    samples: int = 200,
    seed: int = 0,
    sequence=None,
    per_layer: bool = False,
) -> dict[int, float] | dict[int, np.ndarray]:
    """Mean number of distinct experts per layer touched by batches of B tokens drawn from a trace.

    experts: (tokens, layers, k) int array of routed expert ids. sequence: optional (tokens,)
    sequence id per token; a batch then takes one token from each of B distinct sequences
    (as in a serving batch), where there are that many. Returns {B: mean over layers and
    samples} or, with per_layer=True, {B: (layers,) array}.

    >>> ex = np.zeros((100, 3, 2), dtype=np.int16); ex[..., 1] = 1  # collapsed router
    >>> distinct_experts_per_batch(ex, [1, 16], num_experts=8)
    {1: 2.0, 16: 2.0}
    """
    ex = np.asarray(experts)
    if ex.ndim != 3:
        raise ValueError(f"experts must be (tokens, layers, k), got shape {ex.shape}; add a layer axis with ex[:, None, :]")
    T, L, k = ex.shape
    E = int(num_experts) if num_experts is not None else int(ex.max()) + 1
    seq = None if sequence is None else np.asarray(sequence)
    if seq is not None and seq.shape != (T,):
        raise ValueError(f"sequence must have shape ({T},) like experts' first axis, got {seq.shape}")
    groups = None
    if seq is not None:
        order = np.argsort(seq, kind="stable")
        _, starts, counts = np.unique(seq[order], return_index=True, return_counts=True)
        groups = (order, starts, counts)
    rng = np.random.default_rng(seed)
    out = {}
    for B in batch_sizes:
        idx = np.stack([_draw_batch(rng, T, int(B), groups) for _ in range(samples)])  # (samples, B)
        sel = ex[idx].astype(np.int64)  # (samples, B, L, k)
        hit = np.zeros((samples, L, E), dtype=bool)
        hit[np.arange(samples)[:, None, None, None], np.arange(L)[None, None, :, None], sel] = True
        d = hit.sum(-1).mean(0)  # (L,)
        out[int(B)] = d if per_layer else float(d.mean())
    return out


def distinct_experts_from_trace(trace, batch_sizes=(1, 4, 8, 16, 32), decode_only: bool = False, **kw):
    """`distinct_experts_per_batch` on a routing trace object (see module docstring for the interface).

    decode_only=True keeps only decode-step tokens (trace.step > 0), the tokens a decode
    batch actually contains.
    """
    ex, seq = np.asarray(trace.experts), np.asarray(trace.sequence)
    if decode_only:
        keep = np.asarray(trace.step) > 0
        if not keep.any():
            raise ValueError("decode_only=True but the trace has no decode tokens (all trace.step == 0)")
        ex, seq = ex[keep], seq[keep]
    return distinct_experts_per_batch(ex, batch_sizes, num_experts=trace.num_experts, sequence=seq, **kw)
