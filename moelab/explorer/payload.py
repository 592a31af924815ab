"""Pack a RoutingTrace into the compact JSON payload the explorer's JavaScript reads.

    >>> import numpy as np, moelab
    >>> from moelab.explorer.payload import pack, unpack_array
    >>> tr = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), num_experts=4)
    >>> p = pack(tr)
    >>> unpack_array(p["runs"][0]["experts"]).reshape(2, 1, 2).tolist()
    [[[0, 1]], [[2, 3]]]

Every array travels as `{"dtype": "uint8", "shape": [...], "b64": ..., "z": 1}`: the raw
little-endian bytes of a typed array (the smallest integer type that holds the values),
zlib-compressed when `z` is 1 (the browser inflates them with `DecompressionStream`), then
base64. Token text is a table of the distinct token ids' strings plus one index per token.
Weights keep the trace's own precision (fp16 bits travel as uint16, fp32 as float32), so the
table shown on hover is the recorded weight, not a re-rounding of it. Router logits, when
recorded, travel as their softmax (the router distribution) in fp16.

Checks with messages that say what to do: an empty trace, a tokenizer whose vocabulary does
not cover the trace's token ids, a comparison trace of other tokens, a trace above the
explorer's size limit (`MAX_TOKENS`).
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

__all__ = ["MAX_TOKENS", "ExplorerInputError", "pack", "unpack_array", "token_texts", "category_columns"]

MAX_TOKENS = 200_000           # tokens one explorer holds (the 100k bench: bench/bench_explorer.py)
MAX_CATEGORIES = 256           # a per-token column with at most this many values becomes a filter

_LITTLE = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "int32": "<i4", "float32": "<f4"}


class ExplorerInputError(ValueError):
    """The trace (or tokenizer, or comparison trace) cannot be shown; the message says how to fix it."""


# ----------------------------------------------------------------------------- arrays
def _smallest_int(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = int(a.min()), int(a.max())
    for dt in (np.uint8, np.uint16, np.uint32):
        if lo >= 0 and hi <= np.iinfo(dt).max:
            return a.astype(dt)
    if lo >= np.iinfo(np.int32).min and hi <= np.iinfo(np.int32).max:
        return a.astype(np.int32)
    raise ExplorerInputError(f"values {lo}..{hi} do not fit in int32; the explorer cannot show them")


def pack_array(a: np.ndarray, *, compress: bool = True) -> dict:
    """One typed array -> {"dtype", "shape", "b64", "z"} (see the module docstring)."""
    a = np.ascontiguousarray(a)
    name = a.dtype.name
    if name == "float16":                       # JS has no Float16Array everywhere: ship the bits
        a, name = a.view(np.uint16), "float16"
    elif name not in _LITTLE:
        raise TypeError(f"cannot pack dtype {a.dtype}; use one of {sorted(_LITTLE)} or float16")
    raw = a.astype(_LITTLE.get(a.dtype.name, "<u2"), copy=False).tobytes()
    z = int(compress)
    data = zlib.compress(raw, 6) if z else raw
    return {"dtype": name, "shape": list(a.shape), "b64": base64.b64encode(data).decode("ascii"), "z": z}


def unpack_array(spec: dict) -> np.ndarray:
    """The inverse of `pack_array` (what the JavaScript does), for tests and for reading a payload back."""
    raw = base64.b64decode(spec["b64"])
    if spec.get("z"):
        raw = zlib.decompress(raw)
    if spec["dtype"] == "float16":
        return np.frombuffer(raw, "<u2").view(np.float16).reshape(spec["shape"])
    return np.frombuffer(raw, _LITTLE[spec["dtype"]]).reshape(spec["shape"])


# ----------------------------------------------------------------------------- tokens
def _readable(piece: str) -> str:
    """SentencePiece / byte-level BPE pieces as text: '▁' and 'Ġ' -> space, '<0x0A>' -> newline."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            code = int(piece[3:5], 16)
        except ValueError:
            return piece
        return chr(code) if code < 128 else piece
    return piece.replace("\u2581", " ").replace("\u0120", " ").replace("\u010a", "\n")


