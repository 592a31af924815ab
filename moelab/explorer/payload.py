"""Pack a RoutingTrace into the compact JSON payload the explorer's JavaScript reads.

    >>> import numpy as np, moelab
    >>> from moelab.explorer.payload import pack, unpack_array, unpack_weights
    >>> tr = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), [[[0.75, 0.25]], [[0.5, 0.5]]], num_experts=4)
    >>> p = pack(tr)
    >>> unpack_array(p["runs"][0]["experts"]).reshape(2, 1, 2).tolist()
    [[[0, 1]], [[2, 3]]]
    >>> unpack_weights(p["runs"][0]["weights"]).reshape(2, 1, 2).tolist()
    [[[0.75, 0.25]], [[0.5, 0.5]]]

Every array travels as `{"dtype": "uint8", "shape": [...], "b64": ..., "z": 1, "s": 0, "d": 0}`:
the little-endian bytes of a typed array (the smallest integer type that holds the values),
delta-coded when `d` is 1 (positions, the reading order: runs of +1 become runs of one byte),
byte-shuffled when `s` is 1 (all first bytes, then all second bytes: the slowly varying high
bytes of 16-bit weights compress), deflated (zlib) when `z` is 1 and base64-encoded; the browser
inflates with `DecompressionStream` and undoes the rest (explorer.js `decode`).
Token text is a vocabulary table (the distinct ids and their strings) plus one index per token.
Weights travel at the store's 16-bit precision (`moelab.codec`, as `save_trace` writes them: for
top-2 weights that sum to 1 only the second is stored), so the hover shows what a saved trace
reloads, within half an fp16 step of the recorded value. Router logits, when recorded, travel as
their softmax (the router distribution) in fp16.

A 300k-token x 4-layer top-2 trace is about 4.2 MB at most (tests/test_explorer.py checks <= 5 MB
on random routing, the incompressible case); 32 layers cost about 8x as much per token.

Checks with messages that say what to do: an empty trace, a tokenizer whose vocabulary does
not cover the trace's token ids, a comparison trace of other tokens, a trace above the
explorer's size limit (`MAX_TOKENS`).
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

from moelab.codec import decode_weights, encode_weights

__all__ = ["MAX_TOKENS", "ExplorerInputError", "pack", "pack_array", "unpack_array", "unpack_weights",
           "token_texts", "category_columns"]

MAX_TOKENS = 400_000           # tokens one explorer holds: ~5 MB at 4 layers (docs/explorer.md)
MAX_CATEGORIES = 256           # a per-token column with at most this many values becomes a filter

_LITTLE = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "int32": "<i4", "float32": "<f4", "float16": "<u2"}


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


def pack_array(a: np.ndarray, *, compress: bool = True, shuffle: bool = False, delta: bool = False) -> dict:
    """One typed array -> {"dtype", "shape", "b64", "z", "s", "d"} (see the module docstring)."""
    a = np.ascontiguousarray(a)
    name = a.dtype.name
    if name not in _LITTLE:
        raise TypeError(f"cannot pack dtype {a.dtype}; use one of {sorted(_LITTLE)}")
    flat = a.reshape(-1).astype(_LITTLE[name], copy=False)
    if name == "float16":                       # JS has no Float16Array everywhere: ship the bits
        flat = a.reshape(-1).view(np.uint16).astype("<u2", copy=False)
    delta = bool(delta) and a.dtype.kind in "ui" and flat.size > 1
    if delta:                                   # wraps around in the array's own integer type
        flat = np.concatenate([flat[:1], flat[1:] - flat[:-1]]).astype(flat.dtype)
    raw = flat.tobytes()
    size = flat.dtype.itemsize
    shuffle = bool(shuffle) and size > 1
    if shuffle:                                 # byte planes: all byte 0s, then all byte 1s, ...
        raw = np.frombuffer(raw, np.uint8).reshape(-1, size).T.tobytes()
    data = zlib.compress(raw, 6) if compress else raw
    return {"dtype": name, "shape": list(a.shape), "b64": base64.b64encode(data).decode("ascii"),
            "z": int(compress), "s": int(shuffle), "d": int(delta)}


def unpack_array(spec: dict) -> np.ndarray:
    """The inverse of `pack_array` (what explorer.js does), for tests and for reading a payload back."""
    raw = base64.b64decode(spec["b64"])
    if spec.get("z"):
        raw = zlib.decompress(raw)
    dt = np.dtype(_LITTLE[spec["dtype"]])
    if spec.get("s"):
        raw = np.frombuffer(raw, np.uint8).reshape(dt.itemsize, -1).T.tobytes()
    a = np.frombuffer(raw, dt)
    if spec.get("d"):
        a = np.cumsum(a, dtype=dt)              # modular, like the typed-array sum in the browser
    if spec["dtype"] == "float16":
        a = a.view(np.float16)
    return a.reshape(spec["shape"]).astype(a.dtype.newbyteorder("="))


def pack_weights(w: np.ndarray, *, compress: bool = True) -> dict:
    """(tokens, layers, k) weights -> {"layout", "k", "data"}: the store's 16-bit code (moelab.codec)."""
    layout, stored = encode_weights(np.asarray(w, np.float32))
    return {"layout": layout, "k": int(w.shape[-1]),
            "data": pack_array(stored, compress=compress, shuffle=True)}


