"""Trace files: RoutingTrace <-> Parquet, one row per token.

    >>> import numpy as np, moelab
    >>> t = moelab.RoutingTrace.from_arrays(np.zeros((4, 2, 2), int) + [0, 1], num_experts=8)
    >>> t.save("/tmp/t.parquet"); moelab.load_trace("/tmp/t.parquet").experts.shape
    (4, 2, 2)

Layout (readable by pandas, Polars and DuckDB without moelab)
--------------------------------------------------------------
sequence, position, token_id : int64/int32 per token; step : int32
experts  : fixed_size_list<uint8 | uint16>[layers * k]  uint8 up to 256 experts (int16 in older files)   row-major (layer, rank)
weights  : fixed_size_list<uint16 | float32>[layers * k_w]  row-major (layer, rank), encoded by
           `moelab.codec`: `code16` keeps fp16 precision over fp32's range in 2 bytes;
           with `code16_drop0` (weights that sum to 1, as Mixtral renormalises)
           rank 0 is rebuilt as 1 - the others, so k_w = k - 1. Every reloaded
           weight is within 2^-11 of its own size; `float32` is bit-exact.
logits   : fixed_size_list<float32>[layers * E]          only if recorded
scores   : fixed_size_list<float32>[layers * E]          only if recorded (`scores=True`); selection scores,
           bit-exact; the recording meta's `scores` names the formula. Such files say format 3
<extra>  : any per-token columns (e.g. domain)

The schema metadata key `moelab` holds JSON: format version, num_experts,
top_k, layer_ids, weights_layout, and the recording's meta (model, config,
dtype, tokenizer, moelab version). Files are zstd-compressed.

A folder is read as the union of every `*.parquet` below it (streamed parts and
data-parallel shards). Each writer stamps a `shard` id; sequence ids of
different shards are renumbered so they never collide.

In DuckDB: `SELECT token_id, experts[1] AS first_expert_layer0 FROM 'trace.parquet'`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .codec import decode_weights, stored_width
from .routing_trace import RoutingTrace
from .trace_schema import FORMAT_VERSION, META_KEY, TOKEN_FIELDS, TraceMismatchError, expert_dtype
from .trace_write import to_arrow_table, write_trace

__all__ = ["FORMAT_VERSION", "TraceFileError", "load_trace", "read_weights", "to_arrow_table", "write_trace"]


class TraceFileError(ValueError):
    """A trace file is missing, corrupt, truncated or not a moelab trace."""


# ---------------------------------------------------------------------------- read
def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise TraceFileError(
                f"{path}: folder holds no *.parquet trace files. Pass a trace file or a folder written by "
                "moelab.trace(model, path=...) / `moelab trace --out`."
            )
        return files
    if not path.exists():
        raise TraceFileError(f"{path}: no such trace file or folder")
    return [path]


def _read_meta(path: Path, schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise TraceFileError(
            f"{path}: a Parquet file but not a moelab trace (no 'moelab' schema metadata). "
            "Write traces with RoutingTrace.save or moelab.trace(model, path=...)."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise TraceFileError(f"{path}: moelab metadata is not valid JSON ({e})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise TraceFileError(
            f"{path}: written by a newer moelab (format {meta['format_version']} > {FORMAT_VERSION}); upgrade moelab"
        )
    return meta


def _read_table(path: Path, columns=None) -> tuple[pa.Table, dict]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        size = path.stat().st_size if path.exists() else 0
        raise TraceFileError(
            f"{path}: not a readable Parquet trace ({size} bytes): {e}. The file is corrupt or truncated "
            "(a run killed while writing leaves only its last, unflushed part unreadable; "
            "delete this file and load the folder again)."
        ) from None
    meta = _read_meta(path, pf.schema_arrow)
    if columns is not None:
        columns = [c for c in pf.schema_arrow.names if c in columns]
    try:
        table = pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise TraceFileError(f"{path}: trace data is corrupt: {e}") from None
    return table, meta


def _unflatten(col: pa.ChunkedArray | pa.Array, T: int, a: int, b: int, path: Path, name: str) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    values = col.flatten().to_numpy(zero_copy_only=False)
    if values.size != T * a * b:
        raise TraceFileError(f"{path}: column {name!r} holds {values.size} values, expected {T}x{a}x{b}")
    return values.reshape(T, a, b)


def read_weights(col, meta: dict, T: int, path) -> np.ndarray:
    """A file's `weights` column -> float32 (tokens, layers, k), whichever format wrote it."""
    L, k = meta["num_layers"], meta["top_k"]
    layout = meta.get("weights_layout")
    if meta.get("format_version", 1) < 2:      # format 1: float16, optionally the last rank dropped
        kw = k - 1 if layout == "drop_last" else k
        w = _unflatten(col, T, L, kw, path, "weights")
        if kw < k:
            w = np.concatenate([w, (1.0 - w.astype(np.float32).sum(-1, keepdims=True)).astype(w.dtype)], -1)
        return w
    try:
        return decode_weights(layout, _unflatten(col, T, L, stored_width(layout, k), path, "weights"), k=k)
    except ValueError as e:
        raise TraceFileError(f"{path}: {e}") from None


