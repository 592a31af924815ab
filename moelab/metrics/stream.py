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

from ..routing_trace import RoutingTrace
from ..scan import TraceSource, is_lazy, scan_trace
from ._stream_agreement import agreement, router_saturation
from ._stream_counts import _Balance, _Capacity, _HfAux, _Load, _Sum
from ._stream_keyed import _Domain, _PairList, _Repeat, _Vocab
from ._stream_state import _mask_fn

__all__ = ["run", "dispatch", "METRICS"]


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
