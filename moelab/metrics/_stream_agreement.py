"""Streamed agreement and router saturation: two trace sources read in lockstep, token by token.

Both sources must hold the same tokens in the same (sequence, position, token_id)
order, as the in-memory `agreement` requires; their file and part layouts may
differ (chunks of the second are re-cut to the first's). The counts of
`agreement.agree_counts` are summed, so results equal the in-memory ones exactly.

    >>> import numpy as np, moelab
    >>> t = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), num_experts=4)
    >>> t.save("/tmp/agree-doc.parquet")
    >>> agreement("/tmp/agree-doc.parquet", t)["exact_set"].tolist()
    [1.0]
"""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace, TraceMismatchError
from ..scan import scan_trace
from ._stream_state import _mask_fn

_ag = import_module("moelab.metrics.agreement")


def _agree_counts(a, b, k=None, where=None, names=("a", "b"), same_k=True):
    """Lockstep pass over two sources: (agree_counts summed (3, L), tokens, k)."""
    a, b = scan_trace(a), scan_trace(b)
    na, nb = names
    if a.num_tokens != b.num_tokens:
        raise TraceMismatchError(
            f"{na} has {a.num_tokens} tokens but {nb} has {b.num_tokens} tokens: compare traces of the same inputs "
            "(select the common tokens first, e.g. trace.select(mask))")
    if a.num_experts != b.num_experts:
        raise TraceMismatchError(f"{na} has E={a.num_experts} experts but {nb} has E={b.num_experts}")
    if same_k and a.top_k != b.top_k:
        raise TraceMismatchError(f"{na} has k={a.top_k} experts per token but {nb} has k={b.top_k}")
    if a.num_layers != b.num_layers or not np.array_equal(a.layer_ids, b.layer_ids):
        raise TraceMismatchError(f"{na} has MoE layers {a.layer_ids.tolist()} but {nb} has layers "
                                 f"{b.layer_ids.tolist()}: traces of different models")
    k = a.top_k if k is None else int(k)
    mask = _mask_fn(where, a.num_tokens)
    counts, T = np.zeros((3, a.num_layers), np.int64), 0
    buf, it = [], (c.trace for c in b.chunks())
    for c in a.chunks():
        ta, n = c.trace, c.trace.num_tokens
        while sum(len(x) for x in buf) < n:
            buf.append(next(it))
        tb = RoutingTrace.concat(buf) if len(buf) > 1 else buf[0]
        rest = tb.select(slice(n, None))
        buf = [rest] if len(rest) else []
        tb = tb.select(slice(0, n))
        for field in ("sequence", "position", "token_id"):
            x, y = getattr(ta, field), getattr(tb, field)
            if not np.array_equal(x, y):
                i = int(np.flatnonzero(x != y)[0])
                raise TraceMismatchError(
                    f"{na} and {nb} differ in {field} at token {c.start + i} ({x[i]} vs {y[i]}): they do not describe "
                    "the same tokens; streamed agreement needs both stored in the same (sequence, position) order")
        if mask is not None:
            m = mask(ta, c.start)
            ta, tb = ta.select(m), tb.select(m)
        counts += _ag.agree_counts(ta.experts, tb.experts, k, a.num_experts)
        T += ta.num_tokens
    return counts, T, k, a.layer_ids


def agreement(a, b, *, where=None) -> pd.DataFrame:
    counts, T, k, ids = _agree_counts(a, b, where=where)
    top1, ov, exact = _ag.agree_rates(counts, T, k)
    return pd.DataFrame({"top1": top1, "topk_overlap": ov, "exact_set": exact, "tokens": T},
                        index=pd.Index(ids, name="layer"))


def router_saturation(traces_by_checkpoint: dict, final, k=None) -> pd.DataFrame:
    if not isinstance(traces_by_checkpoint, dict) or not traces_by_checkpoint:
        raise TypeError("router_saturation needs a non-empty dict {checkpoint step: trace or path}; "
                        f"got {type(traces_by_checkpoint).__name__}")
    final = scan_trace(final)
    frames = []
    for step, t in traces_by_checkpoint.items():
        t = scan_trace(t)
        kk = final.top_k if k is None else int(k)
        if not 1 <= kk <= min(t.top_k, final.top_k):
            raise ValueError(f"k={kk} must lie in [1, {min(t.top_k, final.top_k)}] (the traces' top_k)")
        try:
            counts, T, kk, ids = _agree_counts(t, final, kk, names=(f"checkpoint {step!r}", "final"), same_k=False)
        except TraceMismatchError as e:
            raise TraceMismatchError(f"router_saturation: {e}") from None
        top1, ov, _ = _ag.agree_rates(counts, T, kk)
        frames.append(pd.DataFrame({"checkpoint": step, "layer": ids, "top1": top1, "topk": ov, "k": kk}))
    return pd.concat(frames, ignore_index=True).set_index(["checkpoint", "layer"])
