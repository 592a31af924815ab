"""Streamed statistics that are sums of counts per layer and expert: load, balance, aux loss, capacity, co-activation.

    >>> import numpy as np, moelab
    >>> from moelab.scan import scan_trace
    >>> t = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[0, 2]]]), num_experts=4)   # (tokens, layers, k)
    >>> acc = _Load(scan_trace(t))
    >>> acc.update(t, 0); acc.result()["count"].tolist()
    [2, 1, 1, 0]

Each accumulator has `columns()` (extra columns it reads), `update(chunk, start)`,
`end_group()` and `result()`, which calls the in-memory module's finishing
function. Internal to `moelab.metrics.stream` (see its docstring for the rules).
"""

from __future__ import annotations

from importlib import import_module

import numpy as np

from ._common import assignment_counts, group_sizes
from ._stream_state import _Groups, _Labels, _grow

# the submodules (moelab.metrics re-exports functions of the same names as `balance`, ...)
_bal, _cap, _co = (import_module(f"moelab.metrics.{m}") for m in ("balance", "capacity", "coactivation"))

class _Acc:
    logits = False

    def __init__(self, src: TraceSource):
        self.src, self.E, self.L, self.k = src, src.num_experts, src.num_layers, src.top_k

    def columns(self) -> list[str]:
        return []

    def end_group(self):
        pass


class _Load(_Acc):
    """Per group: expert assignments (G, layers, E) over the first `ranks` ranks, and tokens (G,);
    `pos` keeps only those layer positions (default all)."""

    def __init__(self, src, first_only=False, *, by=None, per_batch=None, pos=None):
        super().__init__(src)
        self.g, self.ranks, self.pos = _Groups(by, per_batch), 1 if first_only else src.top_k, pos
        n = self.L if pos is None else len(pos)
        self.counts, self.tokens = np.zeros((0, n, self.E), np.int64), np.zeros(0, np.int64)

    def columns(self):
        return self.g.column()

    def update(self, ch, start):
        c = self.g.codes(ch, start)
        G = self.g.G
        self.counts, self.tokens = _grow(self.counts, G), _grow(self.tokens, G)
        self.counts[:G] += assignment_counts(ch, c, G, self.ranks, self.pos)
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
