"""Writing a routing trace as Arrow / Parquet (one row per token); `moelab.store` reads them back.

    >>> import numpy as np, moelab
    >>> from moelab.trace_write import to_arrow_table
    >>> t = moelab.RoutingTrace.from_arrays(np.zeros((4, 2, 2), int) + [0, 1], num_experts=512)
    >>> to_arrow_table(t).schema.field("experts").type
    FixedSizeListType(fixed_size_list<item: uint16>[4])

It reads a trace by its attributes only (no import of `moelab.routing_trace`), so
`RoutingTrace.save` can call it without an import circle. The layout is in `moelab.store`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .codec import encode_weights
from .trace_schema import META_KEY, SCORES_VERSION, TraceMismatchError, expert_dtype


def _fixed_list(arr: np.ndarray) -> pa.Array:
    """(tokens, a, b) numpy -> fixed_size_list<dtype>[a*b], zero-copy where possible."""
    T = arr.shape[0]
    width = int(np.prod(arr.shape[1:]))
    flat = np.ascontiguousarray(arr).reshape(T, width)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), width)


def to_arrow_table(trace: RoutingTrace, *, shard: int | str = 0, run: str | None = None) -> pa.Table:
    cols = {
        "sequence": pa.array(trace.sequence.astype(np.int64)),
        "position": pa.array(trace.position.astype(np.int32)),
        "token_id": pa.array(trace.token_id.astype(np.int32)),
        "step": pa.array(trace.step.astype(np.int32)),
        "experts": _fixed_list(trace.experts.astype(expert_dtype(trace.num_experts), copy=False)),
    }
    layout = None
    if trace.weights is not None:
        exact = trace.weights.dtype == np.float32 and trace.logits is not None
        layout, stored = encode_weights(trace.weights, exact=exact)
        cols["weights"] = _fixed_list(stored)
    if trace.logits is not None:
        cols["logits"] = _fixed_list(trace.logits.astype(np.float32, copy=False))
    scores = getattr(trace, "scores", None)
    if scores is not None:
        cols["scores"] = _fixed_list(scores.astype(np.float32, copy=False))
    for name, v in trace.columns.items():
        if name in cols:
            raise TraceMismatchError(f"extra column {name!r} clashes with a built-in trace column")
        cols[name] = pa.array(v)
    meta = {
        "format_version": SCORES_VERSION if scores is not None else 2,
        "num_experts": trace.num_experts,
        "num_layers": trace.num_layers,
        "top_k": trace.top_k,
        "layer_ids": [int(i) for i in trace.layer_ids],
        "weights_layout": layout,
        "weights_dtype": None if trace.weights is None else str(trace.weights.dtype),
        "scores": scores is not None,     # the `scores` column is the selection scores (not an extra column)
        "shard": shard,
        "run": run,
        "meta": trace.meta,
    }
    table = pa.table(cols)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})


def write_trace(trace: RoutingTrace, path, *, shard: int | str = 0, run: str | None = None) -> None:
    """Write `trace` to one Parquet file at `path`, atomically (tmp file + rename).

    `run`/`shard` mark files that continue one another (streamed parts of one
    tracing run): `load_trace` keeps their sequence ids; any other files get
    disjoint sequence ids.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(to_arrow_table(trace, shard=shard, run=run), tmp, compression="zstd", compression_level=9)
    os.replace(tmp, path)