def _table_to_trace(table: pa.Table, meta: dict, path: Path) -> RoutingTrace:
    missing = [c for c in (*TOKEN_FIELDS, "experts") if c not in table.column_names]
    if missing:
        raise TraceFileError(f"{path}: trace is missing columns {missing}")
    T, L, k, E = table.num_rows, meta["num_layers"], meta["top_k"], meta["num_experts"]
    experts = _unflatten(table["experts"], T, L, k, path, "experts").astype(expert_dtype(E), copy=False)
    weights = None
    if "weights" in table.column_names:
        weights = read_weights(table["weights"], meta, T, path)
    logits = _unflatten(table["logits"], T, L, E, path, "logits") if "logits" in table.column_names else None
    has_scores = bool(meta.get("scores")) and "scores" in table.column_names   # else "scores" is a user column
    scores = _unflatten(table["scores"], T, L, E, path, "scores") if has_scores else None
    builtin = {*TOKEN_FIELDS, "experts", "weights", "logits", *(["scores"] if has_scores else [])}
    columns = {c: table[c].to_numpy() for c in table.column_names if c not in builtin}
    return RoutingTrace(
        experts=experts,
        weights=weights,
        num_experts=E,
        sequence=table["sequence"].to_numpy().astype(np.int64),
        position=table["position"].to_numpy().astype(np.int64),
        token_id=table["token_id"].to_numpy().astype(np.int64),
        step=table["step"].to_numpy().astype(np.int32),
        logits=logits,
        layer_ids=np.asarray(meta["layer_ids"]),
        meta=meta.get("meta", {}),
        columns=columns,
        scores=scores,
    )


def _signature(meta: dict) -> dict:
    """What files of one trace folder must share."""
    inner = meta.get("meta") or {}
    return {"model": inner.get("model") or None, "num_experts": meta.get("num_experts"),
            "num_layers": meta.get("num_layers"), "top_k": meta.get("top_k"),
            "layer_ids": list(meta.get("layer_ids") or [])}


def load_trace(path, *, columns: list[str] | None = None) -> RoutingTrace:
    """Read a trace file, or the union of every trace file in a folder.

        >>> import numpy as np, moelab
        >>> moelab.RoutingTrace.from_arrays(np.zeros((3, 2, 2), int) + [0, 1], num_experts=8).save("/tmp/w.parquet")
        >>> moelab.load_trace("/tmp/w.parquet").experts.shape      # (tokens, layers, k)
        (3, 2, 2)

    `columns` limits what is read (e.g. `["experts"]` skips weights, logits and scores);
    token metadata and experts are always read.
    """
    path = Path(path)
    files = _files(path)
    if columns is not None:
        columns = list(dict.fromkeys([*TOKEN_FIELDS, "experts", *columns]))
    parts, groups, first = [], [], None
    for f in files:
        table, meta = _read_table(f, columns=columns)
        sig = _signature(meta)
        if first is None:
            first = (f, sig)
        diff = [k for k in sig if sig[k] != first[1][k] and not (k == "model" and None in (sig[k], first[1][k]))]
        if diff:
            raise TraceMismatchError(
                f"{path}: holds traces of different models/settings: {first[0].name} and {f.name} differ in "
                f"{', '.join(diff)} ({ {k: first[1][k] for k in diff} } vs { {k: sig[k] for k in diff} }). "
                "Keep one model's trace per folder."
            )
        parts.append(_table_to_trace(table, meta, f))
        # streamed parts of one run and shard continue each other's sequences; other files do not
        run = meta.get("run")
        groups.append((run, str(meta.get("shard", 0))) if run else ("file", str(f)))
    if len(parts) == 1:
        return parts[0]
    by_shard: dict[tuple, list[RoutingTrace]] = {}
    for g, t in zip(groups, parts):
        by_shard.setdefault(g, []).append(t)
    try:
        per_shard = [RoutingTrace.concat(ts) for ts in by_shard.values()]
        return RoutingTrace.concat(per_shard, renumber_sequences=len(per_shard) > 1)
    except TraceMismatchError as e:
        raise TraceMismatchError(f"{path}: files in this folder are traces of different models/settings: {e}") from None
