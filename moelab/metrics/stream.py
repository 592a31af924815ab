"""Streamed metrics: every `moelab.metrics` statistic over a trace larger than memory.

    >>> import numpy as np, moelab
    >>> from moelab.scan import scan_trace
    >>> ex = np.random.default_rng(0).integers(0, 8, size=(50, 2, 1))        # (tokens, layers, k)
    >>> t = moelab.RoutingTrace.from_arrays(ex, num_experts=8, sequence=np.arange(50) // 20)
    >>> t.save("/tmp/stream-doc.parquet")
    >>> src = scan_trace("/tmp/stream-doc.parquet", chunk_tokens=7)
    >>> moelab.metrics.repeat_rates(src).equals(moelab.metrics.repeat_rates(t))
    True
    >>> out = run(src, {"balance": {}, "coactivation": {"normalize": False}})   # one pass, several metrics
    >>> sorted(out)
    ['balance', 'coactivation']

Call any metric with a path or `moelab.scan_trace(path, chunk_tokens=...)`
instead of a RoutingTrace: the chunks are read one at a time and the partial
results combined; `run` computes several statistics in a single pass. Memory
is bounded by one chunk plus the statistics' own state (below), never the trace.

How each statistic combines (the finishing formulas are the in-memory ones,
shared code in each metric module, so results are equal; counts exactly):

sums            expert_load, balance (counts; router-probability sums need
                logits), hf_aux_loss, domain_distribution / _specialization,
                vocab_specialization, coactivation, layer_transitions,
                agreement / router_saturation (two sources read in lockstep)
consecutive     repeat_rates, next_token_ids, consecutive_pairs: a pair is
pairs           (sequence s, position p) -> (s, p + 1) wherever the two tokens
                are stored; each chunk is joined with the *pending* tokens of
                earlier chunks (tokens still missing a neighbour), so pairs
                across chunks and parts are found; pending tokens are dropped
                at the end of a (run, shard) group. State: about one token per
                open sequence.
batches         capacity_drops: a numeric batch size carries its one open
                batch to the next chunk; batch_size="sequence" keeps counts
                per sequence (layers x k x E integers each).
labels          by= groups get stable ids as they appear and are sorted at
                the end, exactly as pandas.factorize(sort=True) in memory.

`where=` is a boolean mask over all tokens (load_trace order) or a function
chunk -> mask. Floating-point sums of router probabilities (balance's
switch_aux, hf_aux, z_loss and hf_aux_loss) agree to rounding, not bit for bit.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from types import SimpleNamespace

import numpy as np

from ..routing_trace import RoutingTrace
from ..scan import TraceSource, is_lazy, scan_trace

# the submodules (moelab.metrics re-exports functions of the same names as `balance`, `agreement`, ...)
_bal, _cap, _co, _loc, _sp = (import_module(f"moelab.metrics.{m}") for m in (
    "balance", "capacity", "coactivation", "locality", "specialization"))
from ._common import assignment_counts, column, default_layers, group_sizes, layer_index
from ._stream_agreement import agreement, router_saturation
from ._stream_state import _Groups, _Labels, _Pairs, _grow, _mask_fn, _sorted

__all__ = ["run", "dispatch", "METRICS"]


# ------------------------------------------------------------------------ accumulators
class _Acc:
    logits = False

    def __init__(self, src: TraceSource):
        self.src, self.E, self.L, self.k = src, src.num_experts, src.num_layers, src.top_k

    def columns(self) -> list[str]:
        return []

    def end_group(self):
        pass


class _Load(_Acc):
    def __init__(self, src, first_only=False, *, by=None, per_batch=None):
        super().__init__(src)
        self.g, self.ranks = _Groups(by, per_batch), 1 if first_only else src.top_k
        self.counts, self.tokens = np.zeros((0, self.L, self.E), np.int64), np.zeros(0, np.int64)

    def columns(self):
        return self.g.column()

    def update(self, ch, start):
        c = self.g.codes(ch, start)
        G = self.g.G
        self.counts, self.tokens = _grow(self.counts, G), _grow(self.tokens, G)
        self.counts[:G] += assignment_counts(ch, c, G, self.ranks)
        self.tokens[:G] += group_sizes(c, G)

    def result(self):
        (counts, tokens), labels, name = self.g.finish(self.counts, self.tokens)
        return _bal._load_frame(counts, tokens, labels, name, self.src.layer_ids, self.E)


class _Balance(_Acc):
    def __init__(self, src, *, by=None, per_batch=None, first_only=False):
        super().__init__(src)
        self.g, self.first_only, self.logits = _Groups(by, per_batch), first_only, src.has_logits
        L, E = self.L, self.E
        self.topk, self.first = np.zeros((0, L, E), np.int64), np.zeros((0, L, E), np.int64)
        self.tokens, self.psum, self.zsum = np.zeros(0, np.int64), np.zeros((0, L, E)), np.zeros((0, L))

    def columns(self):
        return self.g.column()

    def update(self, ch, start):
        c = self.g.codes(ch, start)
        G = self.g.G
        for n in ("topk", "first", "tokens", "psum", "zsum"):
            setattr(self, n, _grow(getattr(self, n), G))
        self.topk[:G] += assignment_counts(ch, c, G, self.k)
        self.first[:G] += assignment_counts(ch, c, G, 1)
        self.tokens[:G] += group_sizes(c, G)
        if self.logits:
            for l in range(self.L):
                p, z = _bal._softmax_stats(ch.logits[:, l, :], c, G)
                self.psum[:G, l] += p
                self.zsum[:G, l] += z

    def result(self):
        (topk, first, tokens, psum, zsum), labels, name = self.g.finish(
            self.topk, self.first, self.tokens, self.psum, self.zsum)
        lg = (psum, zsum) if self.logits else (None, None)
        return _bal._balance_frame(topk, first, tokens, *lg, labels, name, self.src.layer_ids, self.E, self.k,
                                   self.first_only)


class _HfAux(_Acc):
    logits = True

    def __init__(self, src):
        super().__init__(src)
        if not src.has_logits:
            raise ValueError(
                "hf_aux_loss needs router logits, but this trace has none; record them with "
                "moelab.trace(model, logits=True) (or pass logits= to RoutingTrace.from_arrays)")
        self.counts, self.psum, self.T = np.zeros(self.E, np.int64), np.zeros(self.E), 0

    def update(self, ch, start):
        c = np.zeros(ch.num_tokens, np.int64)
        self.counts += assignment_counts(ch, c, 1, self.k)[0].sum(0)
        for l in range(self.L):
            self.psum += _bal._softmax_stats(ch.logits[:, l, :], c, 1)[0][0]
        self.T += ch.num_tokens

    def result(self):
        return _bal._hf_aux_value(self.counts, self.psum, self.T, self.L, self.E)


class _Capacity(_Acc):
    def __init__(self, src, capacity_factors=(1.0, 1.25, 1.5, 2.0), batch_sizes=(4096,)):
        super().__init__(src)
        self.cfs, self.bss = _cap._check_factors(capacity_factors), _cap._batch_list(batch_sizes)
        nb, L, ncf = len(self.bss), self.L, len(self.cfs)
        self.over_all, self.over_first = np.zeros((nb, L, ncf), np.int64), np.zeros((nb, L, ncf), np.int64)
        self.B, self.longest, self.T = np.zeros(nb, np.int64), np.zeros(nb, np.int64), 0
        self.carry = [None] * nb                                          # (batch id, counts, size)
        self.seq = {i: (_Labels(), np.zeros((0, L, self.k, self.E), np.int64), np.zeros(0, np.int64))
                    for i, bs in enumerate(self.bss) if isinstance(bs, str)}

    def _close(self, i, n, sizes):
        oa, of = _cap.overflow(n, sizes, self.cfs, self.k, self.E)
        self.over_all[i] += oa
        self.over_first[i] += of
        self.B[i] += len(sizes)
        self.longest[i] = max(self.longest[i], int(sizes.max(initial=0)))

    def update(self, ch, start):
        T = ch.num_tokens
        self.T += T
        for i, bs in enumerate(self.bss):
            if isinstance(bs, str):                                        # whole sequences
                lab, n, sz = self.seq[i]
                c = lab.codes(ch.sequence)
                S = len(lab)
                n, sz = _grow(n, S), _grow(sz, S)
                n[:S] += _cap.batch_counts(ch.experts, c, S, self.E)
                sz[:S] += np.bincount(c, minlength=S)
                self.seq[i] = (lab, n, sz)
                continue
            bs = int(bs)
            codes = (start + np.arange(T, dtype=np.int64)) // bs
            b0 = int(codes[0])
            local = codes - b0
            nb = int(local[-1]) + 1
            n = _cap.batch_counts(ch.experts, local, nb, self.E)          # (nb, L, k, E)
            sizes = np.bincount(local, minlength=nb)
            if self.carry[i] is not None:
                if self.carry[i][0] == b0:                                 # the open batch continues
                    n[0] += self.carry[i][1]
                    sizes[0] += self.carry[i][2]
                else:                                                      # it ended with the last chunk
                    self._close(i, self.carry[i][1][None], np.array([self.carry[i][2]]))
            if nb > 1:
                self._close(i, n[:-1], sizes[:-1])
            self.carry[i] = (b0 + nb - 1, n[-1], int(sizes[-1]))

    def result(self):
        for i, bs in enumerate(self.bss):
            if isinstance(bs, str):
                lab, n, sz = self.seq[i]
                if len(lab):
                    self._close(i, n[: len(lab)], sz[: len(lab)])
            elif self.carry[i] is not None:
                _, n, s = self.carry[i]
                self._close(i, n[None], np.array([s]))
                self.carry[i] = None
        return _cap._drops_frame(self.over_all, self.over_first, self.B, self.longest, self.T, self.bss, self.cfs,
                                 self.src.layer_ids, self.k, self.E)


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


class _Domain(_Acc):
    """domain_distribution (kind="dist") and domain_specialization (kind="spec")."""

    def __init__(self, src, by="domain", layers=None, *, first_only=False, kind="dist"):
        super().__init__(src)
        self.kind, self.g = kind, _Groups(by)
        self.ids, self.pos = _layers_of(src, layers, default=kind == "dist")
        self.kk = 1 if first_only else src.top_k
        self.counts, self.sizes = np.zeros((0, len(self.ids), self.E), np.int64), np.zeros(0, np.int64)

    def columns(self):
        return self.g.column()

    def update(self, ch, start):
        c = self.g.codes(ch, start)
        G = self.g.G
        self.counts, self.sizes = _grow(self.counts, G), _grow(self.sizes, G)
        self.counts[:G] += assignment_counts(ch, c, G, self.kk, self.pos)
        self.sizes[:G] += group_sizes(c, G)

    def result(self):
        (counts, sizes), labels, name = self.g.finish(self.counts, self.sizes)
        if self.kind == "dist":
            return _sp._dist_frame(counts, labels, name, self.ids, self.E)
        return _sp._spec_frame(counts, sizes, labels, name, self.ids, self.E, self.kk)


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
            counts, n_x, labels = self.counts[rows], self.n_x[rows], rows.astype(self.dtype)
        else:
            rank, labels = self.labels.order()
            counts, n_x = _sorted(self.counts, rank), _sorted(self.n_x, rank)
        return _sp._vocab_frame(counts, n_x, labels, self.name, self.ids, self.E, self.kk, self.min_count, self.detail)


class _Sum(_Acc):
    """coactivation (kind="co") and layer_transitions (kind="tr")."""

    def __init__(self, src, *, normalize=True, kind="co"):
        super().__init__(src)
        self.kind, self.normalize = kind, normalize
        self.fn = _co.coactivation_counts if kind == "co" else _co.transition_counts
        self.counts = None

    def update(self, ch, start):
        c = self.fn(ch.experts, self.E)
        self.counts = c if self.counts is None else self.counts + c

    def result(self):
        counts = self.counts if self.counts is not None else self.fn(np.zeros((0, self.L, self.k), np.uint8), self.E)
        if self.kind == "co":
            return _co._frame(_co._row_normalise(counts, diag=True) if self.normalize else counts,
                              self.src.layer_ids, "coexpert")
        return _co._frame(_co._row_normalise(counts, diag=False) if self.normalize else counts,
                          self.src.layer_ids[:-1], "next_expert")


METRICS = {
    "expert_load": _Load,
    "balance": _Balance,
    "hf_aux_loss": _HfAux,
    "capacity_drops": _Capacity,
    "repeat_rates": _Repeat,
    "next_token_ids": lambda src: _PairList(src, "next"),
    "consecutive_pairs": lambda src: _PairList(src, "pairs"),
    "domain_distribution": lambda src, *a, **kw: _Domain(src, *a, kind="dist", **kw),
    "domain_specialization": lambda src, *a, **kw: _Domain(src, *a, kind="spec", **kw),
    "vocab_specialization": _Vocab,
    "coactivation": lambda src, **kw: _Sum(src, kind="co", **kw),
    "layer_transitions": lambda src, **kw: _Sum(src, kind="tr", **kw),
}


# ------------------------------------------------------------------------------ driver
def _filtered(src: TraceSource, columns, logits: bool, where):
    """Yield (trace, filtered start) per chunk, and None at each group change (for carried state)."""
    mask, start, group = _mask_fn(where, src.num_tokens), 0, None
    for c in src.chunks(columns, logits=logits):
        if group is not None and c.group != group:
            yield None
        group = c.group
        t = c.trace
        if mask is not None:
            m = mask(t, c.start)
            if not m.all():
                t = t.select(m)
        if t.num_tokens:
            yield t, start
            start += t.num_tokens


def run(source, metrics: dict, *, where=None) -> dict:
    """Several statistics in one pass over `source` (path, TraceSource or RoutingTrace).

    `metrics` maps a metric name (optionally "name#tag" to run one twice) to its
    keyword arguments, e.g. {"balance": {}, "repeat_rates": {"by": "domain"}}.
    Returns {key: result}, each equal to the in-memory function's.
    """
    src = scan_trace(source)
    accs = {}
    for key, kw in metrics.items():
        name = key.split("#")[0]
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; streamable metrics are {sorted(METRICS)}")
        accs[key] = METRICS[name](src, **(kw or {}))
    columns = sorted({c for a in accs.values() for c in a.columns()})
    logits = any(a.logits for a in accs.values())
    for item in _filtered(src, columns, logits, where):
        if item is None:
            for a in accs.values():
                a.end_group()
            continue
        for a in accs.values():
            a.update(*item)
    return {key: a.result() for key, a in accs.items()}


def dispatch(fn, *args, **kwargs):
    """Run metric `fn` (the in-memory function) streamed; called by the metrics when given a path/TraceSource."""
    name = fn.__name__
    if name == "agreement":
        return agreement(*args, **kwargs)
    if name == "router_saturation":
        return router_saturation(*args, **kwargs)
    bound = inspect.signature(fn).bind(*args, **kwargs)
    arg = dict(bound.arguments)
    source = arg.pop("trace")
    where = arg.pop("where", None)
    if not (is_lazy(source) or isinstance(source, RoutingTrace)):
        raise TypeError(f"{name}() expects a moelab.RoutingTrace, a trace path or a moelab.scan_trace(path); "
                        f"got {type(source).__name__}")
    return run(source, {name: arg}, where=where)[name]
