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
              Predictors: `predict_previous_token` ("this token's experts = the previous token's")
              and `predict_from_previous_layer` (layer l's first choice -> layer l+1's likely top-k,
              a transition table fitted on a trace: the trace-only cousin of Eliseev & Mazur's
              speculative gate applied to the previous layer's hidden state).
Remaining ties are broken by evicting the lowest expert id. With the previous-token predictor,
prefetch == LRU exactly (LRU already holds the previous token's experts): tests check it.

Every policy is "evict the lowest key", and every key is a property of the request stream alone
(last use, use count, next use), not of the cache. So the only state is the cache *set*, which lets
the simulator run thousands of chunks of the trace in lock-step (numpy over chunks), each started
after a short warm-up, and then repair, exactly, every chunk whose assumed start set differs from
its predecessor's end set (usually none). Results equal a token-by-token simulation (tested
against a brute-force one); 1M tokens x 32 layers x top-2 take seconds (bench/bench_serving.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POLICIES = ("lru", "lfu", "belady", "prefetch")
_BIG = np.iinfo(np.int64).max  # replaced by the key dtype's max where keys are int32


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


# ----------------------------------------------------------------------------------- keys
def _requests(ex_l, E: int) -> np.ndarray:
    """(T, E) bool: expert e requested by token t (one layer)."""
    T = ex_l.shape[0]
    req = np.zeros((T, E), bool)
    req[np.arange(T)[:, None], ex_l] = True
    return req


def _last_use(req) -> np.ndarray:
    """(T, E) int32/int64: last t' <= t with a request for e, -1 if none."""
    T = req.shape[0]
    t = np.where(req, np.arange(T, dtype=np.int32 if T < 2**30 else np.int64)[:, None], -1)
    return np.maximum.accumulate(t, axis=0)


def _next_use(req) -> np.ndarray:
    """(T, E) int64: first t' > t with a request for e, T if none."""
    T = req.shape[0]
    t = np.where(req, np.arange(T, dtype=np.int64)[:, None], T)
    nxt = np.minimum.accumulate(t[::-1], axis=0)[::-1]
    out = np.empty_like(nxt)
    out[:-1] = nxt[1:]
    out[-1] = T
    return out


def _keys(policy: str, req) -> np.ndarray:
    """(T, E) int64 eviction key at each token: the lowest key among evictable experts goes."""
    T, E = req.shape
    ids = np.arange(E, dtype=np.int64)
    if policy in ("lru", "prefetch"):  # last_use * E + id in one accumulate, int32 when it fits
        dt = np.int64 if (T + 2) * E >= np.iinfo(np.int32).max else np.int32
        t = np.where(req, (np.arange(T, dtype=dt) * E)[:, None], dt(-E))
        return np.maximum.accumulate(t, axis=0) + ids.astype(dt)
    elif policy == "lfu":
        primary = np.cumsum(req, axis=0, dtype=np.int64) * (T + 1) + (_last_use(req) + 1)
    elif policy == "belady":
        primary = -_next_use(req)
    else:
        raise ValueError(f"policy={policy!r}; use one of {POLICIES}")
    key = primary * E + ids
    if policy != "lfu" and (T + 2) * E < np.iinfo(np.int32).max:
        key = key.astype(np.int32)  # half the memory traffic; order unchanged
    return key


# ----------------------------------------------------------------------------------- engine
def _evict(cache, excess, mkey, rounds, ar):
    """Evict the `excess` lowest-key experts of each row (in place). mkey: key, _BIG where protected."""
    for r in range(1, rounds + 1):
        m = excess >= r
        if not m.any():
            return
        v = np.where(cache, mkey, np.iinfo(mkey.dtype).max).argmin(1)
        cache[ar, v] &= ~m


def _run(req, mkey, C, cache, pre=None, pre_mkey=None, record_from=0):
    """Simulate R chunks in lock-step. req, mkey, pre, pre_mkey: (J, R, E) (mkey = eviction key, _BIG on the
    requested / predicted experts); cache: (R, E) start sets, modified. Returns hits (J, R) int8,
    prefetch loads (J, R) int8, the cache before step `record_from` and the final cache."""
    J, R, E = req.shape
    hits = np.zeros((J, R), np.int8)
    loads = np.zeros((J, R), np.int8)
    count = cache.sum(1)
    start = cache.copy()
    ar = np.arange(R)
    kp = 0 if pre is None else int(pre.sum(2).max(initial=0))
    k = int(req.sum(2).max(initial=0))
    for j in range(J):
        if j == record_from:
            start = cache.copy()
        if pre is not None:
            new = pre[j] & ~cache
            n = new.sum(1)
            loads[j] = n
            cache |= new
            count += n
            _evict(cache, count - C, pre_mkey[j], kp, ar)
            np.minimum(count, C, out=count)
        S = req[j]
        h = (cache & S).sum(1)
        hits[j] = h
        count += S.sum(1) - h
        cache |= S
        _evict(cache, count - C, mkey[j], k, ar)
        np.minimum(count, C, out=count)
    return hits, loads, start, cache


def _simulate_stream(req, mkey, C, pre=None, pre_mkey=None, chunk=512, warmup=64):
    """Exact per-token hits and prefetch loads for L independent layers: req, mkey (L, T, E) -> (L, T) int8 x2."""
    L, T, E = req.shape
    B = max(1, min(chunk, T))
    N = -(-T // B)  # chunks per layer
    W = min(warmup, B) if N > 1 else 0
    Tp = N * B + 1  # per-layer stride: padded stream + one empty row

    def gather(a, fill, rows):  # (L, T, E) -> (J, R, E) contiguous per step
        if a is None:
            return None
        f = np.concatenate([a, np.full((L, Tp - T, E), fill, a.dtype)], axis=1).reshape(L * Tp, E)
        return np.ascontiguousarray(f[rows.T])

    base = (np.arange(L) * Tp)[:, None, None]
    pos = np.arange(N)[:, None] * B - W + np.arange(W + B)[None, :]  # (N, W+B) per-layer positions
    idx = (np.where(pos[None] < 0, Tp - 1, pos[None]) + base).reshape(L * N, W + B)  # negative -> empty row
    first = np.zeros((L, N), bool)
    first[:, 0] = True
    first = first.reshape(-1)
    big = mkey.dtype.type(np.iinfo(mkey.dtype).max)
    args = [gather(req, False, idx), gather(mkey, big, idx), gather(pre, False, idx), gather(pre_mkey, big, idx)]
    hits, loads, start, end = _run(args[0], args[1], C, np.zeros((L * N, E), bool), args[2], args[3], record_from=W)
    hits, loads = hits[W:].T.copy(), loads[W:].T.copy()  # (R, B)
    del args
    while True:  # repair: a chunk must start from its predecessor's end set (a layer's first chunk: empty)
        truth = np.concatenate([np.zeros((1, E), bool), end[:-1]])
        truth[first] = False
        bad = np.nonzero((truth != start).any(1))[0]
        if len(bad) == 0:
            break
        body = idx[bad, W:]
        h, lo, _, e = _run(gather(req, False, body), gather(mkey, big, body), C, truth[bad].copy(),
                           gather(pre, False, body), gather(pre_mkey, big, body))
        hits[bad], loads[bad], start[bad], end[bad] = h.T, lo.T, truth[bad], e
    return hits.reshape(L, N * B)[:, :T], loads.reshape(L, N * B)[:, :T]


def _lru_closed_form(req, C):
    """Per-token LRU hits of one layer without simulation: (T,) int8.

    With set requests and C >= k, the LRU cache after token t is exactly the C most recently used
    experts (ties: the higher id stays), by induction on t; so expert e hits at t iff it was used
    before and fewer than C experts have a larger (last use, id) key at t-1."""
    T, E = req.shape
    key = _keys("lru", req)  # (T, E) last_use * E + id, -E.. for never used
    kth = np.partition(key, E - C, axis=1)[:, E - C:E - C + 1]  # C-th largest key per token
    cached = (key >= kth) & (key >= 0)  # (T, E): cache after token t (keys are distinct within a row)
    hits = np.zeros(T, np.int8)
    hits[1:] = (cached[:-1] & req[1:]).sum(1)
    return hits


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
                   layers_at_once: int | None = None, method: str = "auto") -> CacheResult:
    """Simulate a per-layer cache of `capacity` experts under `policy` over a trace (see module doc).

    x: a RoutingTrace or experts (tokens, layers, k). LRU is computed in closed form (recency ranks;
    method="chunked" forces the simulator, which tests compare it with). predicted: (tokens, layers, k') expert ids to
    prefetch for policy="prefetch" (default: `predict_previous_token(x)`); ids < 0 mean "none".

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
    if predicted is not None:
        predicted = np.asarray(predicted)
        if predicted.shape[:2] != (T, L):
            raise ValueError(f"predicted has shape {predicted.shape}; expected ({T}, {L}, k') like the experts")
        if predicted.shape[2] > C:
            raise ValueError(f"predicted sets of {predicted.shape[2]} experts cannot fit a cache of {C}")
    hits = np.zeros(L, np.int64)
    loads = np.zeros(L, np.int64)
    per_tok = np.zeros((T, L), np.int8) if keep_per_token else None
    if method not in ("auto", "chunked"):
        raise ValueError(f"method={method!r}; use 'auto' (LRU in closed form) or 'chunked' (the simulator)")
    if policy == "lru" and method == "auto":
        for l in range(L):
            h = _lru_closed_form(_requests(ex[:, l], E), C)
            hits[l] = h.sum(dtype=np.int64)
            if keep_per_token:
                per_tok[:, l] = h
        return CacheResult(policy, C, E, k, T, hits, np.full(L, T * k, np.int64), loads, per_tok)
    if chunk is None:  # ~2 sqrt(T) steps per pass: fewer Python steps on short traces, 512 on long ones
        chunk = min(512, max(32, int(2 * np.sqrt(T))))
    if warmup is None:
        warmup = min(64, chunk // 4)
    if layers_at_once is None:  # as many layers per pass as ~2e7 token-expert cells allow (bounded memory)
        layers_at_once = max(1, min(L, int(2e7 // max(T * E, 1))))
    for g0 in range(0, L, layers_at_once):
        ls = range(g0, min(L, g0 + layers_at_once))
        req = np.stack([_requests(ex[:, l], E) for l in ls])  # (G, T, E)
        key = np.stack([_keys(policy, r) for r in req])  # (G, T, E)
        big = np.iinfo(key.dtype).max
        mkey = np.where(req, big, key)
        pre = pre_mkey = None
        if policy == "prefetch":
            pre = np.zeros_like(req)
            for g, l in enumerate(ls):
                p = predicted[:, l]
                ok = p >= 0
                pre[g, np.nonzero(ok)[0], p[ok]] = True
            # the prefetch decision knows the stream up to t-1 only
            prev = np.concatenate([np.broadcast_to((np.arange(E) - E).astype(key.dtype), (len(ls), 1, E)), key[:, :-1]], 1)
            pre_mkey = np.where(pre, big, prev)
        h, lo = _simulate_stream(req, mkey, C, pre, pre_mkey, chunk=chunk, warmup=warmup)
        hits[list(ls)] = h.sum(1, dtype=np.int64)
        loads[list(ls)] = lo.sum(1, dtype=np.int64)
        if keep_per_token:
            per_tok[:, list(ls)] = h.T
    return CacheResult(policy, C, E, k, T, hits, np.full(L, T * k, np.int64), loads, per_tok)


# ----------------------------------------------------------------------------------- predictors
def predict_previous_token(x, *, num_experts=None, within_sequence: bool = False) -> np.ndarray:
    """(tokens, layers, k) prediction "token t uses token t-1's experts"; -1 for the first token
    (and, with within_sequence=True, for each sequence's first token; needs a RoutingTrace)."""
    ex, E, tr = as_experts(x, num_experts, need=("sequence",) if within_sequence else ())
    pred = np.full(ex.shape, -1, np.int64)
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
        M = np.zeros((E, E), np.int64)
        np.add.at(M, (np.repeat(fx[:, l - 1, 0], k), fx[:, l].reshape(-1)), 1)
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
    for C in capacities:
        res = {p: simulate_cache(ex, C, p, num_experts=E, predicted=predicted if p == "prefetch" else None)
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
