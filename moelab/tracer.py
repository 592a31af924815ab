"""moelab.trace: record every router's choices while a model runs.

    >>> import moelab, torch
    >>> model, tok = moelab.load_model(dtype=torch.float32)
    >>> with moelab.trace(model) as tr:                      # tr: a RoutingTrace, filled on exit
    ...     tr.tag(domain="demo")                            # labels for the sequences of the next forward
    ...     _ = model.generate(**tok(["a b", "c"], return_tensors="pt", padding=True), max_new_tokens=3)
    >>> tr.experts.shape[1:]                                 # (tokens, layers, k)
    (4, 2)
    >>> sorted(set(tr.step.tolist()))                        # 0 = prefill, then one per decode step
    [0, 1, 2]

Three jobs, three modules
-------------------------
* `moelab.hooks.HookSet`: per MoE layer (`layers.{i}.router`) a forward
  pre-hook on the experts module, reading the (index, weights) the experts
  actually receive (the canonical record, `moelab.arch`), plus a forward hook
  on the router when logits are asked for (on its `logits_from` child where the
  router does not return them: Gemma 4's `proj`); a pre- and post-hook on the decoder
  stack; all removed in `finally`. No forward is patched, no module
  swapped, no setting touched: with or without tracing the model computes
  bitwise the same logits. Per forward the outputs stay on their device, are
  stacked and compacted there and cross to the host in one copy.
* `moelab.tracking.SequenceTracker`: a pure state machine that decides which
  sequence, position and step each row is. A cache continuation is recognised
  by the cache *object* (identity and length), whatever the keyword is called
  (`cache=`, `past_key_values=`, positional) and whichever transformers is
  installed. Padding (attention mask 0) is never recorded; `position` counts
  real tokens only. Rows `generate` keeps feeding after they finished are not
  recorded (see `moelab.tracking`).
* `moelab.sink`: memory, or a folder of Parquet parts written by a background
  thread (`path=`), so memory stays bounded and a killed run leaves every
  finished part readable.

Weights are recorded exactly (float32 holds every fp16/bf16/fp32 value); files
keep them to fp16 precision (`moelab.codec`), bit-exact with `logits=True`.
`scores=True` also records the selection scores (the per-expert values the
router's top-k runs on, selection bias included; `moelab.arch.scores`),
computed from the router's raw logits (its `logits_from` child's output where the adapter names
one); `meta["scores"]` says the formula.
Beam search reorders the cache between steps; the tracer detects the reorder
and refuses (TracingError) rather than record wrong locality.

References: ROME's `nethook.TraceDict` and TransformerLens hook points (the
hook discipline); transformers' `MixtralTopKRouter` (router semantics).
"""

from __future__ import annotations

import inspect
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch import RecordError, adapter_for, find_routers, model_config
from .arch.base import experts_arguments
from .arch.record import experts_inputs, router_logits, router_record
from .arch.scores import SelectionScores
from .hooks import HookSet
from .routing_trace import RoutingTrace, _union_columns, expert_dtype
from .sink import MemorySink, PartsSink, Raw, SinkSpec, Stops
from .trace_support import (TracingError, _build_meta, _check_path, _Cols, _decoder_stack, _fields, _fill,
                            _find_cache, _first_layer_keys, _keys_ref, _num_experts, _to_host, _top_k,
                            _watch_generate)
from .tracking import Feed, SequenceTracker

__all__ = ["LiveTrace", "Tracer", "TracingError", "trace"]

_ACTIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def trace(model: nn.Module, *, path=None, logits: bool = False, scores: bool = False, flush_tokens: int = 65536,
          retain: bool | None = None, meta: dict | None = None, append: bool = False) -> "Tracer":
    """Context manager that records routing; yields a RoutingTrace (with `.tag()`) filled on exit.

        >>> import moelab
        >>> model, tok = moelab.load_model()
        >>> with moelab.trace(model) as tr:
        ...     _ = model(**tok("Hello world", return_tensors="pt"))
        >>> tr.experts.shape                                 # (tokens, layers, k): BOS + 2 pieces
        (3, 4, 2)

    path          folder to stream Parquet parts into (bounded memory); None keeps all in RAM
    logits        also record full router logits (float32, (tokens, layers, E)); files then keep weights bit-exact
    scores        also record the selection scores (float32, (tokens, layers, E)): what the router's top-k runs on,
                  e.g. sigmoid(logits) + e_score_correction_bias (DeepSeek-V3); meta["scores"] names the formula
    flush_tokens  with `path`: tokens buffered before a part file is written
    retain        fill the yielded trace on exit (default: True; with `path` it is read back from disk)
    meta          extra metadata stored in the trace (e.g. {"corpus": "heldout"})
    append        with `path`: add parts to a folder that already holds some (a resumed run); by default
                  such a folder is refused, so two runs never mix by accident
    """
    return Tracer(model, path=path, logits=logits, scores=scores, flush_tokens=flush_tokens, retain=retain,
                  meta=meta, append=append)


class LiveTrace(RoutingTrace):
    """What `with moelab.trace(model) as tr` yields: a RoutingTrace, filled when the block ends.

    `tr.tag(domain=[...])` labels the sequences opened by the next forward; each
    value is a scalar or one entry per batch row, and decode steps keep their
    prompt's labels. Untagged sequences get None.
    """

    def tag(self, **columns) -> None:
        tracer = self.__dict__.get("_tracer")
        if tracer is None:
            raise TracingError("tag() only works inside the `with moelab.trace(...)` block that yielded this trace")
        tracer.tag(**columns)


