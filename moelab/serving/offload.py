"""
Expert offloading: a per-layer GPU cache of C experts, simulated over a routing trace.

    >>> import numpy as np
    >>> from moelab.serving import simulate_cache
    >>> ex = np.random.default_rng(0).integers(0, 8, (20_000, 2, 1))   # (tokens, layers, k): iid uniform
    >>> r = simulate_cache(ex, capacity=4, policy="lru", num_experts=8)
    >>> [round(float(h), 2) for h in r.hit_rate]                       # C / E = 0.5
    [0.5, 0.5]

The setting of Eliseev & Mazur 2023 ("Fast Inference of Mixture-of-Experts Language Models with
Offloading", arXiv:2312.17238; github.com/dvmazur/mixtral-offloading): decoding one token at a
time, each MoE layer keeps C of its E experts in GPU memory; the others live in host RAM and are
copied over the host link when the router asks for them. Tokens are served in trace order, one
after the other (a held-out trace from a teacher-forced forward pass is read as if generated);
the cache is never flushed between sequences.

Per token and layer the router asks for a set S of k distinct experts, which must all be on the
GPU: hits = |S ∩ cache|, the k - hits others are loaded (misses), then while the cache holds more
than C experts one expert *not in S* is evicted, chosen by the policy:

    lru       least recently used                                   (mixtral-offloading's policy)
    lfu       fewest uses since the start of the trace; ties: LRU
    belady    next use farthest in the future (Bélády 1966's MIN; offline, optimal for demand paging)
    prefetch  before the router runs, load a predicted set P (evicting LRU among cache \\ P), then
              serve S as LRU does. Prefetched loads overlap compute; only demand misses stall.
              Predictors: `predict_previous_token` ("this token's experts = the previous token's"),
              `predict_from_previous_layer` (layer l's first choice -> layer l+1's likely top-k,
              a transition table fitted on a trace) and `moelab.serving.lookahead` (Eliseev &
              Mazur's speculative gate: layer l+1's router applied to layer l's hidden state).
Remaining ties are broken by evicting the lowest expert id. With the previous-token predictor,
prefetch == LRU exactly (LRU already holds the previous token's experts): tests check it.

The simulation itself is `moelab.serving.engine` (bit masks, all layers and chunks of the trace in
lock-step, exact repair); its results equal a token-by-token simulation (tested against a
brute-force one), and 1M tokens x 32 layers x top-2 take seconds (bench/bench_serving.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .engine import POLICIES, Stream


# ----------------------------------------------------------------------------------- inputs
def as_experts(x, num_experts=None, *, need=()):
    """(experts (tokens, layers, k) int, num_experts, trace-or-None) from a RoutingTrace or an array.

    `need` names per-token fields the caller requires (e.g. "sequence"); a bare array has none.
    """
    from ..routing_trace import RoutingTrace

    if isinstance(x, RoutingTrace):
        for name in need:
            if getattr(x, name, None) is None and name not in x.columns:
                raise ValueError(f"this simulation needs the per-token column {name!r}; the trace has "
                                 f"{sorted(x.columns)} plus the token fields. Attach it with trace.with_columns({name}=...)")
        return np.asarray(x.experts), int(x.num_experts), x
    ex = np.asarray(x)
    if ex.ndim != 3 or (ex.size and not np.issubdtype(ex.dtype, np.integer)):
        raise ValueError(f"expected a RoutingTrace or an integer array (tokens, layers, k); got shape {ex.shape}, "
                         f"dtype {ex.dtype}")
    if need:
        raise ValueError(f"this simulation needs the per-token column(s) {list(need)}, which a bare experts array "
                         f"of shape {ex.shape} does not have; pass a RoutingTrace (RoutingTrace.from_arrays(ex, "
                         f"num_experts=E, sequence=..., position=...))")
    E = int(num_experts) if num_experts is not None else (int(ex.max()) + 1 if ex.size else 1)
    if ex.size and (ex.min() < 0 or ex.max() >= E):
        raise ValueError(f"expert ids must lie in [0, {E}); found {ex.min()}..{ex.max()}; pass num_experts=")
    return ex, E, None


def check_capacity(capacity, k: int, E: int) -> int:
    c = int(capacity)
    if c != capacity or c < k or c > E:
        raise ValueError(f"cache size capacity={capacity!r} must be an integer with k <= capacity <= E, here "
                         f"{k} <= capacity <= {E}: a token needs all its k={k} experts on the GPU at once, and "
                         f"a layer has only E={E} experts")
    return c


# ----------------------------------------------------------------------------------- API
@dataclass
class CacheResult:
    """What `simulate_cache` found; per-layer arrays are indexed by layer position."""

    policy: str
    capacity: int
    num_experts: int
    top_k: int
    tokens: int
    hits: np.ndarray  # (layers,) expert requests found on the GPU
    requests: np.ndarray  # (layers,) expert requests = tokens * k
    prefetch_loads: np.ndarray  # (layers,) experts loaded speculatively (prefetch only; 0 otherwise)
    per_token_hits: np.ndarray | None = field(default=None, repr=False)  # (tokens, layers) int8 if kept

    @property
    def misses(self) -> np.ndarray:  # (layers,) demand loads, on the critical path
        return self.requests - self.hits

    @property
    def hit_rate(self) -> np.ndarray:  # (layers,)
        return self.hits / np.maximum(self.requests, 1)

    @property
    def loads(self) -> np.ndarray:  # (layers,) every host->GPU copy, demand + speculative
        return self.misses + self.prefetch_loads

    def experts_loaded_per_token(self) -> float:
        """Mean experts copied host->GPU per token, summed over layers (demand + prefetch)."""
        return float(self.loads.sum() / max(self.tokens, 1))

    def bytes_per_token(self, expert_bytes: float) -> float:
        """Mean host->GPU bytes per token (all layers) for experts of `expert_bytes` each."""
        return self.experts_loaded_per_token() * float(expert_bytes)


def simulate_cache(x, capacity: int, policy: str = "lru", *, num_experts=None, predicted=None,
                   keep_per_token: bool = False, chunk: int | None = None, warmup: int | None = None,
                   stream: Stream | None = None) -> CacheResult:
    """Simulate a per-layer cache of `capacity` experts under `policy` over a trace (see module doc).

    x: a RoutingTrace or experts (tokens, layers, k). predicted: (tokens, layers, k') expert ids to
    prefetch for policy="prefetch" (default: `predict_previous_token(x)`); ids < 0 mean "none".
    chunk, warmup: the engine's chunking (results do not depend on them); stream: a prepared
    `engine.Stream` of the same trace, reused across calls (`hit_rate_table` does).

        >>> cyc = np.arange(5 * 100).reshape(-1, 1, 1) % 5                 # cycle through C + 1 experts
        >>> simulate_cache(cyc, 4, "lru", num_experts=8).hit_rate.tolist()
        [0.0]
    """
    ex, E, _ = as_experts(x, num_experts)
    T, L, k = ex.shape
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}; use one of {POLICIES}")
    C = check_capacity(capacity, k, E)
    if policy == "prefetch" and predicted is None:
        predicted = predict_previous_token(x, num_experts=E)
    if policy != "prefetch":
        predicted = None
    if predicted is not None:
        predicted = np.asarray(predicted)
        if predicted.ndim != 3 or predicted.shape[:2] != (T, L):
            raise ValueError(f"predicted has shape {predicted.shape}; expected ({T}, {L}, k') like the experts")
        if predicted.shape[2] > C:
            raise ValueError(f"predicted sets of {predicted.shape[2]} experts cannot fit a cache of {C}")
        if predicted.size and predicted.max() >= E:
            raise ValueError(f"predicted expert id {predicted.max()} is not below num_experts={E}")
    if stream is None:
        stream = Stream(ex, E, chunk=chunk, warmup=warmup)
    h, lo = stream.run(C, policy, predicted)  # (T, L) int8 each
    return CacheResult(policy, C, E, k, T, h.sum(0, dtype=np.int64), np.full(L, T * k, np.int64),
                       lo.sum(0, dtype=np.int64), h if keep_per_token else None)


# ----------------------------------------------------------------------------------- predictors
def predict_previous_token(x, *, num_experts=None, within_sequence: bool = False) -> np.ndarray:
    """(tokens, layers, k) prediction "token t uses token t-1's experts"; -1 for the first token
    (and, with within_sequence=True, for each sequence's first token; needs a RoutingTrace)."""
    ex, E, tr = as_experts(x, num_experts, need=("sequence",) if within_sequence else ())
    pred = np.full(ex.shape, -1, np.int16)  # ids < 64, -1 = none: a quarter of int64's memory
    pred[1:] = ex[:-1]
    if within_sequence:
        seq = np.asarray(tr.sequence)
        first = np.r_[True, seq[1:] != seq[:-1]]
        pred[first] = -1
    return pred


def predict_from_previous_layer(x, *, fit=None, num_experts=None) -> np.ndarray:
    """(tokens, layers, k) prediction of layer l's experts from layer l-1's first choice.

    A table M[l, i, e] = how often expert e is among layer l's top-k when layer l-1's first choice
    is i, counted on `fit` (another trace or array; default: x itself, i.e. in-sample); the
    prediction is the k largest entries of the row. Layer 0 falls back to the previous token.
    """
    ex, E, _ = as_experts(x, num_experts)
    fx = ex if fit is None else as_experts(fit, E)[0]
    T, L, k = ex.shape
    pred = predict_previous_token(ex, num_experts=E)
    for l in range(1, L):
        prev = np.repeat(fx[:, l - 1, 0].astype(np.int64), fx.shape[2])
        M = np.bincount(prev * E + fx[:, l].reshape(-1), minlength=E * E).reshape(E, E)
        top = np.argsort(-M, axis=1, kind="stable")[:, :k]  # (E, k)
        pred[:, l] = top[ex[:, l - 1, 0]]
    return pred


# ----------------------------------------------------------------------------------- tables
def hit_rate_table(x, capacities=None, policies=("lru", "lfu", "belady", "prefetch"), *, num_experts=None,
                   predicted=None, label=None):
    """Long DataFrame: policy, capacity, layer, hit_rate, experts_loaded_per_token, vs_belady.

    `vs_belady` = the policy's mean hit rate / Bélády's at the same capacity (1 = optimal)."""
    import pandas as pd

    ex, E, _ = as_experts(x, num_experts)
    k = ex.shape[2]
    capacities = range(k, E + 1) if capacities is None else capacities
    rows = []
    stream = Stream(ex, E)
    for C in capacities:
        res = {p: simulate_cache(ex, C, p, num_experts=E, predicted=predicted if p == "prefetch" else None,
                                 stream=stream)
               for p in dict.fromkeys(tuple(policies) + ("belady",))}
        best = res["belady"].hit_rate.mean()
        for p in policies:
            r = res[p]
            for l, h in enumerate(r.hit_rate):
                rows.append(dict(policy=p, capacity=int(C), layer=l, hit_rate=float(h),
                                 experts_loaded_per_token=r.experts_loaded_per_token(),
                                 vs_belady=float(r.hit_rate.mean() / best) if best > 0 else np.nan))
    df = pd.DataFrame(rows)
    if label is not None:
        df.insert(0, "trace", label)
    return df
