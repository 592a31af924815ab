"""moelab.trace: record every router's choices while a model runs.

    >>> with moelab.trace(model) as tr:                      # doctest: +SKIP
    ...     model.generate(**tok(["a", "bb"], return_tensors="pt", padding=True), max_new_tokens=4)
    >>> tr.experts.shape                                     # (tokens, layers, k), filled on exit
    >>> tr.to_pandas()[["sequence", "position", "step", "layer", "expert", "weight"]]

How it works (and what it never does)
-------------------------------------
* One forward hook per router (`layers.{i}.router`), reading the triple
  (logits, weights, indices) the router returns, plus a pre- and a post-hook on
  the decoder stack to see `input_ids` / `attention_mask` and to close the
  forward. Hooks live inside the context manager and are removed in `finally`
  on every exit path. No forward is patched, no module swapped, no setting
  (attention or experts implementation, dtype, config) touched: with or without
  tracing the model computes bitwise the same logits.
* No host synchronisation per layer: each router's outputs stay on their
  device; at the end of a forward they are stacked, cast to compact dtypes
  (ids uint8/int16, weights fp16 — fp32 when `logits=True`), packed with the
  token metadata into one byte buffer and copied to the host once.
* Padding: positions whose attention mask is 0 (left or right padding) are
  dropped on the host, so no statistic counts them. `position` counts real
  tokens only (0 = the first unpadded token).
* `generate` (KV cache on): a forward that starts from an empty cache opens new
  sequences (step 0 = prefill); a forward that extends a cache of the same batch
  is the next decode step of those sequences. Each token the model reads is
  recorded once. Rows that finished early (they read the EOS of
  `model.generation_config`) are not recorded while `generate` keeps feeding
  them padding. Beam search records one row per beam (reordering is not
  followed: use greedy or sampling for locality statistics).
* `path=`: records are streamed to a folder of Parquet parts, one part each
  `flush_tokens` tokens, so memory stays bounded and a killed process leaves
  every flushed part readable (a single Parquet file is unreadable until its
  footer is written, hence parts).

References: the hook discipline follows ROME's `nethook.TraceDict` and
TransformerLens; router semantics follow transformers' `MixtralTopKRouter`.
"""

from __future__ import annotations

import inspect
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .adapters import adapter_for, find_routers, model_config
from .routing_trace import RoutingTrace, expert_dtype
from .store import write_trace

_ACTIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class TracingError(RuntimeError):
    """Tracing cannot proceed (nested tracing, a forward the tracer cannot follow)."""


def trace(
    model: nn.Module,
    *,
    path=None,
    logits: bool = False,
    flush_tokens: int = 65536,
    retain: bool | None = None,
    meta: dict | None = None,
) -> "Tracer":
    """Context manager that records routing; yields a `RoutingTrace` filled on exit.

        >>> with moelab.trace(model) as tr:                  # doctest: +SKIP
        ...     model(**tok("Hello world", return_tensors="pt"))
        >>> tr.experts.shape                                 # (tokens, layers, k)
        (3, 4, 2)

    path          folder to stream Parquet parts into (bounded memory); None keeps all in RAM
    logits        also record full router logits (float32, (tokens, layers, E)); weights then stay fp32
    flush_tokens  with `path`: tokens buffered before a part file is written
    retain        fill the yielded trace on exit (default: True; with `path` it is read back from disk)
    meta          extra metadata stored in the trace (e.g. {"corpus": "heldout"})

    Use `tracer.tag(domain=[...])` (the object `trace()` returns) to attach
    per-sequence columns to the sequences of the next forward.
    """
    return Tracer(model, path=path, logits=logits, flush_tokens=flush_tokens, retain=retain, meta=meta)