def _vocab_size(tokenizer) -> int | None:
    for attr in ("vocab_size",):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, (int, np.integer)):
            size = int(v)
            try:  # transformers: len(tok) counts added tokens too
                size = max(size, len(tokenizer))
            except TypeError:
                pass
            return size
    try:
        return len(tokenizer)
    except TypeError:
        return None


def token_texts(token_ids: np.ndarray, tokenizer=None, recorded_with: str | None = None) -> tuple[list[str], np.ndarray]:
    """(strings of the distinct ids, index of each token into them); ids shown as ⟨id⟩ without a tokenizer."""
    ids = np.asarray(token_ids, np.int64)
    uniq, index = np.unique(ids, return_inverse=True)
    if tokenizer is None:
        strings = ["\u27e8?\u27e9" if i < 0 else f"\u27e8{i}\u27e9" for i in uniq.tolist()]
        return strings, index
    size = _vocab_size(tokenizer)
    known = uniq[uniq >= 0]
    if size is not None and len(known) and int(known.max()) >= size:
        bad = known[known >= size]
        raise ExplorerInputError(
            f"the tokenizer's vocabulary has {size} ids but the trace holds token ids up to {int(known.max())} "
            f"({len(bad)} distinct ids >= {size}, e.g. {bad[:5].tolist()}); pass the tokenizer the trace was "
            f"recorded with{f' (the trace names {recorded_with!r})' if recorded_with else ''}, or tokenizer=None "
            "to show token ids"
        )
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        pieces = tokenizer.convert_ids_to_tokens([int(i) for i in known])
    else:
        pieces = [tokenizer.decode([int(i)]) for i in known]
    it = iter(_readable(str(p)) for p in pieces)
    strings = ["\u27e8?\u27e9" if i < 0 else next(it) for i in uniq.tolist()]
    return strings, index


def category_columns(trace) -> dict[str, np.ndarray]:
    """The per-token columns the explorer offers as filters: labels (str/bool) with few distinct values,
    e.g. `domain`; numeric columns such as `document` or `offset` are not filters (the sequence is)."""
    out = {}
    for name, col in trace.columns.items():
        col = np.asarray(col)
        if col.ndim != 1 or col.dtype.kind not in "OUSb":
            continue
        if len(np.unique(col.astype(str))) <= MAX_CATEGORIES:
            out[name] = col
    return out


# ----------------------------------------------------------------------------- payload
def _check_trace(trace, what: str = "trace") -> None:
    if trace is None or not hasattr(trace, "experts"):
        raise ExplorerInputError(f"{what} must be a moelab.RoutingTrace; got {type(trace).__name__}")
    if trace.num_tokens == 0:
        raise ExplorerInputError(
            f"the {what} is empty (0 tokens): nothing to show. Run the model inside `with moelab.trace(model) as tr:` "
            "and show `tr` after the block has exited (the trace is filled on exit)"
        )


def _check_size(trace, max_tokens: int) -> None:
    if trace.num_tokens > max_tokens:
        n_seq = len(np.unique(trace.sequence))
        keep = max(1, int(n_seq * max_tokens / trace.num_tokens))
        hint = "trace.select(np.isin(trace.sequence, np.unique(trace.sequence)[:%d]))" % keep
        if "domain" in trace.columns:
            hint += " or trace.select(trace.columns['domain'] == 'code')"
        raise ExplorerInputError(
            f"the trace holds {trace.num_tokens:,} tokens, above the explorer's limit of {max_tokens:,} "
            f"(moelab.explorer.MAX_TOKENS): a page that large would freeze the browser. Show a slice, e.g. "
            f"{hint}; or raise the limit with max_tokens=..."
        )


