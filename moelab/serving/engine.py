"""
The exact, vectorised cache simulator behind `simulate_cache`: experts as bit masks, layers and
chunks of the trace advanced in lock-step.

    >>> import numpy as np
    >>> from moelab.serving.engine import Stream
    >>> ex = np.array([[[0]], [[1]], [[0]], [[2]], [[1]]])             # (tokens, layers, k)
    >>> Stream(ex, 3).run(2, "lru")[0][:, 0].tolist()                  # per-token hits
    [0, 0, 1, 0, 0]

Every policy evicts "the expert with the lowest key" among the cached experts that the current
step does not need, and every key is a property of the request stream alone:

    lru, prefetch   last use                      (key = last_use)
    lfu             (use count, last use)         (key = count * (T + 1) + last_use + 1)
    belady          minus the next use            (key = -next_use; never again = -T)

each times 64 plus the expert id (ties evict the lowest id). So the only state that depends on
the policy's past decisions is the cache *set*, one integer per layer (bit e = expert e, E <= 64).

The trace of each layer is cut into N chunks of B tokens; all L x N chunks advance together, one
numpy step per token position (B + W steps), each chunk first replaying the W tokens before it
from an empty cache (warm-up). The keys of each chunk start exact (computed from the stream at
its first position) and are updated for the k requested experts per step. A chunk is right when
its cache set after the warm-up equals its predecessor's final set; the others are re-run from
that set, repeatedly, until every chunk is right (usually none or a handful). Per-token results
therefore equal a token-by-token simulation exactly (tests/test_serving_offload.py compares with
one on random and adversarial traces).
"""

from __future__ import annotations

import numpy as np

POLICIES = ("lru", "lfu", "belady", "prefetch")
_SHIFT = 64  # composite key = primary * 64 + expert id


