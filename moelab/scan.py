"""Lazy traces: read a trace file or folder in chunks of tokens, never all at once.

    >>> import numpy as np, moelab
    >>> from moelab.scan import scan_trace
    >>> t = moelab.RoutingTrace.from_arrays(np.zeros((10, 2, 2), int) + [0, 1], num_experts=8)
    >>> t.save("/tmp/scan-doc.parquet")
    >>> src = scan_trace("/tmp/scan-doc.parquet", chunk_tokens=4)
    >>> src.num_tokens, [len(c.trace) for c in src.chunks()]
    (10, [4, 4, 2])
    >>> moelab.metrics.expert_load(src).equals(moelab.metrics.expert_load(t))   # same call, same numbers
    True

A `TraceSource` knows a trace's shape from the files' metadata only; its
`chunks()` yield `Chunk(start, group, trace)` with `trace` a small
`RoutingTrace` of consecutive tokens. The token order, and the sequence ids,
are exactly those `moelab.load_trace` gives the same path (mirroring its rules):

* a folder is the union of every `*.parquet` below it, sorted by path;
* files of one (run, shard) (streamed parts of one tracing run) continue each
  other's sequences: they form one *group*, read file after file;
* every other file is a group of its own; with more than one group, each
  group's sequence ids are offset by the sum of (max sequence id + 1) of the
  groups before it, so sequences of different groups never collide;
* groups come in the order of their first file.

Sequences never continue across groups; within a group they may continue
across chunks and files (`moelab.metrics.stream` carries them).

Columns are decoded by `moelab.store` itself (imported at call time), so a
change of the on-disk encoding there reaches the streamed path unchanged.
Only the columns a statistic needs are read: token fields and experts always,
router logits / weights / extra columns on request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .routing_trace import TOKEN_FIELDS, RoutingTrace, TraceMismatchError

__all__ = ["TraceSource", "Chunk", "scan_trace", "is_lazy"]

DEFAULT_CHUNK = 1 << 18          # 262,144 tokens: ~20 MB of experts at 32 layers x top-2


@dataclass
class Chunk:
    start: int                   # global index of the chunk's first token (load_trace order)
    group: int                   # index of its (run, shard) group; sequences never cross groups
    trace: RoutingTrace          # the chunk's tokens


@dataclass
class _File:
    path: Path
    meta: dict
    rows: int
    group: int = 0
    seq_offset: int = 0
    max_seq: int = -1


def _store():
    from . import store                                     # at call time: the store's current decoder

    return store


def _signature(meta: dict, names: list[str]) -> dict:
    """What must agree between files of one trace folder."""
    builtin = {*TOKEN_FIELDS, "experts", "weights", "logits", *(["scores"] if meta.get("scores") else [])}
    return {
        "model": (meta.get("meta") or {}).get("model"),
        "num_experts": meta.get("num_experts"),
        "num_layers": meta.get("num_layers"),
        "top_k": meta.get("top_k"),
        "layer_ids": list(meta.get("layer_ids") or []),
        "weights": "weights" in names,
        "logits": "logits" in names,
        "columns": sorted(n for n in names if n not in builtin),
    }


def _max_sequence(pf: pq.ParquetFile, path: Path) -> int:
    """Largest sequence id in a file: from the row-group statistics, else by reading the column."""
    md = pf.metadata
    if md.num_rows == 0:
        return -1
    idx = pf.schema_arrow.get_field_index("sequence")
    best = None
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(idx).statistics
        if st is None or not st.has_min_max:
            best = None
            break
        best = st.max if best is None else max(best, st.max)
    if best is None:
        best = int(pf.read(columns=["sequence"])["sequence"].to_numpy().max())
    return int(best)


class TraceSource:
    """A trace file or folder read lazily, chunk by chunk (see the module docstring)."""

    def __init__(self, path, *, chunk_tokens: int = DEFAULT_CHUNK):
        if int(chunk_tokens) < 1:
            raise ValueError(f"chunk_tokens={chunk_tokens!r} must be a positive number of tokens, e.g. 262144")
        self.chunk_tokens = int(chunk_tokens)
        self.path = Path(path)
        self._trace = None
        store = _store()
        files = []
        first_sig, first_path = None, None
        for f in store._files(self.path):
            try:
                pf = pq.ParquetFile(f)
            except (pa.ArrowInvalid, OSError) as e:
                raise store.TraceFileError(
                    f"{f}: not a readable Parquet trace: {e}. The file is corrupt or truncated; "
                    "delete it and scan the folder again."
                ) from None
            meta = store._read_meta(f, pf.schema_arrow)
            missing = [c for c in (*TOKEN_FIELDS, "experts") if c not in pf.schema_arrow.names]
            if missing:
                raise store.TraceFileError(f"{f}: trace is missing columns {missing}")
            sig = _signature(meta, pf.schema_arrow.names)
            if first_sig is None:
                first_sig, first_path = sig, f
            else:
                diff = [k for k in sig if sig[k] != first_sig[k] and not (k == "model" and not (sig[k] and first_sig[k]))]
                if diff:
                    what = "; ".join(f"{k} {first_sig[k]!r} vs {sig[k]!r}" for k in diff)
                    raise TraceMismatchError(
                        f"{self.path}: holds traces of different models/settings: {first_path} and {f} differ in "
                        f"{what}. Keep one model's trace per folder (move one of these files elsewhere)."
                    )
            files.append(_File(f, meta, pf.metadata.num_rows, max_seq=_max_sequence(pf, f)))
        # groups: (run, shard) for parts of one run, else one per file (store.load_trace's rule)
        keys: dict = {}
        for fi in files:
            run = fi.meta.get("run")
            key = (run, str(fi.meta.get("shard", 0))) if run else ("file", str(fi.path))
            fi.group = keys.setdefault(key, len(keys))
        files.sort(key=lambda fi: fi.group)                 # stable: files keep their path order within a group
        if len(keys) > 1:
            offset = 0
            for g in range(len(keys)):
                members = [fi for fi in files if fi.group == g]
                for fi in members:
                    fi.seq_offset = offset
                if sum(fi.rows for fi in members):
                    offset += max(fi.max_seq for fi in members) + 1
        self.files = files
        m = files[0].meta
        self.num_experts, self.num_layers, self.top_k = int(m["num_experts"]), int(m["num_layers"]), int(m["top_k"])
        self.layer_ids = np.asarray(m["layer_ids"], np.int64)
        self.meta = m.get("meta", {})
        self.num_tokens = sum(fi.rows for fi in files)
        self.columns = first_sig["columns"]
        self.has_weights, self.has_logits = first_sig["weights"], first_sig["logits"]
        self.num_groups = len(keys)

    # ------------------------------------------------------------ in memory
    @classmethod
    def from_trace(cls, trace: RoutingTrace, *, chunk_tokens: int = DEFAULT_CHUNK) -> "TraceSource":
        """Chunk an in-memory trace (one group): the streamed statistics on it equal the in-memory ones."""
        self = cls.__new__(cls)
        if int(chunk_tokens) < 1:
            raise ValueError(f"chunk_tokens={chunk_tokens!r} must be a positive number of tokens, e.g. 262144")
        self.chunk_tokens, self.path, self.files, self._trace = int(chunk_tokens), None, [], trace
        self.num_experts, self.num_layers, self.top_k = trace.num_experts, trace.num_layers, trace.top_k
        self.layer_ids, self.meta, self.num_tokens = trace.layer_ids, trace.meta, trace.num_tokens
        self.columns = sorted(trace.columns)
        self.has_weights, self.has_logits = trace.weights is not None, trace.logits is not None
        self.num_groups = 1
        return self

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "memory"
        return (f"TraceSource({where}, tokens={self.num_tokens}, layers={self.num_layers}, k={self.top_k}, "
                f"experts={self.num_experts}, files={len(self.files)}, groups={self.num_groups}, "
                f"chunk_tokens={self.chunk_tokens})")

    def __len__(self) -> int:
        return self.num_tokens

    # --------------------------------------------------------------- chunks
    def chunks(self, columns=(), *, logits: bool = False, weights: bool = False):
        """Yield Chunk(start, group, trace) in load_trace order; `columns` are the extra columns to read."""
        columns = [c for c in columns if c in self.columns]
        if self._trace is not None:
            t = self._trace
            for s in range(0, t.num_tokens, self.chunk_tokens):
                yield Chunk(s, 0, t.select(slice(s, s + self.chunk_tokens)))
            return
        store = _store()
        want = [*TOKEN_FIELDS, "experts", *columns] + (["logits"] if logits and self.has_logits else []) + (
            ["weights"] if weights and self.has_weights else [])
        start = 0
        for fi in self.files:
            pf = pq.ParquetFile(fi.path)
            names = [n for n in pf.schema_arrow.names if n in want]
            try:
                for batch in pf.iter_batches(batch_size=self.chunk_tokens, columns=names, use_threads=False):
                    if batch.num_rows == 0:
                        continue
                    t = store._table_to_trace(pa.Table.from_batches([batch]), fi.meta, fi.path)
                    if fi.seq_offset:
                        t.sequence = t.sequence + fi.seq_offset
                    yield Chunk(start, fi.group, t)
                    start += batch.num_rows
            except (pa.ArrowInvalid, OSError) as e:
                raise store.TraceFileError(f"{fi.path}: trace data is corrupt: {e}") from None

    def load(self) -> RoutingTrace:
        """The whole trace in memory (moelab.load_trace of the same path)."""
        if self._trace is not None:
            return self._trace
        return _store().load_trace(self.path)


def scan_trace(path, *, chunk_tokens: int = DEFAULT_CHUNK) -> TraceSource:
    """A lazy trace: pass it (or just the path) to any `moelab.metrics` function to stream it.

        >>> src = scan_trace("runs/pile")                          # doctest: +SKIP
        >>> moelab.metrics.repeat_rates(src, by="domain")                 # doctest: +SKIP
    """
    if isinstance(path, TraceSource):
        return path
    if isinstance(path, RoutingTrace):
        return TraceSource.from_trace(path, chunk_tokens=chunk_tokens)
    return TraceSource(path, chunk_tokens=chunk_tokens)


def is_lazy(x) -> bool:
    """A path or TraceSource (streamed), as opposed to an in-memory RoutingTrace."""
    import os

    return isinstance(x, (TraceSource, str, os.PathLike))


def _meta_json(path) -> dict:                                 # used by tests / tools: one file's moelab metadata
    return json.loads(pq.read_schema(path).metadata[b"moelab"])