def unpack_weights(spec: dict) -> np.ndarray:
    """The weights the browser shows: float32 (tokens, layers, k), as `load_trace` would reload them."""
    return decode_weights(spec["layout"], unpack_array(spec["data"]), k=spec["k"])


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
    T = trace.num_tokens
    if T <= max_tokens:
        return
    seqs, counts = np.unique(trace.sequence, return_counts=True)
    keep = int(np.searchsorted(np.cumsum(counts), max_tokens, side="right"))      # whole sequences that fit
    ways = []
    if keep:
        ways.append(f"its first {keep:,} of {len(seqs):,} sequences: "
                    f"trace.select(np.isin(trace.sequence, np.unique(trace.sequence)[:{keep}]))")
    if "domain" in trace.columns:
        doms, n = np.unique(np.asarray(trace.columns["domain"]).astype(str), return_counts=True)
        fits = [d for d, c in zip(doms.tolist(), n.tolist()) if c <= max_tokens]
        if fits:
            ways.append(f"one domain: trace.select(trace.columns['domain'] == {fits[0]!r})")
    ways.append(f"its first {max_tokens:,} tokens: trace.select(slice(0, {max_tokens}))")
    raise ExplorerInputError(
        f"the trace holds {T:,} tokens, above the explorer's limit of {max_tokens:,} "
        f"(moelab.explorer.MAX_TOKENS; at 4 layers that is a ~5 MB page, and a page much larger loads slowly). "
        f"Show a slice of it, e.g. {'; or '.join(ways)}. max_tokens=... raises the limit"
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
    return None if trace.weights is None else pack_weights(np.asarray(trace.weights), compress=compress)


def _probs(trace, compress):
    if trace.logits is None:
        return None
    lg = np.asarray(trace.logits, np.float32)                    # (tokens, layers, E)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return pack_array(p.astype(np.float16), compress=compress, shuffle=True)


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
    order = np.lexsort((trace.position, trace.sequence))              # reading order: sequence by sequence
    identity = bool(np.array_equal(order, np.arange(T)))
    uniq_ids = np.unique(trace.token_id)
    return {
        "version": 2,
        "title": title or "",
        "tokens": T, "layers": L, "k": k, "num_experts": int(trace.num_experts),
        "layer_ids": layer_ids, "start_layer": start,
        "colors": colors, "text_colors": [text_color(c) for c in colors],
        "strings": strings,                                            # the vocabulary table ...
        "ids": pack_array(_smallest_int(np.maximum(uniq_ids, -1) + 1), compress=compress, delta=True),  # ... its ids + 1
        "token_index": pack_array(_smallest_int(tok_index), compress=compress),   # each token's row in it
        "sequences": seq_uniq.astype(np.int64).tolist(),
        "sequence_index": pack_array(_smallest_int(seq_index), compress=compress, delta=True),
        "position": pack_array(_smallest_int(trace.position), compress=compress, delta=True),
        "order": None if identity else pack_array(_smallest_int(order), compress=compress, delta=True),
        "filters": filters,
        "labels": [str(labels[0]), str(labels[1])],
        "runs": [_routing(trace, compress)] + ([_routing(compare, compress)] if compare is not None else []),
    }


def reading_order(payload: dict) -> np.ndarray:
    """Token rows in reading order (sequence by sequence, by position), as the page lays them out."""
    spec = payload["order"]
    return np.arange(payload["tokens"]) if spec is None else unpack_array(spec).astype(np.int64)
