"""What `moelab.trace` needs besides its hooks: cache identity, generate's EOS/pad, metadata, host copies.

    >>> from moelab.trace_support import TracingError, _ids
    >>> sorted(_ids([2, 3]))
    [2, 3]

Split from `moelab.tracer` (one concept there: the hooks and how one forward becomes
a record). Nothing here registers a hook on a model; `_watch_generate` wraps
`model.generate` while a trace is open and removes the wrapper on exit.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .routing_trace import RoutingTrace
from .sink import Stops


class TracingError(RuntimeError):
    """Tracing cannot proceed (nested tracing, a forward the tracer cannot follow, beam search)."""


def _check_path(folder, path, *, append, retain, flush_tokens) -> int:
    """Validate trace(path=, append=, retain=, flush_tokens=); the first part number to write."""
    if folder is not None and folder.suffix == ".parquet":
        raise ValueError(
            f"path={str(path)!r}: streaming writes a folder of Parquet parts (one per flush), not one file. "
            "Pass a folder name, e.g. path='runs/mytrace'; or trace in memory and call tr.save('x.parquet')."
        )
    first = 0
    if append and folder is not None and folder.is_dir():
        names = [p.stem for p in folder.glob("part-*.parquet")]
        first = 1 + max((int(n.split("-")[1]) for n in names if n.split("-")[1].isdigit()), default=-1)
    elif folder is not None and folder.is_dir() and any(folder.rglob("*.parquet")):
        n = sum(1 for _ in folder.rglob("*.parquet"))
        raise FileExistsError(
            f"path={str(path)!r} already holds {n} trace file(s); a new run would be mixed with them on load. "
            "Pass a new folder, delete the old one first, or pass append=True to add to it (a resumed run)."
        )
    if retain is False and folder is None:
        raise ValueError("retain=False without path= would discard everything recorded; pass path= to stream "
                         "to disk, or keep retain=True")
    if flush_tokens < 1:
        raise ValueError(f"flush_tokens must be >= 1; got {flush_tokens}")
    return first


def _num_experts(router, adapter, config) -> int:
    """E as the experts module / router holds it (exact for the modules built), else the config's."""
    for m in (router.experts, router.module):
        n = getattr(m, "num_experts", None)
        if isinstance(n, int) and n > 0:
            return n
    return adapter.num_experts(config)


def _top_k(router, adapter, config) -> int:
    n = getattr(router.module, "top_k", None)
    return n if isinstance(n, int) and n > 0 else adapter.top_k(config)


class _Cols:
    """A record's extra columns, shaped like a trace for `_union_columns`."""

    def __init__(self, n: int, columns: dict):
        self.num_tokens, self.columns = n, columns


def _find_cache(values):
    """The KV cache among a forward's arguments or outputs, by what it does (get_seq_length), not its name."""
    for v in values:
        if v is not None and not torch.is_tensor(v) and callable(getattr(v, "get_seq_length", None)):
            return v
    return None


def _first_layer_keys(cache):
    layers = getattr(cache, "layers", None)
    try:
        keys = getattr(layers[0], "keys", None) if layers else None
    except (TypeError, IndexError, KeyError):
        return None
    return keys if torch.is_tensor(keys) else None


def _keys_ref(cache):
    keys = _first_layer_keys(cache)
    return weakref.ref(keys) if keys is not None else None


def _watch_generate(tracer):
    """While tracing, note `generate`'s EOS / pad ids (its arguments or generation config) and refuse beam search.

    The wrapper passes every argument through unchanged and is removed on exit
    (returns the function that removes it). It reads only public arguments.
    """
    model = tracer.model
    if not callable(getattr(model, "generate", None)):
        return lambda: None
    original = model.generate
    own = "generate" in model.__dict__

    @functools.wraps(original)
    def generate(*args, **kwargs):
        gc = kwargs.get("generation_config") or getattr(model, "generation_config", None)
        beams = kwargs.get("num_beams", getattr(gc, "num_beams", 1)) or 1
        if int(beams) > 1:
            raise TracingError(
                f"generate(num_beams={beams}) under moelab.trace: beam search reorders the KV cache between steps, "
                "so per-token records could not be attributed to the final sequences. Trace greedy or sampled "
                "generation (num_beams=1), or trace the finished sequences with one plain forward."
            )
        eos = _ids(kwargs["eos_token_id"] if "eos_token_id" in kwargs else getattr(gc, "eos_token_id", None))
        pad = _ids(kwargs["pad_token_id"] if "pad_token_id" in kwargs else getattr(gc, "pad_token_id", None))
        outer, tracer._generating = tracer._generating, Stops(eos=eos, pad=pad or eos)  # generate pads with EOS
        try:
            return original(*args, **kwargs)
        finally:
            tracer._generating = outer

    model.generate = generate

    def unwatch():
        if own:
            model.generate = original
        else:
            model.__dict__.pop("generate", None)

    return unwatch