def mask_dtype(E: int):
    """The smallest unsigned integer dtype with E bits."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if E <= np.iinfo(dt).bits:
            return np.dtype(dt)
    raise ValueError(f"num_experts={E} does not fit a 64-bit expert mask; the cache simulator supports E <= 64")


def to_masks(ex, E: int) -> np.ndarray:
    """(tokens, layers, k) expert ids (< 0 = none) -> (tokens, layers) bit masks of the chosen sets."""
    dt = mask_dtype(E)
    bit = np.left_shift(np.ones(1, dt), np.arange(E, dtype=dt))
    ex = np.asarray(ex)
    out = np.zeros(ex.shape[:2], dt)
    for j in range(ex.shape[2]):
        e = ex[:, :, j]
        if e.size and e.min() < 0:
            out |= np.where(e >= 0, bit[np.clip(e, 0, E - 1)], dt.type(0))
        else:
            out |= bit[e]
    return out


class Stream:
    """One routing trace prepared for any number of `run(capacity, policy)` calls."""

    def __init__(self, ex, E: int, *, chunk: int | None = None, warmup: int | None = None):
        ex = np.asarray(ex)
        self.T, self.L, self.k = ex.shape
        self.E = int(E)
        self.dt = mask_dtype(self.E)
        self.bit = np.left_shift(np.ones(1, self.dt), np.arange(self.E, dtype=self.dt))
        T = self.T
        if chunk is None:  # ~sqrt(T) steps per pass on short traces (few Python steps), 512 on long ones
            chunk = min(512, max(32, int(np.sqrt(max(T, 1)))))
        self.B = B = max(1, min(int(chunk), max(T, 1)))
        self.N = N = -(-T // B) if T else 0
        self.W = W = (min(min(64, B // 4) if warmup is None else int(warmup), B) if N > 1 else 0)
        self.Qp = Qp = W + N * B + 1  # per layer: W empty rows, the stream, padding, one empty row
        ids = np.full((self.L, Qp, self.k), self.E, np.uint8 if self.E < 255 else np.int16)  # E = "no expert"
        ids[:, W:W + T] = ex.transpose(1, 0, 2)
        self.ids = ids.reshape(self.L * Qp, self.k)
        m = np.zeros((self.L, Qp), self.dt)
        m[:, W:W + T] = to_masks(ex, self.E).T
        self.masks = m.reshape(-1)
        self._ex = ex
        self._sorted = None
        self._next = None

    # ------------------------------------------------------------------ stream statistics
    def _positions(self):
        """Per layer: (token of each use sorted by expert then time, start offset of each expert)."""
        if self._sorted is None:
            out = []
            for l in range(self.L):
                e = self._ex[:, l].reshape(-1).astype(np.uint8 if self.E <= 255 else np.int16)
                order = np.argsort(e, kind="stable")
                t = (order // self.k).astype(np.int64)
                bounds = np.concatenate([[0], np.cumsum(np.bincount(e, minlength=self.E))])
                out.append((order, t, bounds))
            self._sorted = out
        return self._sorted

    def _next_use(self) -> np.ndarray:
        """(L * Qp, k) int64: the next use after t of the expert requested at (t, j); T if none."""
        if self._next is None:
            T, W, Qp = self.T, self.W, self.Qp
            nxt = np.full((self.L, Qp, self.k), T, np.int32 if T < 2**31 - 1 else np.int64)
            for l, (order, t, bounds) in enumerate(self._positions()):
                after = np.full(t.shape, T, np.int64)
                after[:-1] = t[1:]
                after[bounds[1:-1] - 1] = T  # last use of each expert (group ends)
                flat = np.empty_like(after)
                flat[order] = after
                nxt[l, W:W + T] = flat.reshape(T, self.k)
            self._next = nxt.reshape(-1, self.k)
        return self._next

    def _init_keys(self, policy, layer, start) -> np.ndarray:
        """(E + 1, R) composite keys at token positions `start` (per row) of layers `layer`."""
        T, E = self.T, self.E
        small = (T + 2) * (T + 2 if policy == "lfu" else 1) * _SHIFT < np.iinfo(np.int32).max
        key = np.zeros((E + 1, len(start)), np.int32 if small else np.int64)  # int32: half the memory traffic
        for l in np.unique(layer):
            rows = np.nonzero(layer == l)[0]
            s = start[rows]
            _, t, bounds = self._positions()[l]
            for e in range(E):
                pe = t[bounds[e]:bounds[e + 1]]
                i = np.searchsorted(pe, s, "left")  # uses before s
                if policy == "belady":
                    primary = -np.where(i < len(pe), pe[np.minimum(i, len(pe) - 1)] if len(pe) else T, T)
                else:
                    last = np.where(i > 0, pe[np.maximum(i - 1, 0)] if len(pe) else -1, -1)
                    primary = i * (T + 1) + last + 1 if policy == "lfu" else last
                key[e, rows] = primary * _SHIFT + e
        return key

    # ------------------------------------------------------------------ the lock-step engine
    @staticmethod
    def _by_step(a, q0, steps, block=2048):
        """a[q0[r] + j] laid out as (steps, R[, k]): each step then reads contiguous memory."""
        out = np.empty((steps, len(q0)) + a.shape[1:], a.dtype)
        ar = np.arange(steps)
        for s in range(0, len(q0), block):
            out[:, s:s + block] = a[q0[s:s + block, None] + ar[None, :]].swapaxes(0, 1)  # row-sequential reads
        return out

    def _steps(self, policy, C, q0, steps, record_from, cache, key, pmasks):
        """Advance rows (flat start indices q0) `steps` tokens. Returns hits, prefetch loads (steps, R) int8,
        the cache before step `record_from` and at the end."""
        R, E, k, T = len(q0), self.E, self.k, self.T
        hits = np.zeros((steps, R), np.int8)
        loads = np.zeros((steps, R), np.int8)
        start = cache.copy()
        ar = np.arange(R)
        big = np.iinfo(key.dtype).max
        masks, ids_all = self._by_step(self.masks, q0, steps), self._by_step(self.ids, q0, steps)
        nxt = self._by_step(self._next_use(), q0, steps) if policy == "belady" else None
        pmasks = None if pmasks is None else self._by_step(pmasks, q0, steps)
        base_t = (q0 % self.Qp) - self.W  # token index of each row's first step

        def evict(protect, excess):
            for _ in range(int(excess.max(initial=0))):
                idx = np.nonzero(excess > 0)[0]
                if len(idx) == 0:
                    return
                cand = cache[idx] & ~protect[idx]  # evictable: cached, not needed by this step
                best = np.full(len(idx), big, key.dtype)
                for e in range(E):
                    np.minimum(best, np.where((cand & self.bit[e]) != 0, key[e, idx], big), out=best)
                cache[idx] &= ~self.bit[(best % _SHIFT).astype(np.intp)]
                excess[idx] -= 1

        for j in range(steps):
            if j == record_from:
                start = cache.copy()
            if pmasks is not None:
                P = pmasks[j]
                new = P & ~cache
                loads[j] = np.bitwise_count(new)
                cache |= new
                evict(P, np.bitwise_count(cache).astype(np.int64) - C)
            S = masks[j]
            hits[j] = np.bitwise_count(cache & S)
            cache |= S
            evict(S, np.bitwise_count(cache).astype(np.int64) - C)
            ids = ids_all[j]  # (R, k); E = no expert (padding): updates the spare key row
            t = base_t + j
            for i in range(k):
                e = ids[:, i].astype(np.intp)
                if policy == "belady":
                    key[e, ar] = -nxt[j, :, i].astype(np.int64) * _SHIFT + e
                elif policy == "lfu":
                    key[e, ar] = ((key[e, ar] // _SHIFT) // (T + 1) + 1) * (T + 1) * _SHIFT + (t + 1) * _SHIFT + e
                else:
                    key[e, ar] = t * _SHIFT + e
        return hits, loads, start, cache

    def run(self, C: int, policy: str, predicted=None):
        """Per-token hits and prefetch loads, both (tokens, layers) int8, for cache size C."""
        T, L, N, B, W, Qp = self.T, self.L, self.N, self.B, self.W, self.Qp
        if T == 0:
            return np.zeros((0, L), np.int8), np.zeros((0, L), np.int8)
        pm = None
        if predicted is not None:
            pm = np.zeros((L, Qp), self.dt)
            pm[:, W:W + T] = to_masks(predicted, self.E).T
            pm = pm.reshape(-1)
        layer = np.repeat(np.arange(L), N)
        n = np.tile(np.arange(N), L)
        q0 = layer * Qp + n * B  # warm-up starts W tokens before each chunk
        cache = np.zeros(L * N, self.dt)
        key = self._init_keys(policy, layer, n * B - W)
        hits, loads, start, end = self._steps(policy, C, q0, W + B, W, cache, key, pm)
        hits, loads = hits[W:].T.copy(), loads[W:].T.copy()  # (R, B)
        first = n == 0
        while True:  # repair: a chunk must start from its predecessor's final set (a layer's first: empty)
            truth = np.concatenate([np.zeros(1, self.dt), end[:-1]])
            truth[first] = 0
            bad = np.nonzero(truth != start)[0]
            if len(bad) == 0:
                break
            c0 = truth[bad].copy()
            h, lo, _, e = self._steps(policy, C, q0[bad] + W, B, 0, c0, self._init_keys(policy, layer[bad], n[bad] * B), pm)
            hits[bad], loads[bad], start[bad], end[bad] = h.T, lo.T, truth[bad], e
        return hits.reshape(L, N * B)[:, :T].T, loads.reshape(L, N * B)[:, :T].T
