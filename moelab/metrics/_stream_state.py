"""State of streamed statistics: group labels, growing count arrays, consecutive pairs across chunks.

    >>> import numpy as np
    >>> lab = _Labels(); lab.codes(np.array(["b", "a"])).tolist(), lab.codes(np.array(["c", "a"])).tolist()
    ([0, 1], [2, 1])
    >>> lab.order()[0].tolist()                      # stable ids 0, 1, 2 ("b", "a", "c") -> sorted ranks
    [1, 0, 2]

Internal to `moelab.metrics.stream` (see its docstring for the rules).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace, TraceMismatchError
from ._common import column

def _grow(arr: np.ndarray, n: int) -> np.ndarray:
    """arr with axis 0 zero-padded to at least n rows (doubling, so growth is amortised)."""
    if arr.shape[0] >= n:
        return arr
    out = np.zeros((max(n, 2 * arr.shape[0]), *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class _Labels:
    """Stable ids for group values in order of appearance; `order()` sorts them like pd.factorize(sort=True)."""

    def __init__(self):
        self.ids: dict = {}
        self.dtype = None

    def codes(self, values: np.ndarray) -> np.ndarray:
        codes, uniq = pd.factorize(values)
        if self.dtype is None:
            self.dtype = np.asarray(uniq).dtype
        gid = np.array([self.ids.setdefault(u, len(self.ids)) for u in uniq], np.int64)
        out = np.full(len(codes), -1, np.int64)
        ok = codes >= 0
        out[ok] = gid[codes[ok]]
        return out

    def __len__(self):
        return len(self.ids)

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """(rank of each stable id in sorted order, sorted labels)."""
        keys = np.array(list(self.ids), dtype=self.dtype if self.dtype is not None else object)
        rank, labels = pd.factorize(keys, sort=True)
        return rank, np.asarray(labels)


def _sorted(arr: np.ndarray, rank: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rank), *arr.shape[1:]), arr.dtype)
    out[rank] = arr[: len(rank)]
    return out


class _Groups:
    """Per-token group codes of a stream for by= (column name or array) / per_batch=."""

    def __init__(self, by=None, per_batch=None):
        if by is not None and per_batch is not None:
            raise ValueError(f"pass by= or per_batch=, not both (got by={by!r}, per_batch={per_batch!r})")
        if per_batch is not None and int(per_batch) < 1:
            raise ValueError(f"per_batch={per_batch!r} must be a positive number of tokens, e.g. per_batch=4096")
        self.by, self.per_batch, self.n = by, per_batch, 0
        self.labels = _Labels() if by is not None else None
        self.name = None if by is None else (by if isinstance(by, str) else "group")
        if per_batch is not None:
            self.name = "batch"

    def column(self) -> list[str]:
        return [self.by] if isinstance(self.by, str) else []

    def values(self, ch: RoutingTrace, start: int) -> np.ndarray:
        if isinstance(self.by, str):
            return column(ch, self.by)[0]
        return np.asarray(self.by)[start : start + ch.num_tokens]

    def codes(self, ch: RoutingTrace, start: int) -> np.ndarray:
        T = ch.num_tokens
        if self.per_batch is not None:
            c = (start + np.arange(T, dtype=np.int64)) // int(self.per_batch)
            self.n = max(self.n, int(c[-1]) + 1) if T else self.n
            return c
        if self.by is None:
            self.n = 1
            return np.zeros(T, np.int64)
        c = self.labels.codes(self.values(ch, start))
        self.n = len(self.labels)
        return c

    @property
    def G(self) -> int:
        return max(self.n, 1) if self.by is None and self.per_batch is None else self.n

    def finish(self, *arrays):
        """(arrays in sorted-label order, labels, name)."""
        if self.by is None and self.per_batch is None:
            return [a[:1] if len(a) else np.zeros((1, *a.shape[1:]), a.dtype) for a in arrays], \
                np.array([None], dtype=object), None
        if self.per_batch is not None:
            return [a[: self.n] for a in arrays], np.arange(self.n), "batch"
        rank, labels = self.labels.order()
        return [_sorted(a, rank) for a in arrays], labels, self.name


class _Pairs:
    """Consecutive tokens (s, p) -> (s, p + 1) of a stream, across chunks (see the module docstring)."""

    def __init__(self):
        self.pending = None

    def feed(self, ch: RoutingTrace, start: int, code: np.ndarray) -> dict:
        T = ch.num_tokens
        new = dict(seq=ch.sequence, pos=ch.position, idx=start + np.arange(T, dtype=np.int64), code=code,
                   tok=ch.token_id, ex=ch.experts, hp=ch.position == 0, hn=np.zeros(T, bool), new=np.ones(T, bool))
        P = self.pending
        U = new if P is None else {k: np.concatenate([P[k], new[k]]) for k in new}
        order = np.lexsort((U["pos"], U["seq"]))                       # (tokens,) by (sequence, position)
        a, b = order[:-1], order[1:]
        adj = (U["seq"][a] == U["seq"][b]) & (U["pos"][b] == U["pos"][a] + 1)
        U["hn"][a[adj]] = True
        U["hp"][b[adj]] = True
        emit = adj & (U["new"][a] | U["new"][b])                        # old-old pairs were emitted before
        a, b = a[emit], b[emit]
        keep = ~(U["hp"] & U["hn"])
        self.pending = {k: v[keep] for k, v in U.items()}
        self.pending["new"][:] = False
        return dict(ea=U["ex"][a], eb=U["ex"][b], g=U["code"][a], ia=U["idx"][a], ib=U["idx"][b],
                    tb=U["tok"][b], sa=U["seq"][a], pa=U["pos"][a])

    def end_group(self):
        self.pending = None


def _mask_fn(where, n: int):
    """where= as a function (chunk, raw start) -> bool mask, or None."""
    if where is None:
        return None
    if callable(where):
        return lambda ch, s: np.asarray(where(ch), bool)
    w = np.asarray(where)
    if w.dtype != bool:
        idx = w.astype(np.int64)
        if len(idx) > 1 and np.any(np.diff(idx) <= 0):
            raise ValueError("streamed where= takes a boolean mask (or increasing token indices); "
                             "for reordering indices load the trace with moelab.load_trace")
        w = np.zeros(n, bool)
        w[idx] = True
    if w.shape != (n,):
        raise TraceMismatchError(f"where= is a boolean mask of shape {w.shape}, expected ({n},): one entry per token")
    return lambda ch, s: w[s : s + ch.num_tokens]
