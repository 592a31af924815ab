"""RoutingTrace: which experts every token was routed to, as plain arrays.

A trace is what `moelab.trace(model)` records and what every metric, plot and
cost model reads. It is deliberately model-free: numpy arrays with named
dimensions plus per-token metadata, so a trace file can be analysed on a laptop
without torch models or weights.

    >>> import numpy as np, moelab
    >>> rng = np.random.default_rng(0)
    >>> ex = np.stack([rng.permutation(8)[:2] for _ in range(10)]).reshape(5, 2, 2)  # (tokens, layers, k)
    >>> t = moelab.RoutingTrace.from_arrays(ex, num_experts=8)
    >>> t.experts.shape, t.num_layers, t.top_k
    ((5, 2, 2), 2, 2)
    >>> t.to_pandas().shape   # one row per (token, layer, rank)
    (20, 8)

Dimensions
----------
tokens  every token a forward pass read (padding is never recorded)
layers  the MoE layers, in model order; `layer_ids` are the decoder-layer
        indices (`layers.{i}.router`), which can skip dense layers
k       rank of the choice: rank 0 is the expert with the highest weight
E       experts: `logits` (the router's raw logits) and `scores` (what its
        top-k runs on, bias included; meta["scores"] says the formula) are
        (tokens, layers, E) float32 when recorded (`moelab.trace(model,
        logits=True, scores=True)`), else None

References: Jiang et al. 2024, "Mixtral of Experts" §5 (routing analysis);
Muennighoff et al. 2024, "OLMoE" §5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .trace_schema import TOKEN_FIELDS, TraceMismatchError, expert_dtype
from .trace_write import to_arrow_table, write_trace

__all__ = ["TOKEN_FIELDS", "RoutingTrace", "TraceMismatchError", "expert_dtype"]


@dataclass(eq=False)
class RoutingTrace:
    experts: np.ndarray                 # (tokens, layers, k) uint8 | uint16: chosen expert ids, rank 0 first
    weights: np.ndarray | None          # (tokens, layers, k) float16 | float32: routing weights as used
    num_experts: int                    # E, experts per MoE layer
    sequence: np.ndarray                # (tokens,) int64: which sequence (row of a batch / document)
    position: np.ndarray                # (tokens,) int64: position in its sequence, padding not counted
    token_id: np.ndarray                # (tokens,) int64: input token id, -1 when unknown (inputs_embeds)
    step: np.ndarray                    # (tokens,) int32: 0 = prefill / plain forward, n = n-th decode step
    logits: np.ndarray | None = None    # (tokens, layers, E) float32: full router logits, if recorded
    layer_ids: np.ndarray | None = None  # (layers,) int: decoder-layer index of each MoE layer
    meta: dict[str, Any] = field(default_factory=dict)         # model, config, dtype, tokenizer, version
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # extra per-token columns, e.g. domain
    scores: np.ndarray | None = None    # (tokens, layers, E) float32: what top-k runs on (selection), if recorded

    def __post_init__(self):
        self.experts = np.asarray(self.experts)
        if self.experts.ndim != 3:
            raise TraceMismatchError(
                f"experts must be shaped (tokens, layers, k); got shape {self.experts.shape}. "
                "For a single layer use experts[:, None, :]."
            )
        T, L, k = self.experts.shape
        if self.layer_ids is None:
            self.layer_ids = np.arange(L)
        self.layer_ids = np.asarray(self.layer_ids, dtype=np.int64)
        if self.layer_ids.shape != (L,):
            raise TraceMismatchError(f"layer_ids has shape {self.layer_ids.shape}, expected ({L},)")
        for name in TOKEN_FIELDS:
            arr = np.asarray(getattr(self, name))
            if arr.shape != (T,):
                raise TraceMismatchError(f"{name} has shape {arr.shape}, expected ({T},) to match experts")
            setattr(self, name, arr)
        for name, shape in (("weights", (T, L, k)), ("logits", (T, L, self.num_experts)),
                            ("scores", (T, L, self.num_experts))):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr) != shape:
                raise TraceMismatchError(f"{name} has shape {np.shape(arr)}, expected {shape}")
        for name, arr in self.columns.items():
            if len(arr) != T:
                raise TraceMismatchError(f"column {name!r} has length {len(arr)}, expected {T}")
        if T and (self.experts.min() < 0 or self.experts.max() >= self.num_experts):
            raise TraceMismatchError(
                f"expert ids must lie in [0, {self.num_experts}); found {self.experts.min()}..{self.experts.max()}"
            )

    # ------------------------------------------------------------------ shape
    @property
    def num_tokens(self) -> int:
        return self.experts.shape[0]

    @property
    def num_layers(self) -> int:
        return self.experts.shape[1]

    @property
    def top_k(self) -> int:
        return self.experts.shape[2]

    @property
    def layer_names(self) -> list[str]:
        """Hook names, `layers.{i}.router`, one per MoE layer."""
        return [f"layers.{i}.router" for i in self.layer_ids]

    def __len__(self) -> int:
        return self.num_tokens

    def __repr__(self) -> str:
        extra = [n for n in ("weights", "logits", "scores") if getattr(self, n) is not None] + list(self.columns)
        return (
            f"RoutingTrace(tokens={self.num_tokens}, layers={self.num_layers}, k={self.top_k}, "
            f"experts={self.num_experts}, sequences={len(np.unique(self.sequence))}, with={extra})"
        )

    # ----------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        experts,
        weights=None,
        *,
        num_experts: int,
        sequence=None,
        position=None,
        token_id=None,
        step=None,
        logits=None,
        layer_ids=None,
        meta: dict | None = None,
        scores=None,
        **columns,
    ) -> "RoutingTrace":
        """Build a trace without a model, e.g. from a synthetic router.

            >>> ex = np.zeros((3, 1, 2), dtype=int); ex[..., 1] = 1
            >>> RoutingTrace.from_arrays(ex, num_experts=4).sequence
            array([0, 0, 0])

        `experts` is (tokens, layers, k). Without `sequence` all tokens form one
        sequence; without `position`, positions count up within each sequence.
        Extra keyword arrays of length `tokens` become per-token columns.
        `logits` and `scores` are (tokens, layers, E), stored as float32.
        """
        experts = np.asarray(experts)
        if experts.ndim != 3:
            raise TraceMismatchError(f"experts must be shaped (tokens, layers, k); got shape {experts.shape}")
        if experts.size and not np.issubdtype(experts.dtype, np.integer):
            raise TypeError(f"experts must hold integer expert ids; got dtype {experts.dtype}")
        if experts.size and (experts.min() < 0 or experts.max() >= num_experts):
            raise TraceMismatchError(
                f"expert ids must lie in [0, {num_experts}); found {experts.min()}..{experts.max()}")
        if experts.shape[2] > 1 and experts.size:
            srt = np.sort(experts, axis=-1)
            dup = np.argwhere((srt[..., 1:] == srt[..., :-1]).any(-1))
            if len(dup):
                t, layer = dup[0]
                raise TraceMismatchError(
                    f"a token's top-k experts must be distinct; token {t}, layer {layer} has {experts[t, layer].tolist()}")
        T = experts.shape[0]
        sequence = np.zeros(T, np.int64) if sequence is None else np.asarray(sequence, np.int64)
        if position is None:
            position = _positions_within(sequence)
        return cls(
            experts=experts.astype(expert_dtype(num_experts), copy=False),
            weights=None if weights is None else np.asarray(weights),
            num_experts=int(num_experts),
            sequence=sequence,
            position=np.asarray(position, np.int64),
            token_id=np.full(T, -1, np.int64) if token_id is None else np.asarray(token_id, np.int64),
            step=np.zeros(T, np.int32) if step is None else np.asarray(step, np.int32),
            logits=None if logits is None else np.asarray(logits, np.float32),
            layer_ids=layer_ids,
            meta=dict(meta or {}),
            columns={k: np.asarray(v) for k, v in columns.items()},
            scores=None if scores is None else np.asarray(scores, np.float32),
        )

    @classmethod
    def concat(cls, traces: list["RoutingTrace"], *, renumber_sequences: bool = False) -> "RoutingTrace":
        """Stack traces of the same model along tokens.

        Extra columns are the union of all traces' columns; a trace that lacks
        one (a tag that started later, say) contributes missing values (None).

        With `renumber_sequences`, each trace's sequence ids are offset so that
        sequences of different traces never collide (used for data-parallel shards).
        """
        traces = [t for t in traces]
        if not traces:
            raise TraceMismatchError("concat needs at least one trace; got an empty list")
        first = traces[0]
        for t in traces[1:]:
            if (t.num_layers, t.top_k, t.num_experts) != (first.num_layers, first.top_k, first.num_experts):
                raise TraceMismatchError(
                    "cannot concatenate traces of different shapes: "
                    f"(layers, k, experts) = {(first.num_layers, first.top_k, first.num_experts)} vs "
                    f"{(t.num_layers, t.top_k, t.num_experts)}"
                )
            for name in ("weights", "logits", "scores"):
                if (getattr(t, name) is None) != (getattr(first, name) is None):
                    raise TraceMismatchError(f"cannot concatenate traces where only some have {name}")
            if not np.array_equal(t.layer_ids, first.layer_ids):
                raise TraceMismatchError(
                    f"cannot concatenate traces of different layers: {first.layer_ids.tolist()} vs {t.layer_ids.tolist()}")
            ma, mb = first.meta.get("model"), t.meta.get("model")
            if ma and mb and ma != mb:
                raise TraceMismatchError(f"cannot concatenate traces of different models: {ma!r} vs {mb!r}")
        seqs = [t.sequence for t in traces]
        if renumber_sequences:
            offset, seqs = 0, []
            for t in traces:
                seqs.append(t.sequence + offset)
                offset += int(t.sequence.max()) + 1 if t.num_tokens else 0

        def cat(name):
            arrs = [getattr(t, name) for t in traces]
            return None if arrs[0] is None else np.concatenate(arrs)

        return cls(
            experts=cat("experts"),
            weights=cat("weights"),
            num_experts=first.num_experts,
            sequence=np.concatenate(seqs),
            position=cat("position"),
            token_id=cat("token_id"),
            step=cat("step"),
            logits=cat("logits"),
            layer_ids=first.layer_ids,
            meta=dict(first.meta),
            columns=_union_columns(traces),
            scores=cat("scores"),
        )

    # ------------------------------------------------------------- selection
    def select(self, tokens) -> "RoutingTrace":
        """A new trace of a subset of tokens (boolean mask or index array)."""
        idx = tokens if isinstance(tokens, slice) else np.asarray(tokens)

        def take(a):
            return None if a is None else a[idx]

        return RoutingTrace(
            experts=self.experts[idx],
            weights=take(self.weights),
            num_experts=self.num_experts,
            sequence=self.sequence[idx],
            position=self.position[idx],
            token_id=self.token_id[idx],
            step=self.step[idx],
            logits=take(self.logits),
            layer_ids=self.layer_ids,
            meta=dict(self.meta),
            columns={k: v[idx] for k, v in self.columns.items()},
            scores=take(self.scores),
        )

    def sorted(self) -> "RoutingTrace":
        """Tokens ordered by (sequence, position): consecutive rows are consecutive tokens."""
        order = np.lexsort((self.position, self.sequence))
        if np.array_equal(order, np.arange(self.num_tokens)):
            return self
        return self.select(order)

    def with_columns(self, **columns) -> "RoutingTrace":
        """Attach per-token columns (e.g. `domain=...`); returns a new trace."""
        t = self.select(slice(None))
        for k, v in columns.items():
            v = np.asarray(v)
            if v.shape[:1] != (self.num_tokens,):
                raise TraceMismatchError(f"column {k!r} has length {len(v)}, expected {self.num_tokens}")
            t.columns[k] = v
        return t

    def token_frame(self):
        """One row per token: sequence, position, token_id, step and extra columns (pandas)."""
        import pandas as pd

        data = {n: getattr(self, n) for n in TOKEN_FIELDS}
        data.update(self.columns)
        return pd.DataFrame(data)

    # ----------------------------------------------------------------- views
    def to_pandas(self):
        """Tidy long form: one row per (token, layer, rank).

        Columns: sequence, position, token_id, step, layer, rank, expert, weight
        (NaN when weights were not recorded), then any extra per-token columns.
        `layer` is the decoder-layer index.
        """
        import pandas as pd

        T, L, k = self.experts.shape
        rep = L * k
        data = {n: np.repeat(getattr(self, n), rep) for n in TOKEN_FIELDS}
        data["layer"] = np.tile(np.repeat(self.layer_ids, k), T)
        data["rank"] = np.tile(np.arange(k), T * L)
        data["expert"] = self.experts.reshape(-1).astype(np.int16)
        data["weight"] = (
            np.full(T * rep, np.nan, np.float32) if self.weights is None else self.weights.reshape(-1).astype(np.float32)
        )
        for c, v in self.columns.items():
            data[c] = np.repeat(v, rep)
        return pd.DataFrame(data)

    def to_arrow(self):
        """The wide Arrow table that `save` writes: one row per token (see `moelab.store`)."""
        return to_arrow_table(self)

    def save(self, path) -> None:
        """Write the trace to one Parquet file (zstd). Read it back with `moelab.load_trace(path)`."""
        write_trace(self, path)


def _positions_within(sequence: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal sequence ids (in the given order)."""
    pos = np.zeros(len(sequence), np.int64)
    if len(sequence) == 0:
        return pos
    order = np.argsort(sequence, kind="stable")
    s = sequence[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(s)]))
    pos[order] = np.arange(len(s)) - run_start
    return pos


def _union_columns(traces) -> dict[str, np.ndarray]:
    """Concatenate extra columns over traces; absent columns become None (object dtype)."""
    names = list(dict.fromkeys(c for t in traces for c in t.columns))
    out = {}
    for c in names:
        parts = [t.columns[c] if c in t.columns else np.full(t.num_tokens, None, object) for t in traces]
        if any(p.dtype == object for p in parts) and not all(p.dtype == object for p in parts):
            parts = [p.astype(object) for p in parts]
        out[c] = np.concatenate(parts)
    return out
