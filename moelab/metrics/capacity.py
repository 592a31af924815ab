"""Capacity-factor simulation: which assignments a fixed-capacity MoE would drop.

    >>> import numpy as np, moelab
    >>> ex = np.zeros((8, 1, 1), int)                            # (tokens, layers, k): all to expert 0
    >>> capacity_drops(moelab.RoutingTrace.from_arrays(ex, num_experts=4), [1.0], [8])["dropped"].item()
    0.75

GShard (Lepikhin et al. 2020, §2.2) and Switch Transformer (Fedus et al. 2021,
§2.2) give every expert a fixed buffer per batch of T tokens:

    C = ⌈cf · k · T / E⌉          (capacity factor cf, k experts per token, E experts)

Assignments beyond C to one expert in one batch are dropped (the token skips
that expert; the residual connection carries it). `cf = 1` is exactly enough
for perfect balance; `cf ≥ E / k` can never drop (C ≥ T, and no expert gets
more than one slot of a token).

Priority policy (GShard's): within a batch all rank-0 (first-choice)
assignments are served first, in token order, then all rank-1 assignments,
and so on. How many assignments an expert drops in a batch does not depend on
the order, max(0, n_e − C); the policy decides which ranks lose them:
rank r drops max(0, N_≤r − C) − max(0, N_<r − C), N_≤r = assignments of
ranks 0..r to that expert. So first choices are dropped only when the
expert's first choices alone overflow it.

Batches are consecutive chunks of `batch_size` tokens in the trace's stored
order (the order they were recorded, i.e. the order a serving system saw
them; the last chunk may be shorter and gets its own, smaller C), or whole
sequences with `batch_size="sequence"`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import streamable, apply_where, check_trace

__all__ = ["capacity_drops", "capacity"]


def capacity(capacity_factor: float, tokens, top_k: int, num_experts: int):
    """C = ⌈cf · k · T / E⌉, the per-expert buffer for a batch of T tokens.

        >>> capacity(1.25, 4096, 2, 8)
        1280
    """
    x = np.round(float(capacity_factor) * top_k * np.asarray(tokens, dtype=np.float64) / num_experts, 9)
    c = np.ceil(x).astype(np.int64)
    return int(c) if c.ndim == 0 else c


def _batches(trace: RoutingTrace, batch_size) -> tuple[np.ndarray, int]:
    T = trace.num_tokens
    if isinstance(batch_size, str):
        if batch_size != "sequence":
            raise ValueError(
                f"batch_size={batch_size!r} is not understood: give a number of tokens (e.g. 4096) or 'sequence'"
            )
        codes, _ = pd.factorize(trace.sequence, sort=True)
        return codes.astype(np.int64), int(codes.max()) + 1 if T else 0
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive number of tokens or 'sequence'")
    codes = np.arange(T, dtype=np.int64) // int(batch_size)
    return codes, int(codes[-1]) + 1 if T else 0


@streamable
def capacity_drops(
    trace: RoutingTrace,
    capacity_factors=(1.0, 1.25, 1.5, 2.0),
    batch_sizes=(4096,),
    *,
    where=None,
) -> pd.DataFrame:
    """Fraction of expert assignments dropped at each capacity factor and batch size.

        >>> ex = np.array([[[0, 1]], [[0, 1]], [[0, 2]], [[3, 0]]])          # (tokens, layers, k)
        >>> capacity_drops(RoutingTrace.from_arrays(ex, num_experts=4), [1.0], [4])["dropped"].item()
        0.25

    Index (layer, capacity_factor, batch_size). Columns: `capacity` (C of a
    full batch; of the longest sequence with batch_size="sequence"),
    `batches`, `dropped` (dropped / all assignments), `dropped_first`
    (dropped rank-0 / all rank-0 assignments). See the module docstring for
    the priority policy.
    """
    trace = apply_where(check_trace(trace, "capacity_drops"), where)
    T, L, E, k = trace.num_tokens, trace.num_layers, trace.num_experts, trace.top_k
    cfs, bss = _check_factors(capacity_factors), _batch_list(batch_sizes)
    over_all = np.zeros((len(bss), L, len(cfs)), np.int64)
    over_first = np.zeros_like(over_all)
    B, longest = np.zeros(len(bss), np.int64), np.zeros(len(bss), np.int64)
    for i, bs in enumerate(bss):
        codes, B[i] = _batches(trace, bs)
        sizes = np.bincount(codes, minlength=B[i])                       # (B,) tokens per batch
        longest[i] = sizes.max(initial=0)
        n = batch_counts(trace.experts, codes, int(B[i]), E)            # (batches, layers, rank, expert)
        over_all[i], over_first[i] = overflow(n, sizes, cfs, k, E)
    return _drops_frame(over_all, over_first, B, longest, T, bss, cfs, trace.layer_ids, k, E)


def _check_factors(capacity_factors) -> list[float]:
    cfs = [float(c) for c in np.atleast_1d(np.asarray(capacity_factors, dtype=object))]
    for c in cfs:
        if not c > 0:
            raise ValueError(f"capacity factor {c!r} must be > 0, e.g. capacity_factors=[1.0, 1.25, 2.0]")
    return cfs


def _batch_list(batch_sizes) -> list:
    bss = list(batch_sizes) if not isinstance(batch_sizes, (str, int)) else [batch_sizes]
    for bs in bss:
        if isinstance(bs, str) and bs != "sequence":
            raise ValueError(
                f"batch_size={bs!r} is not understood: give a number of tokens (e.g. 4096) or 'sequence'")
        if not isinstance(bs, str) and int(bs) < 1:
            raise ValueError(f"batch_size={bs!r} must be a positive number of tokens or 'sequence'")
    return bss


def batch_counts(experts: np.ndarray, codes: np.ndarray, B: int, E: int) -> np.ndarray:
    """Assignments per (batch, layer, rank, expert), (B, L, k, E), from experts (tokens, L, k) and batch codes."""
    T, L, k = experts.shape
    base = codes[:, None] * (k * E) + np.arange(k) * E                   # (tokens, k)
    out = np.zeros((B, L, k, E), np.int64)
    for l in range(L):
        key = (base + experts[:, l, :]).reshape(-1)                      # (tokens * k,)
        out[:, l] = np.bincount(key, minlength=B * k * E).reshape(B, k, E)
    return out


def overflow(n: np.ndarray, sizes: np.ndarray, cfs, k: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    """Dropped assignments (all ranks, first choices), each (L, len(cfs)), of whole batches
    n (B, L, k, E) of `sizes` (B,) tokens. Sums over batches: add the results of disjoint batch sets."""
    L = n.shape[1]
    over_all, over_first = np.zeros((L, len(cfs)), np.int64), np.zeros((L, len(cfs)), np.int64)
    for l in range(L):
        cum = n[:, l].cumsum(1)                                          # assignments of ranks ≤ r
        for j, cf in enumerate(cfs):
            C = capacity(cf, sizes, k, E)[:, None]                       # (B, 1)
            over_first[l, j] = np.maximum(cum[:, 0, :] - C, 0).sum()
            over_all[l, j] = np.maximum(cum[:, -1, :] - C, 0).sum()
    return over_all, over_first


def _drops_frame(over_all, over_first, B, longest, T, bss, cfs, layer_ids, k, E) -> pd.DataFrame:
    """capacity_drops' frame from dropped counts (batch sizes, L, cfs), batches and longest batch per batch size."""
    rows = []
    for i, bs in enumerate(bss):
        for l in range(len(layer_ids)):
            for j, cf in enumerate(cfs):
                rows.append(
                    (
                        int(layer_ids[l]),
                        cf,
                        bs if isinstance(bs, str) else int(bs),
                        capacity(cf, int(longest[i]), k, E),
                        int(B[i]),
                        over_all[i, l, j] / max(T * k, 1),
                        over_first[i, l, j] / max(T, 1),
                    )
                )
    df = pd.DataFrame(
        rows, columns=["layer", "capacity_factor", "batch_size", "capacity", "batches", "dropped", "dropped_first"]
    )
    return df.set_index(["layer", "capacity_factor", "batch_size"])