def _ids(v) -> frozenset:
    if v is None:
        return frozenset()
    if torch.is_tensor(v):
        v = v.reshape(-1).tolist()
    return frozenset(int(e) for e in (v if isinstance(v, (list, tuple, set)) else [v]))


def _fields(t: RoutingTrace) -> dict:
    return {name: getattr(t, name) for name in _FIELDS}


_FIELDS = ("experts", "weights", "num_experts", "sequence", "position", "token_id", "step", "logits",
           "layer_ids", "meta", "columns", "scores")


def _fill(target: RoutingTrace, source: RoutingTrace) -> None:
    """Copy `source`'s fields into the trace object the user already holds."""
    for name in _FIELDS:
        setattr(target, name, getattr(source, name))


def _build_meta(tr) -> dict:
    import transformers

    from . import __version__

    cfg = tr.config
    meta = {
        "model": getattr(cfg, "_name_or_path", "") or type(tr.model).__name__,
        "architecture": tr.adapter.name,
        "model_class": type(tr.model).__name__,
        "config": _jsonable_config(cfg),
        "num_experts": tr.num_experts,
        "top_k": tr.top_k,
        **tr.adapter.routing_meta(cfg),
        "dtype": str(next(tr.model.parameters()).dtype).replace("torch.", ""),
        "weights_recorded_as": "float32 (exact)",
        "tokenizer": _tokenizer_name(cfg),
        "experts_implementation": getattr(cfg, "_experts_implementation", None),
        "record_from": "experts module inputs" if tr.adapter.record == "experts" else "router return",
        "moelab_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    meta.update(tr.user_meta)
    return meta


def _tokenizer_name(cfg) -> str:
    """Mixtral's SentencePiece for the embedded models; otherwise the model's own folder/id (HF convention)."""
    name = getattr(cfg, "_name_or_path", "") or ""
    try:
        from .models import default_model_dir

        if name and Path(name).resolve().parent == default_model_dir().resolve().parent:
            return "mistral-common:tokenizer.model.v1"
    except Exception:  # pragma: no cover - odd paths
        pass
    return name


def _decoder_stack(model: nn.Module) -> nn.Module:
    """The module that receives input_ids / attention_mask and owns `layers` (MixtralModel, ...).

    A multimodal wrapper's base model (Gemma4Model: its `language_model` owns the layers) is the stack: it
    receives the token ids and the 2-D mask, which it hands its language model only as embeddings and masks."""
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and (hasattr(base, "layers") or hasattr(getattr(base, "language_model", None),
                                                                           "layers")):
        return base
    for m in model.modules():
        if hasattr(m, "layers") and hasattr(m, "embed_tokens"):
            return m
    return model


def _to_host(parts: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One device-to-host copy for all tensors: pack as bytes, copy, unpack as numpy views."""
    if all(t.device.type == "cpu" for t in parts.values()):
        return {name: t.numpy() for name, t in parts.items()}  # already on the host: no copy at all
    flat, layout, offset = [], {}, 0
    for name, t in parts.items():
        t = t.contiguous()
        b = t.view(torch.uint8).reshape(-1) if t.dtype != torch.uint8 else t.reshape(-1)
        flat.append(b)
        layout[name] = (offset, b.numel(), t.dtype, tuple(t.shape))
        offset += b.numel()
    buf = torch.cat(flat).cpu().numpy()
    return {name: buf[off: off + n].view(torch.empty(0, dtype=dt).numpy().dtype).reshape(shape)
            for name, (off, n, dt, shape) in layout.items()}


def _jsonable_config(cfg) -> dict:
    import json

    try:
        return json.loads(json.dumps(cfg.to_dict(), default=str))
    except Exception:  # pragma: no cover - exotic configs
        return {}
