"""Shared plumbing for the metrics: token masks, groups, consecutive pairs, top-k sets.

Nothing here is public API; every metric module builds on these few helpers so
that "which tokens count" means the same thing everywhere:

* `where`     an optional boolean per-token mask (or index array): only those tokens count.
              Padding is never recorded in a trace, so there is nothing else to mask.
* `by`        a per-token column name (`"domain"`, `"sequence"`, `"step"`, ...) or an
              array of length `tokens`: results get one block per group value.
* pairs       token t and t+1 are consecutive only when they share a sequence and their
              positions differ by exactly 1 (never across sequences or gaps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import TOKEN_FIELDS, RoutingTrace, TraceMismatchError

# --------------------------------------------------------------------------- tokens
def check_trace(trace, fn: str) -> RoutingTrace:
    if not isinstance(trace, RoutingTrace):
        raise TypeError(
            f"{fn}() expects a moelab.RoutingTrace, a trace path or a moelab.scan_trace(path); "
            f"got {type(trace).__name__}. "
            "Load one with moelab.load_trace(path) or build one with RoutingTrace.from_arrays(...)."
        )
    return trace


STREAM = None   # moelab.metrics.stream.dispatch, registered by moelab/metrics/__init__.py (no import circle)


def streamable(fn):
    """Dispatch `fn(trace, ...)` to `moelab.metrics.stream` when a trace argument is a path or TraceSource."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..scan import is_lazy

        lazy = any(is_lazy(a) for a in args[:2]) or any(
            is_lazy(v) for v in (kwargs.get("a"), kwargs.get("b"), kwargs.get("final"), kwargs.get("trace")))
        if not lazy and fn.__name__ == "router_saturation" and args and isinstance(args[0], dict):
            lazy = any(is_lazy(v) for v in args[0].values())
        if lazy:
            return STREAM(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    wrapper.__wrapped_in_memory__ = fn
    return wrapper


def apply_where(trace: RoutingTrace, where) -> RoutingTrace:
    """The trace restricted to the tokens selected by `where` (bool mask or indices)."""
    if where is None:
        return trace
    w = np.asarray(where)
    if w.dtype == bool and w.shape != (trace.num_tokens,):
        raise TraceMismatchError(
            f"where= is a boolean mask of shape {w.shape}, expected ({trace.num_tokens},): one entry per token"
        )
    return trace.select(w)


def column(trace: RoutingTrace, by) -> tuple[np.ndarray, str]:
    """The per-token values named by `by` (a column name or an array), and a name for them."""
    if isinstance(by, str):
        if by in trace.columns:
            return np.asarray(trace.columns[by]), by
        if by in TOKEN_FIELDS:
            return np.asarray(getattr(trace, by)), by
        raise KeyError(
            f"by={by!r} is not a column of this trace; it has {sorted([*TOKEN_FIELDS, *trace.columns])}. "
            f"Attach one with trace.with_columns({by}=values)."
        )
    values = np.asarray(by)
    if values.shape[:1] != (trace.num_tokens,):
        raise TraceMismatchError(
            f"by= array has shape {values.shape}, expected ({trace.num_tokens},): one value per token"
        )
    return values, "group"


def group_codes(trace: RoutingTrace, by) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(codes (tokens,) int64 in [0, G) or -1 for a missing value, labels (G,), name).

    Without `by` every token is in the one group 0 and name is None.
    """
    if by is None:
        return np.zeros(trace.num_tokens, np.int64), np.array([None], dtype=object), None
    values, name = column(trace, by)
    codes, labels = pd.factorize(values, sort=True)
    return codes.astype(np.int64, copy=False), np.asarray(labels), name


def batch_codes(num_tokens: int, per_batch: int) -> np.ndarray:
    """Consecutive chunks of `per_batch` tokens in trace order: 0,0,..,1,1,.. (the last may be short)."""
    if int(per_batch) < 1:
        raise ValueError(f"per_batch={per_batch!r} must be a positive number of tokens, e.g. per_batch=4096")
    return np.arange(num_tokens, dtype=np.int64) // int(per_batch)


def layer_index(trace: RoutingTrace, layers) -> np.ndarray:
    """Positions (0..L-1) of the given decoder-layer ids in `trace.layer_ids`."""
    ids = list(trace.layer_ids)
    out = []
    for layer in layers:
        if int(layer) not in ids:
            raise KeyError(f"layer {layer} is not an MoE layer of this trace; its layer_ids are {[int(i) for i in ids]}")
        out.append(ids.index(int(layer)))
    return np.asarray(out, dtype=np.int64)


def default_layers(trace: RoutingTrace) -> tuple[int, ...]:
    """First, middle and last MoE layer (Mixtral's Figure 7 uses 0, 15, 31 of 32)."""
    L = trace.num_layers
    picks = sorted({0, (L - 1) // 2, L - 1})
    return tuple(int(trace.layer_ids[i]) for i in picks)


# ---------------------------------------------------------------------------- counts
def assignment_counts(trace: RoutingTrace, codes: np.ndarray, G: int, ranks: int, layers=None) -> np.ndarray:
    """Counts of expert assignments, shape (G, layers, E), over the first `ranks` ranks.

    `layers` are positions 0..L-1 (default all). Tokens whose group code is -1
    are skipped. One bincount per layer on group*E + expert: no Python loop
    over tokens.
    """
    E = trace.num_experts
    layers = np.arange(trace.num_layers) if layers is None else np.asarray(layers)
    keep = codes >= 0
    all_kept = bool(keep.all())
    codes = codes if all_kept else codes[keep]
    base = None if G == 1 else (codes * E)[:, None]                # (tokens, 1)
    out = np.zeros((G, len(layers), E), np.int64)
    for i, l in enumerate(layers):
        e = trace.experts[:, l, :ranks]                            # (tokens, ranks)
        if not all_kept:
            e = e[keep]
        if G == 1:
            out[0, i] = np.bincount(e.reshape(-1), minlength=E)
        else:
            key = (base + e).reshape(-1)                           # (tokens * ranks,)
            out[:, i] = np.bincount(key, minlength=G * E).reshape(G, E)
    return out


def group_sizes(codes: np.ndarray, G: int) -> np.ndarray:
    return np.bincount(codes[codes >= 0], minlength=G)


# ----------------------------------------------------------------------------- pairs
@streamable
def consecutive_pairs(trace: RoutingTrace) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of every pair of consecutive tokens in the trace.

        >>> import numpy as np, moelab
        >>> t = moelab.RoutingTrace.from_arrays(np.zeros((4, 1, 1), int), num_experts=2,
        ...                                     sequence=[0, 0, 1, 1], position=[0, 1, 0, 2])
        >>> consecutive_pairs(t)
        (array([0]), array([1]))

    j is position p+1 of the sequence that holds i at position p. Tokens may be
    stored in any order; pairs never cross sequences or gaps in positions.
    """
    order = np.lexsort((trace.position, trace.sequence))        # (tokens,) by (sequence, position)
    a, b = order[:-1], order[1:]
    ok = (trace.sequence[a] == trace.sequence[b]) & (trace.position[b] == trace.position[a] + 1)
    return a[ok], b[ok]


# ----------------------------------------------------------------------- top-k sets
def topk_bits(experts_l: np.ndarray, num_experts: int) -> np.ndarray:
    """Each token's expert set as a bitmask of ceil(E / 64) uint64 words, (tokens, words).

        >>> topk_bits(np.array([[0, 65]]), 128).tolist()          # expert 0 in word 0, expert 65 in word 1
        [[1, 2]]

    Ids within a row are distinct (a top-k set), so OR-ing one rank at a time never
    sets one (token, word) twice within a step.
    """
    T, k = experts_l.shape
    W = max(-(-int(num_experts) // 64), 1)
    e = experts_l.astype(np.uint64)                                  # (tokens, k)
    bits = np.left_shift(np.uint64(1), e & np.uint64(63))            # (tokens, k)
    if W == 1:
        return np.bitwise_or.reduce(bits, axis=1)[:, None]
    out = np.zeros((T, W), np.uint64)
    rows, word = np.arange(T), (e >> np.uint64(6)).astype(np.intp)
    for r in range(k):
        out[rows, word[:, r]] |= bits[:, r]
    return out


def overlap(a_l: np.ndarray, b_l: np.ndarray, num_experts: int) -> np.ndarray:
    """|A ∩ B| per token for two (tokens, k) expert-id arrays (ids within a row are distinct)."""
    both = topk_bits(a_l, num_experts) & topk_bits(b_l, num_experts)     # (tokens, words)
    return np.bitwise_count(both).sum(1, dtype=np.int64)


# -------------------------------------------------------------------- same tokens
def check_same_tokens(a: RoutingTrace, b: RoutingTrace, names=("a", "b"), *, same_k: bool = True) -> None:
    """Raise TraceMismatchError naming what differs between two traces of the same tokens."""
    na, nb = names
    if a.num_tokens != b.num_tokens:
        raise TraceMismatchError(
            f"{na} has {a.num_tokens} tokens but {nb} has {b.num_tokens} tokens: compare traces of the same inputs "
            "(select the common tokens first, e.g. trace.select(mask))"
        )
    if a.num_experts != b.num_experts:
        raise TraceMismatchError(f"{na} has E={a.num_experts} experts but {nb} has E={b.num_experts}")
    if same_k and a.top_k != b.top_k:
        raise TraceMismatchError(f"{na} has k={a.top_k} experts per token but {nb} has k={b.top_k}")
    if a.num_layers != b.num_layers or not np.array_equal(a.layer_ids, b.layer_ids):
        raise TraceMismatchError(
            f"{na} has MoE layers {a.layer_ids.tolist()} but {nb} has layers {b.layer_ids.tolist()}: traces of different models"
        )
    for field in ("sequence", "position", "token_id"):
        x, y = getattr(a, field), getattr(b, field)
        if not np.array_equal(x, y):
            i = int(np.flatnonzero(x != y)[0])
            hint = ""
            if field != "token_id" and np.array_equal(np.sort(x), np.sort(y)):
                hint = " (same tokens in a different order: compare a.sorted() with b.sorted())"
            raise TraceMismatchError(
                f"{na} and {nb} differ in {field} at token {i} ({x[i]} vs {y[i]}): "
                f"they do not describe the same tokens{hint}"
            )


def index_frame(df: pd.DataFrame, group_name: str | None, extra: list[str]) -> pd.DataFrame:
    """Set the index to ([group], *extra): (layer,) or (domain, layer), etc."""
    idx = ([group_name] if group_name is not None else []) + extra
    return df.set_index(idx)