class Tracer:
    def __init__(self, model, *, path=None, logits=False, scores=False, flush_tokens=65536, retain=None, meta=None,
                 append=False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"moelab.trace expects a torch nn.Module (a transformers model); got {type(model).__name__}")
        self.model = model
        self.adapter = adapter_for(model)               # raises UnsupportedModelError with the supported list
        self.routers = find_routers(model)
        if not self.routers:
            raise TracingError(f"{type(model).__name__} has {self.adapter.name} router classes "
                               f"{self.adapter.router_classes} but none inside a decoder layer; nothing to trace")
        self.config = model_config(model)
        self.num_experts = _num_experts(self.routers[0], self.adapter, self.config)
        self.top_k = _top_k(self.routers[0], self.adapter, self.config)
        self.logits = bool(logits)
        self.scores = bool(scores)
        # each router's rule and bias, found before any forward
        self._scoring = SelectionScores(model, self.adapter, self.config, self.routers, self.num_experts) \
            if self.scores else None
        self.path = None if path is None else Path(path)
        self._first_part = _check_path(self.path, path, append=append, retain=retain, flush_tokens=flush_tokens)
        self.flush_tokens = int(flush_tokens)
        self.retain = True if retain is None else bool(retain)
        self.user_meta = dict(meta or {})
        self.stack = _decoder_stack(model)
        self._forward_sig = inspect.signature(type(self.stack).forward)
        self._slot = {id(r.logits_hook_module): i for i, r in enumerate(self.routers)}
        self._ex_slot = {id(r.experts): i for i, r in enumerate(self.routers) if r.experts is not None}
        self._from_experts = self.adapter.record == "experts"
        self._ex_args = experts_arguments(self.routers[0].experts) if self._from_experts else None
        self._e_dtype = torch.uint8 if self.num_experts <= 256 else torch.int32  # uint16 on the host (numpy)
        self._tracker = SequenceTracker()
        self._cache_keys: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
        self._next_key = 0
        self._cache_state: dict[int, Any] = {}            # cache key -> weakref to its first layer's keys tensor
        self._tags: dict[str, Any] = {}
        self._fwd: dict | None = None                     # the forward in flight
        self._hooks: HookSet | None = None
        self._unwatch = lambda: None
        self._generating: Stops | None = None             # generate's EOS/pad while a generate call runs
        self._sink = None
        self._run = os.urandom(16).hex()                  # parts of one run share it (see store.load_trace)
        self._meta_cache: dict | None = None
        self.trace: LiveTrace | None = None

    # ------------------------------------------------------------------ API
    def tag(self, **columns) -> None:
        """Per-sequence columns for the sequences opened by the next forward (see `LiveTrace.tag`)."""
        self._tags = dict(columns)

    # ------------------------------------------------------- context manager
    def __enter__(self) -> LiveTrace:
        if self.model in _ACTIVE:
            raise TracingError(
                f"{type(self.model).__name__} is already being traced; nested moelab.trace on one model is not "
                "supported. Use the outer trace, or finish it before starting another."
            )
        self.trace = LiveTrace(**_fields(self._to_trace([])))
        self.trace.__dict__["_tracer"] = self
        spec = SinkSpec(to_trace=self._to_trace)
        if self.path is None:
            self._sink = MemorySink(spec)
        else:
            from . import store

            self._sink = PartsSink(spec, self.path, flush_tokens=self.flush_tokens, first_part=self._first_part,
                                   write=lambda t, p: store.write_trace(t, p, shard=self._shard_id(), run=self._run))
        _ACTIVE.add(self.model)
        self._hooks = HookSet()
        try:
            self._unwatch = _watch_generate(self)
            for r in self.routers:
                if self._from_experts:
                    self._hooks.forward_pre(r.name, r.experts, self._experts_hook, with_kwargs=True)
                if self.logits or self.scores or not self._from_experts:
                    self._hooks.forward(r.name + ".logits", r.logits_hook_module, self._router_hook)
            self._hooks.forward_pre("stack.pre", self.stack, self._pre_hook, with_kwargs=True)
            self._hooks.forward("stack.post", self.stack, self._post_hook)
        except BaseException:
            self._hooks.close()
            self._unwatch()
            _ACTIVE.discard(self.model)
            raise
        return self.trace

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._hooks.close()
            self._unwatch()
        finally:
            self._fwd = None
            try:
                self._finish()
            finally:
                self.trace.__dict__.pop("_tracer", None)
                _ACTIVE.discard(self.model)
        return False

    # ----------------------------------------------------------------- hooks
    def _pre_hook(self, module, args, kwargs):
        bound = self._forward_sig.bind_partial(module, *args, **kwargs).arguments if args else dict(kwargs)
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
        mask4 = None
        if mask is not None and (not torch.is_tensor(mask) or mask.dim() != 2):
            # a 4D mask (static caches, custom masks): padding is read from the last query's row below
            mask4, mask = (mask if torch.is_tensor(mask) and mask.dim() == 4 else None), None
        cache = _find_cache(bound.values()) or _find_cache(extra.values())
        cache_len = int(cache.get_seq_length()) if cache is not None else 0
        past_mask = mask.shape[1] - S if mask is not None and mask.shape[1] >= S else None
        pos = get("cache_position")
        past_pos = int(pos.reshape(-1)[0]) if torch.is_tensor(pos) and pos.numel() else 0
        key = self._cache_key(cache)
        reordered = key is not None and self._reordered(key, cache, cache_len)
        tags, self._tags = self._tags, {}
        self._fwd = {"B": B, "S": S, "ids": ids, "mask": mask, "mask4": mask4, "stops": self._generating,
                     "cache": cache, "key": key, "cache_len": cache_len, "past_mask": past_mask,
                     "past_pos": past_pos, "reordered": reordered, "tags": tags,
                     "layers": [None] * len(self.routers), "outs": [None] * len(self.routers)}
        return None

    def _experts_hook(self, module, args, kwargs):
        fwd = self._fwd
        if fwd is not None:  # what the experts receive: references only, no copy, no sync
            fwd["layers"][self._ex_slot[id(module)]] = (args, kwargs)
        return None

    def _router_hook(self, module, inputs, output):
        fwd = self._fwd
        if fwd is not None:
            fwd["outs"][self._slot[id(module)]] = output
            if not self._from_experts:
                fwd["layers"][self._slot[id(module)]] = output
        return None

    def _post_hook(self, module, args, output):
        fwd, self._fwd = self._fwd, None
        if fwd is None:
            return None
        missing = [self.routers[i].name for i, x in enumerate(fwd["layers"]) if x is None]
        if missing:
            raise TracingError(f"forward ran without routers {missing}; moelab cannot align this forward's records")
        out_cache = _find_cache(output.values() if hasattr(output, "values") else
                                (output if isinstance(output, tuple) else ()))
        # the forward continued its input cache only if it returned that same object (a cache passed under a
        # keyword this transformers version ignores is not continued, and neither is it here)
        used = fwd["cache"] is not None and out_cache is fwd["cache"]
        if used and fwd["reordered"]:
            raise TracingError(
                "the KV cache's rows were reordered between two forwards (beam search does this): moelab cannot "
                "attribute the recorded tokens to the final sequences. Trace greedy or sampled generation "
                "(num_beams=1), or trace the finished sequences with one plain forward."
            )
        if fwd["past_mask"] is not None:
            past = fwd["past_mask"]
        else:
            past = fwd["cache_len"] if used else fwd["past_pos"]
        fwd["past"] = past
        fwd["a"] = self._tracker.assign(Feed(batch=fwd["B"], length=fwd["S"], past=past,
                                             cache=fwd["key"] if used else None), fwd["tags"])
        key = self._cache_key(out_cache)
        self._tracker.bind(fwd["a"], key)
        if key is not None:
            self._cache_state[key] = _keys_ref(out_cache)
        self._sink.put(self._collect(fwd))
        return None

    # ------------------------------------------------------------ gathering
    @torch.no_grad()
    def _collect(self, fwd) -> Raw:
        """Stack and compact on the device, one copy to the host; token-major work happens in the sink."""
        B, S, a = fwd["B"], fwd["S"], fwd["a"]
        try:
            outs = [self._read(i, x, fwd["outs"][i], B * S) for i, x in enumerate(fwd["layers"])]
        except RecordError as e:
            raise TracingError(str(e)) from None
        dev = outs[0][0].device
        index, weights = [o[0] for o in outs], [o[1] for o in outs]
        ks = {r.name: t.shape[1] for r, t in zip(self.routers, index)}
        if len(set(ks.values())) > 1:
            raise TracingError(
                f"the routers chose different numbers of experts in one forward ({ks}); a RoutingTrace holds one "
                "k for every layer. Trace the layers with equal k separately, or override k for all layers "
                "(moelab.intervene(model, top_k=k))."
            )
        if any(t.device != dev for t in index):  # layers spread over devices (accelerate device_map)
            index = [t.to(dev, non_blocking=True) for t in index]
            weights = [t.to(dev, non_blocking=True) for t in weights]
        parts = {"experts": torch.stack(index).to(self._e_dtype), "weights": torch.stack(weights).float()}
        if self.logits:
            parts["logits"] = torch.stack([o[2].to(dev, non_blocking=True) for o in outs]).float()
        if self.scores:
            parts["scores"] = torch.stack([self._scoring.compute(i, o[2]).to(dev, non_blocking=True)
                                           for i, o in enumerate(outs)])
        mask = fwd["mask"]
        if mask is not None:
            # positions count real tokens only: unpadded tokens before + running count now (on the device)
            mask = mask.to(dev)
            valid = mask[:, -S:].to(torch.int32)
            parts["position"] = (mask[:, :-S].sum(1, keepdim=True, dtype=torch.int32)
                                 + valid.cumsum(1, dtype=torch.int32) - 1)
            parts["valid"] = valid.to(torch.uint8)
            parts["pads"] = (mask == 0).sum(1, keepdim=True, dtype=torch.int32)
        elif fwd["mask4"] is not None and fwd["mask4"].shape[-1] >= fwd["past"] + S:
            # key j of this forward is real iff the last query may attend to it (causal + padding mask)
            att = fwd["mask4"][:, 0, -1, fwd["past"]: fwd["past"] + S].to(dev)
            parts["valid"] = (att if att.dtype == torch.bool else att == 0).to(torch.uint8)
        if fwd["ids"] is not None:
            parts["token_id"] = fwd["ids"].to(dev, copy=True)
        host = _to_host(parts)
        if self.num_experts > 256:
            host["experts"] = host["experts"].astype(expert_dtype(self.num_experts))
        return Raw(B=B, S=S, past=fwd["past"], seq0=a.seq0, step=a.step, decode=a.decode, group=a.group,
                   stops=fwd["stops"], **host)

    def _read(self, i: int, seen, out, tokens: int):
        """(index, weights, logits or None) of router slot i, from what its hooks saw this forward."""
        r = self.routers[i]
        if self._from_experts:
            args, kwargs = seen
            index, weights = experts_inputs(args, kwargs, self._ex_args, tokens=tokens, path=r.experts_path)
        else:
            index, weights = router_record(out, top_k=self.top_k, tokens=tokens, num_experts=self.num_experts,
                                           path=r.path)
        logits = None
        if self.logits or self.scores:
            logits = router_logits(out, self.adapter.logits_at, tokens=tokens, num_experts=self.num_experts,
                                   path=r.logits_path or r.path)
        return index, weights, logits

    def _cache_key(self, cache) -> int | None:
        if cache is None:
            return None
        try:
            key = self._cache_keys.get(cache)
            if key is None:
                self._next_key += 1
                key = self._cache_keys[cache] = self._next_key
                self._cache_state[key] = None
            return key
        except TypeError:  # not weak-referenceable: fall back to identity for this call only
            return id(cache)

    def _reordered(self, key: int, cache, cache_len: int) -> bool:
        """Were the cache's rows replaced since we last saw it, at the same length? (beam search's index_select)"""
        ref = self._cache_state.get(key)
        group = self._tracker.groups.get(key)
        keys = _first_layer_keys(cache)
        if ref is None or keys is None or group is None or cache_len != group.end:
            return False  # unfamiliar, cropped or rewound caches are not reorders
        return ref() is not keys

    # ---------------------------------------------------------- assembling
    def _to_trace(self, records: list[dict]) -> RoutingTrace:
        L, k = len(self.routers), self.top_k
        if records:
            cat = {key: np.concatenate([r[key] for r in records]) for key in records[0] if key != "columns"}
        else:
            cat = {
                "experts": np.zeros((0, L, k), expert_dtype(self.num_experts)),
                "weights": np.zeros((0, L, k), np.float32),
                "sequence": np.zeros(0, np.int64), "position": np.zeros(0, np.int64),
                "token_id": np.zeros(0, np.int64), "step": np.zeros(0, np.int32),
            }
            if self.logits:
                cat["logits"] = np.zeros((0, L, self.num_experts), np.float32)
            if self.scores:
                cat["scores"] = np.zeros((0, L, self.num_experts), np.float32)
        parts = [_Cols(len(r["sequence"]), r["columns"]) for r in records]
        return RoutingTrace(
            experts=cat["experts"], weights=cat["weights"], num_experts=self.num_experts,
            sequence=cat["sequence"], position=cat["position"], token_id=cat["token_id"], step=cat["step"],
            logits=cat.get("logits"), layer_ids=np.array([r.layer for r in self.routers]),
            meta=self._meta(), columns=_union_columns(parts) if parts else {}, scores=cat.get("scores"),
        )

    def _finish(self):
        sink, self._sink = self._sink, None
        if self.path is not None:
            sink.close()
            if self.retain and sink.parts:
                from .store import load_trace

                _fill(self.trace, load_trace(self.path))
            return
        result = sink.close()
        if self.retain:
            _fill(self.trace, result)

    def _shard_id(self) -> str:
        return str(os.environ.get("RANK", self.user_meta.get("shard", 0)))

    def _meta(self) -> dict:
        if self._meta_cache is None:
            self._meta_cache = _build_meta(self)
            if self.scores:   # what the recorded scores are, and how the experts are chosen from them
                self._meta_cache.update(self._scoring.meta(self.top_k))
        return dict(self._meta_cache)



