"""Streamed statistics keyed by tokens: repeat rates and pairs (consecutive tokens), domain and vocabulary counts.

    >>> import numpy as np, moelab
    >>> from moelab.scan import scan_trace
    >>> t = moelab.RoutingTrace.from_arrays(np.array([[[0]], [[0]], [[1]]]), num_experts=2)   # (tokens, layers, k)
    >>> acc = _Repeat(scan_trace(t))
    >>> acc.update(t.select(slice(0, 2)), 0); acc.update(t.select(slice(2, 3)), 2)
    >>> acc.result()[["first", "pairs"]].values.tolist()                  # pairs found across the two chunks
    [[0.5, 2.0]]

Internal to `moelab.metrics.stream` (see its docstring for the rules).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace

import numpy as np

from ._common import assignment_counts, column, default_layers, group_sizes, layer_index
from ._stream_counts import _Acc, _Load
from ._stream_state import _Groups, _Labels, _Pairs, _grow, _sorted

_loc, _sp = (import_module(f"moelab.metrics.{m}") for m in ("locality", "specialization"))

class _Repeat(_Acc):
    def __init__(self, src, by=None):
        super().__init__(src)
        self.g, self.pairs = _Groups(by), _Pairs()
        self.first, self.anyk, self.n = np.zeros((0, self.L)), np.zeros((0, self.L)), np.zeros(0)

    def columns(self):
        return self.g.column()

    def update(self, ch, start):
        p = self.pairs.feed(ch, start, self.g.codes(ch, start))
        G = self.g.G
        f, a, n = _loc.pair_counts(p["ea"], p["eb"], p["g"], G, self.E)
        self.first, self.anyk, self.n = _grow(self.first, G), _grow(self.anyk, G), _grow(self.n, G)
        self.first[:G] += f
        self.anyk[:G] += a
        self.n[:G] += n

    def end_group(self):
        self.pairs.end_group()

    def result(self):
        (f, a, n), labels, name = self.g.finish(self.first, self.anyk, self.n)
        return _loc._repeat_frame(f, a, n, labels, name, self.src.layer_ids, self.E, self.k)


class _PairList(_Acc):
    """next_token_ids (what="next") or consecutive_pairs (what="pairs") of a whole stream."""

    def __init__(self, src, what="next"):
        super().__init__(src)
        self.what, self.pairs = what, _Pairs()
        self.out = np.full(src.num_tokens, -1, np.int64) if what == "next" else []

    def update(self, ch, start):
        p = self.pairs.feed(ch, start, np.zeros(ch.num_tokens, np.int64))
        if self.what == "next":
            self.out[p["ia"]] = p["tb"]
        else:
            self.out.append((p["ia"], p["ib"], p["sa"], p["pa"]))

    def end_group(self):
        self.pairs.end_group()

    def result(self):
        if self.what == "next":
            return self.out
        if not self.out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ia, ib, sa, pa = (np.concatenate(x) for x in zip(*self.out))
        o = np.lexsort((pa, sa))
        return ia[o], ib[o]


def _layers_of(src, layers, default):
    t = SimpleNamespace(layer_ids=src.layer_ids, num_layers=src.num_layers)
    if layers is None:
        layers = default_layers(t) if default else tuple(src.layer_ids)
    ids = np.asarray(tuple(np.atleast_1d(layers)), dtype=np.int64)
    return ids, layer_index(t, ids)


class _Domain(_Load):
    """domain_distribution (kind="dist") and domain_specialization (kind="spec"): the load accumulator on the
    chosen layers, read out per domain."""

    def __init__(self, src, by="domain", layers=None, *, first_only=False, kind="dist"):
        ids, pos = _layers_of(src, layers, default=kind == "dist")
        super().__init__(src, first_only, by=by, pos=pos)
        self.kind, self.ids = kind, ids

    def result(self):
        (counts, sizes), labels, name = self.g.finish(self.counts, self.tokens)
        if self.kind == "dist":
            return _sp._dist_frame(counts, labels, name, self.ids, self.E)
        return _sp._spec_frame(counts, sizes, labels, name, self.ids, self.E, self.ranks)


class _Vocab(_Acc):
    def __init__(self, src, by="token_id", layers=None, *, first_only=False, min_count=1, detail=False):
        super().__init__(src)
        self.by, self.min_count, self.detail = by, min_count, detail
        self.name = by if isinstance(by, str) else "id"
        self.ids, self.pos = _layers_of(src, layers, default=False)
        self.kk = 1 if first_only else src.top_k
        self.dense, self.labels, self.dtype = None, _Labels(), None
        self.counts, self.n_x = np.zeros((0, len(self.ids), self.E), np.int64), np.zeros(0, np.int64)

    def columns(self):
        return [self.by] if isinstance(self.by, str) else []

    def update(self, ch, start):
        v = column(ch, self.by)[0] if isinstance(self.by, str) else np.asarray(self.by)[start : start + len(ch)]
        if self.dense is None:
            self.dense, self.dtype = bool(np.issubdtype(v.dtype, np.integer)), v.dtype
        if self.dense:
            codes = np.where(v >= 0, v, -1).astype(np.int64)
            V = int(codes.max(initial=-1)) + 1
        else:
            codes = self.labels.codes(v)
            V = len(self.labels)
        self.counts, self.n_x = _grow(self.counts, V), _grow(self.n_x, V)
        if V:
            self.counts[:V] += assignment_counts(ch, codes, V, self.kk, self.pos)
            self.n_x[:V] += group_sizes(codes, V)

    def result(self):
        if self.dense:
            rows = np.flatnonzero(self.n_x)
            n_x, labels = self.n_x[rows], rows.astype(self.dtype)
            layer_counts = lambda i: self.counts[rows, i]                   # noqa: E731 (V, E)
        else:
            rank, labels = self.labels.order()
            n_x = _sorted(self.n_x, rank)
            layer_counts = lambda i: _sorted(self.counts[:, i], rank)       # noqa: E731
        return _sp._vocab_frame(layer_counts, n_x, labels, self.name, self.ids, self.E, self.kk, self.min_count,
                                self.detail)