class Tracer:
    def __init__(self, model, *, path=None, logits=False, flush_tokens=65536, retain=None, meta=None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"moelab.trace expects a torch nn.Module (a transformers model); got {type(model).__name__}")
        self.model = model
        self.adapter = adapter_for(model)               # raises UnsupportedModelError with the supported list
        self.routers = find_routers(model)
        self.config = model_config(model)
        self.num_experts = self.adapter.num_experts(self.config)
        self.top_k = self.adapter.top_k(self.config)
        self.logits = bool(logits)
        self.path = None if path is None else Path(path)
        if self.path is not None and self.path.suffix == ".parquet":
            raise ValueError(
                f"path={str(path)!r}: streaming writes a folder of Parquet parts (one per flush), not one file. "
                "Pass a folder name, e.g. path='runs/mytrace'; or trace in memory and call tr.save('x.parquet')."
            )
        if self.path is not None and self.path.is_dir() and any(self.path.rglob("*.parquet")):
            n = sum(1 for _ in self.path.rglob("*.parquet"))
            raise FileExistsError(
                f"path={str(path)!r} already holds {n} trace file(s); a new run would be mixed with them on load. "
                "Pass a new folder, or delete the old one first."
            )
        if retain is False and self.path is None:
            raise ValueError("retain=False without path= would discard everything recorded; pass path= to stream "
                             "to disk, or keep retain=True")
        if flush_tokens < 1:
            raise ValueError(f"flush_tokens must be >= 1; got {flush_tokens}")
        self.flush_tokens = int(flush_tokens)
        self.retain = True if retain is None else bool(retain)
        self.user_meta = dict(meta or {})
        self.stack = _decoder_stack(model)
        self._forward_sig = inspect.signature(type(self.stack).forward)
        self._slot = {id(r.module): i for i, r in enumerate(self.routers)}
        self._handles: list = []
        self._raw: list[dict] = []                        # per-forward host arrays not yet flushed
        self._buffered = 0
        self._e_dtype = torch.from_numpy(np.zeros(0, expert_dtype(self.num_experts))).dtype
        self._w_dtype = torch.float32 if self.logits else torch.float16
        self._parts = 0
        self._tags: dict[str, Any] = {}
        self._seq_columns: dict[str, dict[int, Any]] = {}
        self._next_seq = 0
        self._group: dict | None = None                  # current generate group: seq ids, step, batch
        self._fwd: dict | None = None                    # state of the forward in flight
        self._finished: dict[int, np.ndarray] = {}       # per group (first seq id): rows that read EOS in decode
        self._eos = _eos_ids(model)
        self._run = uuid.uuid4().hex                     # parts of one run share it (see store.load_trace)
        self.trace: RoutingTrace | None = None

    # ------------------------------------------------------------------ API
    def tag(self, **columns) -> None:
        """Per-sequence columns for the sequences opened by the next forward.

        Each value is a scalar (same for every row) or a sequence with one entry
        per batch row. They become per-token columns of the trace; the decode
        steps of a `generate` keep the labels of their prompt. Call again before
        each batch; untagged sequences get None.
        """
        self._tags = dict(columns)

    # ------------------------------------------------------- context manager
    def __enter__(self) -> RoutingTrace:
        if self.model in _ACTIVE:
            raise TracingError(
                f"{type(self.model).__name__} is already being traced; nested moelab.trace on one model is not "
                "supported. Use the outer trace, or finish it before starting another."
            )
        self.trace = self._records_to_trace([])  # the object the user holds; filled on exit
        _ACTIVE.add(self.model)
        try:
            for r in self.routers:
                self._handles.append(r.module.register_forward_hook(self._router_hook))
            self._handles.append(self.stack.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(self.stack.register_forward_hook(self._post_hook))
        except BaseException:
            self._remove_hooks()
            _ACTIVE.discard(self.model)
            raise
        return self.trace

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._remove_hooks()
        finally:
            self._fwd = None
            try:
                self._finish()
            finally:
                _ACTIVE.discard(self.model)
        return False

    def _remove_hooks(self):
        while self._handles:
            self._handles.pop().remove()

    # ----------------------------------------------------------------- hooks
    def _pre_hook(self, module, args, kwargs):
        # transformers calls the decoder stack with keywords; bind positionals only when present
        bound = self._forward_sig.bind_partial(module, *args, **kwargs).arguments if args else kwargs
        extra = bound.get("kwargs") if isinstance(bound.get("kwargs"), dict) else {}
        get = lambda name: bound.get(name, extra.get(name))  # noqa: E731
        ids, embeds, mask = get("input_ids"), get("inputs_embeds"), get("attention_mask")
        ref = ids if ids is not None else embeds
        if ref is None:
            self._fwd = None
            return None
        B, S = ref.shape[0], ref.shape[1]
        if B * S == 0:
            raise ValueError(f"moelab.trace: the forward got an empty batch (input shape {tuple(ref.shape)}); "
                             "pass at least one token")
        if mask is not None and mask.dim() != 2:
            mask = None  # a 4D custom mask: positions are then counted without padding information
        if mask is not None:
            past = mask.shape[1] - S
        else:
            cache = get("past_key_values")
            past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
            if past == 0 and get("cache_position") is not None:
                past = int(get("cache_position")[0])
        self._fwd = {"B": B, "S": S, "past": past, "ids": ids, "mask": mask, "layers": [None] * len(self.routers)}
        return None

    def _router_hook(self, module, inputs, output):
        fwd = self._fwd
        if fwd is not None:
            # output = (logits, weights, index); keep references only, no copy, no sync
            fwd["layers"][self._slot[id(module)]] = output
        return None

    def _post_hook(self, module, args, output):
        fwd, self._fwd = self._fwd, None
        if fwd is None:
            return None
        if any(x is None for x in fwd["layers"]):
            missing = [self.routers[i].name for i, x in enumerate(fwd["layers"]) if x is None]
            raise TracingError(f"forward ran without routers {missing}; moelab cannot align this forward's records")
        self._collect(fwd)
        return None

    # ------------------------------------------------------------ gathering
    @torch.no_grad()
    def _collect(self, fwd):
        """Per forward: stack and compact on the device, one copy to the host, bookkeeping in Python.

        The token-major reshaping and padding removal happen later, in `_materialise`,
        off the forward's critical path.
        """
        B, S, past = fwd["B"], fwd["S"], fwd["past"]
        layers = fwd["layers"]
        dev = layers[0][2].device
        index, weights = [o[2] for o in layers], [o[1] for o in layers]
        if any(t.device != dev for t in index):  # layers spread over devices (accelerate device_map)
            index = [t.to(dev, non_blocking=True) for t in index]
            weights = [t.to(dev, non_blocking=True) for t in weights]
        index = torch.stack(index)  # (layers, tokens, k), still on the device: no sync
        if index.shape[1] != B * S:
            raise TracingError(f"router saw {index.shape[1]} tokens but the forward has batch {B} x length {S}")
        parts = {"experts": index.to(self._e_dtype), "weights": torch.stack(weights).to(self._w_dtype)}
        if self.logits:
            parts["logits"] = torch.stack([o[0].to(dev, non_blocking=True) for o in layers]).float()
        mask = fwd["mask"]
        if mask is not None:
            # positions count real tokens only: unpadded tokens before + running count now (on the device,
            # so only (B, S) values cross to the host however long the cache is)
            mask = mask.to(dev)
            valid = mask[:, -S:].to(torch.int32)
            parts["position"] = mask[:, :-S].sum(1, keepdim=True, dtype=torch.int32) + valid.cumsum(1, dtype=torch.int32) - 1
            parts["valid"] = valid.to(torch.uint8)
        if fwd["ids"] is not None:
            parts["token_id"] = fwd["ids"].to(dev, copy=True)
        host = _to_host(parts)

        # Python-side bookkeeping: which sequences and generate step these rows are
        # a forward continues the open group only if it extends that group's cache exactly
        grp = self._group
        if past == 0 or grp is None or grp["B"] != B or grp["end"] != past:
            grp = self._group = {"B": B, "seq0": self._next_seq, "step": 0, "end": past + S}
            self._next_seq += B
            self._apply_tags(np.arange(grp["seq0"], grp["seq0"] + B))
        else:
            grp["step"] += 1
            grp["end"] = past + S
        host.update(B=B, S=S, past=past, seq0=grp["seq0"], step=grp["step"])
        self._raw.append(host)
        self._buffered += B * S
        if self.path is not None and self._buffered >= self.flush_tokens:
            self._flush()

    def _materialise(self, raw: dict) -> dict[str, np.ndarray]:
        """One forward's host arrays -> token-major records without padding."""
        B, S, past = raw["B"], raw["S"], raw["past"]
        T = B * S
        L = raw["experts"].shape[0]
        if "valid" in raw:
            position = raw["position"].reshape(T)
            valid = raw["valid"].reshape(T).astype(bool)
        else:
            position, valid = np.tile(np.arange(past, past + S), B), None
        if raw["step"] > 0 and self._eos and "token_id" in raw:
            # generate keeps feeding finished rows (pad tokens, mask 1) until every row is done: a row
            # that has read its EOS in a decode step reads only padding afterwards, so drop it
            ids = raw["token_id"].reshape(B, S)
            done = self._finished.setdefault(raw["seq0"], np.zeros(B, bool))
            live = np.repeat(~done, S)
            done |= np.isin(ids, self._eos).any(1)
            valid = live if valid is None else valid & live

        def tok(a):  # (L, T, x) -> (T', L, x)
            a = a.reshape(L, T, -1).transpose(1, 0, 2)
            return a[valid] if valid is not None else np.ascontiguousarray(a)

        def keep(a):
            return a[valid] if valid is not None else a

        rec = {
            "experts": tok(raw["experts"]),
            "weights": tok(raw["weights"]),
            "sequence": keep(np.repeat(np.arange(raw["seq0"], raw["seq0"] + B), S)),
            "position": keep(position).astype(np.int64),
            "token_id": keep(raw["token_id"].reshape(T).astype(np.int64)) if "token_id" in raw
            else np.full(T if valid is None else int(valid.sum()), -1, np.int64),
        }
        rec["step"] = np.full(len(rec["sequence"]), raw["step"], np.int32)
        if "logits" in raw:
            rec["logits"] = tok(raw["logits"])
        return rec

    def _apply_tags(self, seq: np.ndarray):
        tags, self._tags = self._tags, {}
        for name, value in tags.items():
            vals = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value] * len(seq)
            if len(vals) != len(seq):
                raise ValueError(f"tag {name!r} has {len(vals)} values but the batch has {len(seq)} rows")
            self._seq_columns.setdefault(name, {}).update(zip(seq.tolist(), vals))

    # ---------------------------------------------------------- assembling
    def _records_to_trace(self, chunks) -> RoutingTrace:
        L, k = len(self.routers), self.top_k
        if chunks:
            cat = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
        else:
            cat = {
                "experts": np.zeros((0, L, k), expert_dtype(self.num_experts)),
                "weights": np.zeros((0, L, k), np.float32 if self.logits else np.float16),
                "sequence": np.zeros(0, np.int64), "position": np.zeros(0, np.int64),
                "token_id": np.zeros(0, np.int64), "step": np.zeros(0, np.int32),
            }
            if self.logits:
                cat["logits"] = np.zeros((0, L, self.num_experts), np.float32)
        columns = {}
        for name, by_seq in self._seq_columns.items():
            columns[name] = np.array([by_seq.get(s) for s in cat["sequence"].tolist()])
        return RoutingTrace(
            experts=cat["experts"], weights=cat["weights"], num_experts=self.num_experts,
            sequence=cat["sequence"], position=cat["position"], token_id=cat["token_id"], step=cat["step"],
            logits=cat.get("logits"), layer_ids=np.array([r.layer for r in self.routers]),
            meta=self._meta(), columns=columns,
        )

    def _flush(self):
        if not self._raw:
            return
        t = self._records_to_trace([self._materialise(r) for r in self._raw])
        self._raw, self._buffered = [], 0
        write_trace(t, self.path / f"part-{self._parts:05d}.parquet", shard=self._shard_id(), run=self._run)
        self._parts += 1

    def _finish(self):
        if self.path is not None:
            self._flush()
            if self.retain and self._parts:
                from .store import load_trace

                _fill(self.trace, load_trace(self.path))
            return
        if self.retain:
            _fill(self.trace, self._records_to_trace([self._materialise(r) for r in self._raw]))
        self._raw = []

    def _shard_id(self) -> str:
        import os

        return str(os.environ.get("RANK", self.user_meta.get("shard", 0)))

    def _meta(self) -> dict:
        if getattr(self, "_meta_cache", None) is None:
            self._meta_cache = self._build_meta()
        return dict(self._meta_cache)

    def _build_meta(self) -> dict:
        cfg = self.config
        import transformers

        meta = {
            "model": getattr(cfg, "_name_or_path", "") or type(self.model).__name__,
            "architecture": self.adapter.name,
            "model_class": type(self.model).__name__,
            "config": _jsonable_config(cfg),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "renormalised": self.adapter.is_renormalised(cfg),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "weights_recorded_as": "float32" if self.logits else "float16",
            "tokenizer": _tokenizer_name(cfg),
            "experts_implementation": getattr(cfg, "_experts_implementation", None),
            "moelab_version": __version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
        meta.update(self.user_meta)
        return meta


def _fill(target: RoutingTrace, source: RoutingTrace) -> None:
    """Copy `source`'s fields into the trace object the user already holds."""
    for name in ("experts", "weights", "num_experts", "sequence", "position", "token_id", "step",
                 "logits", "layer_ids", "meta", "columns"):
        setattr(target, name, getattr(source, name))


def _eos_ids(model) -> list[int]:
    """EOS ids `generate` stops on (generation_config, else config), as a list."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None)
        if eos is not None:
            return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    return []


def _tokenizer_name(cfg) -> str:
    """Mixtral's SentencePiece for the embedded model; otherwise the model's own folder/id (HF convention)."""
    name = getattr(cfg, "_name_or_path", "") or ""
    try:
        from .models import default_model_dir

        if name and Path(name).resolve() == default_model_dir().resolve():
            return "mistral-common:tokenizer.model.v1"
    except Exception:  # pragma: no cover - odd paths
        pass
    return name


def _decoder_stack(model: nn.Module) -> nn.Module:
    """The module that receives input_ids / attention_mask and owns `layers` (MixtralModel, ...)."""
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and hasattr(base, "layers"):
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
    buf = torch.cat(flat).cpu().numpy() if len(flat) > 1 else flat[0].cpu().numpy()
    out = {}
    for name, (off, n, dtype, shape) in layout.items():
        out[name] = buf[off: off + n].view(torch.empty(0, dtype=dtype).numpy().dtype).reshape(shape)
    return out


def _jsonable_config(cfg) -> dict:
    try:
        d = cfg.to_dict()
    except Exception:  # pragma: no cover - exotic configs
        return {}
    import json

    return json.loads(json.dumps(d, default=str))