def _check_same_tokens(a, b) -> None:
    problems = []
    if a.num_tokens != b.num_tokens:
        problems.append(f"{a.num_tokens} vs {b.num_tokens} tokens")
    else:
        for name in ("token_id", "sequence", "position"):
            x, y = getattr(a, name), getattr(b, name)
            if not np.array_equal(x, y):
                i = int(np.flatnonzero(x != y)[0])
                problems.append(f"{name} differs first at token {i} ({x[i]} vs {y[i]})")
                break
    if a.num_layers != b.num_layers or not np.array_equal(a.layer_ids, b.layer_ids):
        problems.append(f"layers {a.layer_ids.tolist()} vs {b.layer_ids.tolist()}")
    if a.num_experts != b.num_experts:
        problems.append(f"{a.num_experts} vs {b.num_experts} experts")
    if problems:
        raise ExplorerInputError(
            "compare= needs a trace of the same tokens (same token ids, sequences and positions, same layers); "
            f"these differ: {'; '.join(problems)}. Trace the same inputs twice (e.g. fp32 and bf16, "
            "two checkpoints) in the same order, or select the common tokens of both first"
        )


def _weights(trace, compress):
    w = trace.weights
    if w is None:
        return None
    w = np.asarray(w)
    return pack_array(w if w.dtype in (np.float16, np.float32) else w.astype(np.float32), compress=compress)


def _probs(trace, compress):
    if trace.logits is None:
        return None
    lg = np.asarray(trace.logits, np.float32)                    # (tokens, layers, E)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return pack_array(p.astype(np.float16), compress=compress)


def _routing(trace, compress) -> dict:
    return {"experts": pack_array(_smallest_int(trace.experts), compress=compress),
            "weights": _weights(trace, compress), "probs": _probs(trace, compress)}


def pack(trace, tokenizer=None, *, compare=None, labels=("A", "B"), title: str | None = None, layer=None,
         max_tokens: int = MAX_TOKENS, compress: bool = True) -> dict:
    """The explorer's payload: a JSON-able dict (shapes, typed arrays, token table, filters, labels)."""
    _check_trace(trace)
    _check_size(trace, max_tokens)
    if compare is not None:
        _check_trace(compare, "comparison trace")
        _check_same_tokens(trace, compare)
    strings, tok_index = token_texts(trace.token_id, tokenizer, trace.meta.get("tokenizer"))
    seq_uniq, seq_index = np.unique(trace.sequence, return_inverse=True)
    T, L, k = trace.experts.shape
    layer_ids = [int(i) for i in trace.layer_ids]
    if layer is None:
        start = 0
    elif int(layer) in layer_ids:
        start = layer_ids.index(int(layer))
    else:
        raise ExplorerInputError(f"layer={layer!r} is not one of the trace's MoE layers {layer_ids}")
    filters = []
    for name, col in category_columns(trace).items():
        cats, codes = np.unique(col.astype(str), return_inverse=True)
        filters.append({"name": name, "categories": cats.tolist(), "codes": pack_array(_smallest_int(codes), compress=compress)})
    from moelab.plots.style import expert_colors, text_color

    colors = expert_colors(trace.num_experts)
    payload = {
        "version": 1,
        "title": title or "",
        "tokens": T, "layers": L, "k": k, "num_experts": int(trace.num_experts),
        "layer_ids": layer_ids, "start_layer": start,
        "colors": colors, "text_colors": [text_color(c) for c in colors],
        "strings": strings,
        "token_index": pack_array(_smallest_int(tok_index), compress=compress),
        "token_id": pack_array(_smallest_int(np.maximum(trace.token_id, -1) + 1), compress=compress),  # id + 1
        "sequences": seq_uniq.astype(np.int64).tolist(),
        "sequence_index": pack_array(_smallest_int(seq_index), compress=compress),
        "position": pack_array(_smallest_int(trace.position), compress=compress),
        "order": pack_array(_smallest_int(np.lexsort((trace.position, trace.sequence))), compress=compress),
        "filters": filters,
        "labels": [str(labels[0]), str(labels[1])],
        "runs": [_routing(trace, compress)] + ([_routing(compare, compress)] if compare is not None else []),
    }
    return payload
