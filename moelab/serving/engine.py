"""
The exact, vectorised cache simulator behind `simulate_cache`: experts as bit masks, layers and
chunks of the trace advanced in lock-step.

    >>> import numpy as np
    >>> from moelab.serving.engine import Stream
    >>> ex = np.array([[[0]], [[1]], [[0]], [[2]], [[1]]])             # (tokens, layers, k)
    >>> Stream(ex, 3).run(2, "lru")[0][:, 0].tolist()                  # per-token hits
    [0, 0, 1, 0, 0]

Every policy evicts "the expert with the lowest key" among the cached experts that the current
step does not need, and every key is a property of the request stream alone (t: a token index):

    lru, prefetch   last use                      primary = last_use + 1            (never used: 0)
    lfu             (use count, last use)         primary = count * 2**b + last_use + 1   (2**b > T)
    belady          next use, the farthest first  primary = T - next_use            (never again: 0)

key = primary * 64 + expert id (ties evict the lowest id). So the only state that depends on the
policy's past decisions is the cache *set*, one integer per layer (bit e = expert e, E <= 64).

The trace of each layer is cut into N chunks of B tokens; all L x N chunks (rows) advance
together, one numpy step per token position (B + W steps), each chunk first replaying the W
tokens before it from an empty cache (warm-up). The keys of each chunk start exact and are
updated for the k requested experts per step. A chunk is right when its cache set after the
warm-up equals its predecessor's final set; the others are re-run from that set, repeatedly,
until every chunk is right (usually none or a handful). Per-token results therefore equal a
token-by-token simulation exactly (tests/test_serving_offload.py compares with one on random and
adversarial traces).

Where the keys come from. One stable sort per layer gives every expert's uses in time order, so
its use count, last use and next use at each chunk start (with and without the warm-up), hence
every row's first keys. Bélády's key of each request (the expert's next use after it) is made per
row by one backward pass over the row's steps, starting from the next uses after its end.

One step of a row. The keys live in an (E + 1, rows) array: one line per expert, plus a spare line
E that takes the writes that mean "no expert" (padding, a row that evicts nothing). A FLAG bit
above every key marks an expert that is not cached or that this step protects, so "the lowest key
among the evictable experts" is one minimum over the E lines, with no per-expert masking:

    prefetch  load P: cache |= P (loads = the new ones); flag P's keys, evict while the cache holds
              more than C, unflag P's keys (they are cached)
    demand    hits = |cache & S|, cache |= S, write S's new keys: lru's and prefetch's are the
              row's largest (the latest use), so S needs no protection; lfu's and belady's carry
              FLAG until the evictions are done; evict |cache| - C times (0..k)
    evict     best = the minimum over the E lines; v = best % 64 is evicted: line v gets
              best | FLAG (its key was best: nothing to read), bit v leaves the cache

Rows advance in blocks of `_ROWS`, so that a step's arrays stay in the CPU cache, and every
per-step input is laid out (steps, rows) beforehand so that a step reads contiguous memory.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

POLICIES = ("lru", "lfu", "belady", "prefetch")
_ID_BITS = 6  # key = primary << 6 | expert id (E <= 64)
_ROWS = 16384  # rows advanced together
_TOKENS = 1 << 14  # tokens per piece when laying out a trace (small temporaries)


def mask_dtype(E: int):
    """The smallest unsigned integer dtype with E bits."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if E <= np.iinfo(dt).bits:
            return np.dtype(dt)
    g = -(-int(E) // 64)
    raise ValueError(f"num_experts={E} does not fit a 64-bit expert mask (one bit per expert): the cache simulator "
                     f"supports E <= 64. For more experts, cache groups of {g} experts as one unit (an approximation: "
                     f"a group loads whole): simulate_cache(experts // {g}, capacity, num_experts={-(-int(E) // g)})")


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
        self.Qp = W + N * B + 1  # per layer: W empty positions, the stream, padding, one empty position
        self.ids = self._padded_ids(ex)  # k x (L * Qp,) uint8, E = no expert
        self.masks = self._masks(self.ids)  # (L * Qp,)
        self._at = self._at_stats = None

    def _padded_ids(self, ex) -> tuple:
        """(tokens, layers, k) expert ids (< 0 = none) -> k arrays (L * Qp,) uint8: per layer, W empty
        positions, the tokens, padding; E = no expert."""
        T, W, E = self.T, self.W, self.E
        out = np.full((ex.shape[2], self.L, self.Qp), E, np.uint8)
        for s in range(0, T, _TOKENS):
            e = ex[s:s + _TOKENS].transpose(2, 1, 0)  # (k, L, tokens)
            out[:, :, W + s:W + s + e.shape[2]] = np.where(e >= 0, e, E) if e.size and e.min() < 0 else e
        return tuple(out.reshape(len(out), self.L * self.Qp))

    def _masks(self, ids) -> np.ndarray:
        """(L * Qp,) bit masks of the sets that k padded id arrays request."""
        bit = np.append(self.bit, self.dt.type(0))  # id E: no expert
        out = np.zeros(self.L * self.Qp, self.dt)
        for s in range(0, len(out), _TOKENS):
            for a in ids:
                out[s:s + _TOKENS] |= bit[a[s:s + _TOKENS]]
        return out

    # ------------------------------------------------------------------ keys
    def _layout(self, policy):
        """(key dtype, FLAG, shift of lfu's count field): int32 where every key fits under FLAG = 2**30."""
        b = int(self.T + 1).bit_length()  # last_use + 1 and T - next_use lie in [0, 2**b)
        cs = _ID_BITS + b
        top = ((self.T * self.k + 1) << cs) if policy == "lfu" else (1 << cs)  # every key < top
        if top > 1 << 62:
            raise ValueError(f"{policy}'s cache keys for a trace of {self.T} tokens with k={self.k} do not fit 64 bits; "
                             f"the simulator takes traces of up to 10**7 tokens")
        return (np.dtype(np.int32), 1 << 30, cs) if top <= 1 << 30 else (np.dtype(np.int64), 1 << 62, cs)

    def _stats(self):
        """(uses before, last use before + 1 (0: none), first use at or after (T: none)), each (L, E, P) int64,
        at the P token positions `self._at`: every chunk's start with and without its warm-up, and the end."""
        if self._at_stats is None:
            T, E, k, B, W, N = self.T, self.E, self.k, self.B, self.W, self.N
            at = np.unique(np.concatenate([np.arange(N + 1) * B - W, np.arange(N + 1) * B]))
            cnt, last1, nxt = np.zeros((self.L, E, len(at)), np.int64), np.zeros((self.L, E, len(at)), np.int64), \
                np.full((self.L, E, len(at)), T, np.int64)
            for l in range(self.L):
                q = l * self.Qp + W
                e = np.stack([a[q:q + T] for a in self.ids] or [np.zeros(0, np.uint8)], 1).reshape(-1)  # in time order
                t = np.argsort(e, kind="stable") // max(k, 1)  # the token of each of layer l's requests, by expert
                bounds = np.cumsum([0] + [np.count_nonzero(e == x) for x in range(E)])
                for x in range(E):
                    pe = t[bounds[x]:bounds[x + 1]]  # the tokens using x, ascending
                    if len(pe):
                        i = np.searchsorted(pe, at, "left")  # uses before each position
                        cnt[l, x] = i
                        last1[l, x] = np.where(i > 0, pe[np.maximum(i - 1, 0)] + 1, 0)
                        nxt[l, x] = np.where(i < len(pe), pe[np.minimum(i, len(pe) - 1)], T)
            self._at, self._at_stats = at, (cnt, last1, nxt)
        return self._at_stats

    def _at_rows(self, which, layer, pos) -> np.ndarray:
        """(E, R) statistic `which` of `_stats` (0 uses, 1 last use + 1, 2 next use) of each row's layer and position."""
        stat = self._stats()[which]
        return stat[layer, :, np.searchsorted(self._at, pos)].T

    def _init_keys(self, policy, layer, start, cache) -> np.ndarray:
        """(E + 1, R) keys at token positions `start` (per row) of layers `layer`, FLAG where not in `cache`."""
        dt, flag, cs = self._layout(policy)
        if policy == "belady":
            primary = self.T - self._at_rows(2, layer, start)
        elif policy == "lfu":
            primary = (self._at_rows(0, layer, start) << (cs - _ID_BITS)) + self._at_rows(1, layer, start)
        else:
            primary = self._at_rows(1, layer, start)
        key = np.zeros((self.E + 1, len(start)), dt)  # line E: spare
        key[:self.E] = (primary << _ID_BITS) | np.arange(self.E)[:, None]
        for e in range(self.E):
            key[e] |= np.where(cache & self.bit[e], 0, flag).astype(dt)
        return key

    def _belady_keys(self, layer, tok0, steps, ids) -> np.ndarray:
        """(steps, k, R) belady's key of each request of the rows, (T - the expert's next use) << 6 | id:
        one backward pass over the steps from the next uses after the rows' ends."""
        R, E, T = len(tok0), self.E, self.T
        dt = self._layout("belady")[0]
        nk = np.zeros((E + 1, R), dt)  # per expert: (T - its next use) << 6; line E: spare
        nk[:E] = (T - self._at_rows(2, layer, tok0 + steps)) << _ID_BITS
        nf, ar, ix = nk.reshape(-1), np.arange(R), np.empty(R, np.intp)
        out = np.empty((steps, self.k, R), dt)
        for j in range(steps - 1, -1, -1):
            now = ((T - tok0 - j) << _ID_BITS).astype(dt)
            for i in range(self.k - 1, -1, -1):  # a repeated id's next use is its later copy in the token
                e = ids[i][j]
                np.multiply(e, R, out=ix, dtype=np.intp)
                ix += ar
                np.bitwise_or(nf[ix], e, out=out[j, i])
                nf[ix] = now
        return out

    # ------------------------------------------------------------------ the lock-step engine
    @staticmethod
    def _by_step(a, q0, steps, block=256):
        """a[q0[r] + j] laid out as (steps, R): each step then reads contiguous memory."""
        win = sliding_window_view(a, steps)  # (len(a) - steps + 1, steps), a view
        out = np.empty((steps, len(q0)), a.dtype)
        for s in range(0, len(q0), block):
            out[:, s:s + block] = win[q0[s:s + block]].T  # whole windows copied, transposed in the CPU cache
        return out

    def _steps(self, policy, C, layer, tok0, steps, record_from, cache, pred):
        """Advance rows (layer, first token tok0, cache set before it) `steps` tokens. Returns hits and
        prefetch loads (R, steps - record_from) int8, the cache before step `record_from` and at the end."""
        R = len(tok0)
        hits = np.empty((R, steps - record_from), np.int8)
        loads = np.zeros((R, steps - record_from), np.int8)
        start, cache = cache.copy(), cache.copy()
        for s in range(0, R, _ROWS):
            b = slice(s, s + _ROWS)
            h, lo, start[b], cache[b] = self._block(policy, C, layer[b], tok0[b], steps, record_from, cache[b], pred)
            hits[b] = h[record_from:].T
            if lo is not None:
                loads[b] = lo[record_from:].T
        return hits, loads, start, cache

    def _block(self, policy, C, layer, tok0, steps, record_from, cache, pred):
        """`_steps` on at most `_ROWS` rows; hits and loads (steps, R) uint8 (loads None without prediction)."""
        R, E, k = len(tok0), self.E, self.k
        dt, flag, cs = self._layout(policy)
        key = self._init_keys(policy, layer, tok0, cache)  # (E + 1, R)
        kf = key.reshape(-1)  # flat: line e of row r at e * R + r
        ar = np.arange(R)
        notbit = np.append(~self.bit, ~self.dt.type(0))  # clears bit e; index E clears none
        q0 = layer * self.Qp + self.W + tok0
        masks = self._by_step(self.masks, q0, steps)  # (steps, R) requested sets
        ids = [self._by_step(a, q0, steps) for a in self.ids]  # k x (steps, R) requested ids
        bkeys = self._belady_keys(layer, tok0, steps, ids) if policy == "belady" else None  # (steps, k, R)
        pmasks, pids = (None, []) if pred is None else \
            (self._by_step(pred[0], q0, steps), [self._by_step(a, q0, steps) for a in pred[1]])
        hits = np.empty((steps, R), np.uint8)
        loads = np.empty((steps, R), np.uint8) if pred is not None else None
        start = cache.copy()
        t1 = ((tok0 + 1) << _ID_BITS).astype(dt)  # lru: (last use + 1) << 6 of a use at step 0
        keep = dt.type(~((1 << cs) - 1) & ~flag)  # lfu: a key's count field
        inc = dt.type(1 << cs)  # lfu: one more use
        idx = np.empty((max(k, len(pids)), R), np.intp)  # flat positions of the requested (predicted) ids
        val = np.empty((max(k, len(pids)), R), dt)  # their keys
        iv, tmp = np.empty(R, np.intp), np.empty(R, self.dt)

        def flat(e, out):  # out = e * R + r: line e of each row in kf
            np.multiply(e, R, out=out, dtype=np.intp)
            out += ar
            return out

        def evict():  # while the cache holds more than C: the lowest unflagged key leaves
            n = np.bitwise_count(cache)
            for r in range(1, int(n.max()) - C + 1):
                best = key[:E].min(axis=0)
                v = np.where(n >= C + r, best & 63, E)  # the expert to evict; E (the spare line): none
                kf[flat(v, iv)] = best | flag
                np.bitwise_and(cache, notbit[v], out=cache)

        for j in range(steps):
            if j == record_from:
                start = cache.copy()
            if pred is not None:  # prefetch P (LRU among the cache outside P)
                np.bitwise_and(pmasks[j], ~cache, out=tmp)
                np.bitwise_count(tmp, out=loads[j])
                cache |= tmp
                for i in range(len(pids)):
                    np.bitwise_and(kf[flat(pids[i][j], idx[i])], ~flag, out=val[i])  # P's keys, all cached now
                    kf[idx[i]] = val[i] | flag  # protected
                evict()
                for i in range(len(pids)):
                    kf[idx[i]] = val[i]
            np.bitwise_and(cache, masks[j], out=tmp)
            np.bitwise_count(tmp, out=hits[j])
            cache |= masks[j]
            t1j = t1 + (j << _ID_BITS)
            for i in range(k):  # S's new keys, one request after the other (a repeated id counts twice in lfu)
                e = ids[i][j]
                ix = flat(e, idx[i])
                if policy in ("lru", "prefetch"):
                    kf[ix] = np.add(t1j, e, dtype=dt)
                else:
                    if policy == "lfu":
                        np.add(np.bitwise_and(kf[ix], keep), t1j + inc, out=val[i])
                        val[i] += e
                    else:
                        val[i] = bkeys[j, i]
                    kf[ix] = val[i] | flag  # protected
            evict()
            if policy in ("lfu", "belady"):
                for i in range(k):
                    kf[idx[i]] = val[i]
        return hits, loads, start, cache

    def run(self, C: int, policy: str, predicted=None):
        """Per-token hits and prefetch loads, both (tokens, layers) int8, for cache size C."""
        T, L, N, B, W = self.T, self.L, self.N, self.B, self.W
        if T == 0:
            return np.zeros((0, L), np.int8), np.zeros((0, L), np.int8)
        pred = None
        if predicted is not None:
            pids = self._padded_ids(np.asarray(predicted))
            pred = (self._masks(pids), pids)
        layer = np.repeat(np.arange(L), N)
        n = np.tile(np.arange(N), L)
        empty = np.zeros(L * N, self.dt)
        hits, loads, start, end = self._steps(policy, C, layer, n * B - W, W + B, W, empty, pred)  # W warm-up tokens
        first = n == 0
        while True:  # repair: a chunk must start from its predecessor's final set (a layer's first: empty)
            truth = np.concatenate([np.zeros(1, self.dt), end[:-1]])
            truth[first] = 0
            bad = np.nonzero(truth != start)[0]
            if len(bad) == 0:
                break
            h, lo, _, e = self._steps(policy, C, layer[bad], n[bad] * B, B, 0, truth[bad], pred)
            hits[bad], loads[bad], start[bad], end[bad] = h, lo, truth[bad], e
        return hits.reshape(L, N * B)[:, :T].T, loads.reshape(L, N * B)[:, :T].T
