"""Routing from serving engines: vLLM's and SGLang's routed experts as a RoutingTrace.

    >>> import base64, numpy as np
    >>> from moelab.engines import from_sglang
    >>> routes = np.array([[[0, 1]], [[2, 3]]], np.int32)        # prompt [5, 6] + output [7]: 2 routed tokens
    >>> resp = {"output_ids": [7], "meta_info": {"routed_experts": base64.b64encode(routes.tobytes()).decode()}}
    >>> t = from_sglang([resp], prompt_ids=[[5, 6]], num_layers=1, top_k=2, num_experts=4)
    >>> t.token_id.tolist(), t.columns["next_token_id"].tolist(), t.experts[:, 0].tolist()
    ([5, 6], [6, 7], [[0, 1], [2, 3]])

Documented formats (read from the engines' sources; quoted as of late 2025)
---------------------------------------------------------------------------
vLLM   `LLM(..., enable_return_routed_experts=True)` (engine arg of the same name).
       Each `CompletionOutput.routed_experts` is an `np.ndarray` shaped
       `[seq_len, layer_num, topk]` (vllm/outputs.py); the capturer reads
       `request.num_tokens - 1` slots (vllm routed_experts_capturer), i.e. one
       route per prompt and output token except the last generated token, which
       is never fed back through the model. `RequestOutput.num_cached_tokens`
       counts the prompt's prefix-cache hits. `layer_num` is the model's
       `num_hidden_layers`; a layer without MoE has no route.
SGLang `--enable-return-routed-experts` on the server and `"return_routed_experts":
       True` per request. `meta_info["routed_experts"]` is a base64 string of
       int32 values, decoded as `np.frombuffer(b64decode(s), np.int32).reshape(-1,
       num_layers, top_k)` (sglang docs "R3 usage"; sglang-jax
       docs/features/return_routed_experts.md: "ordered by token, layer, and top-k
       slot"; `-1` is the placeholder for layers without routed experts). The
       host buffer is read for `seqlen - 1` tokens (routed_experts_capturer.py,
       `req_to_token[req_pool_idx][: seqlen - 1]`). `meta_info["cached_tokens"]`
       counts prefix-cache hits.

What moelab does with them
--------------------------
* one sequence per request (per completion with n > 1), token ids prompt + output;
  rows are the routed tokens, `position` their index in prompt + output, `step` 0
  for prompt tokens and i for the token fed at the i-th decode step;
* the last generated token has no route: it is never a row, but it is every
  row's `next_token_id` (a column) where it follows;
* prefix-cached tokens: when the engine returns fewer routes than tokens - 1 by
  exactly the cached count, the cached prompt prefix has no routes. Those tokens
  are not rows (never invented); the rows start at position `cached` and the
  column `prefix_cached` holds the request's cached count (0 when complete), so
  the gap is visible and repeat rates never pair across it;
* non-MoE layers: layers that are -1 for every token are dropped and `layer_ids`
  keeps the decoder-layer index of the others (or pass `moe_layers=`); a -1
  anywhere else is an error naming the request, token and layer.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import numpy as np

from .routing_trace import RoutingTrace, TraceMismatchError, expert_dtype

__all__ = ["EngineRequest", "import_routing", "from_vllm", "from_sglang", "EngineFormatError"]


class EngineFormatError(TraceMismatchError):
    """An engine's routed-experts output does not fit its token ids or the other requests."""


@dataclass
class EngineRequest:
    prompt_ids: list                    # (prompt,) token ids sent
    output_ids: list                    # (output,) token ids generated
    experts: np.ndarray                 # (routed, layers, k) int: the engine's routes, -1 = no route
    cached_tokens: int = 0              # prompt tokens served from the prefix cache
    request_id: str | None = None
    meta: dict = field(default_factory=dict)


def _name(i: int, r: EngineRequest) -> str:
    return f"request {i}" + (f" ({r.request_id!r})" if r.request_id is not None else "")


def import_routing(requests, *, num_experts: int, moe_layers=None, format: str = "arrays", meta: dict | None = None,
                   **kw) -> RoutingTrace:
    """Per-request engine routes -> one RoutingTrace (rules in the module docstring).

    `format` is "arrays" (a list of EngineRequest), "vllm" (see from_vllm) or
    "sglang" (see from_sglang; pass prompt_ids=, num_layers=, top_k=).
    """
    if format == "vllm":
        return from_vllm(requests, num_experts=num_experts, moe_layers=moe_layers, meta=meta)
    if format == "sglang":
        return from_sglang(requests, num_experts=num_experts, moe_layers=moe_layers, meta=meta, **kw)
    if format != "arrays":
        raise ValueError(f"format={format!r} is not known: use 'vllm', 'sglang' or 'arrays' (EngineRequest list)")
    requests = list(requests)
    if not requests:
        raise EngineFormatError("no requests to import: pass a non-empty list")
    shape0 = None
    rows = []
    for i, r in enumerate(requests):
        ex = np.asarray(r.experts)
        if ex.ndim != 3:
            raise EngineFormatError(f"{_name(i, r)}: routed experts must be (tokens, layers, top_k); got shape {ex.shape}")
        if shape0 is None:
            shape0 = (i, ex.shape[1:])
        elif ex.shape[1:] != shape0[1]:
            raise EngineFormatError(
                f"{_name(i, r)} has routes for {ex.shape[1]} layers x top_k={ex.shape[2]} but request {shape0[0]} has "
                f"{shape0[1][0]} layers x top_k={shape0[1][1]}: mixed top_k or layer counts; import one model's "
                "requests at a time")
        tokens = np.asarray([*r.prompt_ids, *r.output_ids], np.int64)
        full, c = len(tokens) - 1, int(r.cached_tokens or 0)
        if ex.shape[0] == full:
            start = 0
        elif c and ex.shape[0] == full - c:
            start = c
        else:
            also = f" or {full - c} (without its {c} prefix-cached tokens)" if c else ""
            raise EngineFormatError(
                f"{_name(i, r)}: the engine returned routes for {ex.shape[0]} tokens, but its {len(r.prompt_ids)} prompt "
                f"+ {len(r.output_ids)} output token ids need {full} (all but the last generated token){also}. "
                "Pass the prompt and output ids of this same request.")
        rows.append((i, r, ex, tokens, start))
    Lall, k = shape0[1]
    if moe_layers is None:
        allneg = np.ones(Lall, bool)
        for _, _, ex, _, _ in rows:
            allneg &= (ex < 0).all(axis=(0, 2)) if len(ex) else True
        keep = np.flatnonzero(~allneg)
    else:
        keep = np.asarray(moe_layers, np.int64)
        if keep.size and (keep.min() < 0 or keep.max() >= Lall):
            raise EngineFormatError(f"moe_layers={keep.tolist()} must lie in [0, {Lall}) (the engine's layer count)")
    if keep.size == 0:
        raise EngineFormatError(f"every layer's routes are -1 in all {len(rows)} requests: no MoE layer to import")
    cols = {n: [] for n in ("experts", "sequence", "position", "token_id", "step", "next_token_id", "prefix_cached")}
    for i, r, ex, tokens, start in rows:
        ex = ex[:, keep, :]
        bad = np.argwhere((ex < 0) | (ex >= num_experts))
        if len(bad):
            t, l, s = bad[0]
            raise EngineFormatError(
                f"{_name(i, r)}: token {start + t}, layer {int(keep[l])}, slot {s} has expert id {int(ex[t, l, s])}, "
                f"outside [0, {num_experts}) in a MoE layer (-1 is only allowed for whole non-MoE layers; "
                "check num_experts or pass moe_layers=)")
        n = len(ex)
        pos = start + np.arange(n, dtype=np.int64)
        cols["experts"].append(ex.astype(expert_dtype(num_experts)))
        cols["sequence"].append(np.full(n, i, np.int64))
        cols["position"].append(pos)
        cols["token_id"].append(tokens[pos])
        cols["step"].append(np.maximum(pos - len(r.prompt_ids) + 1, 0).astype(np.int32))
        cols["next_token_id"].append(tokens[pos + 1])
        cols["prefix_cached"].append(np.full(n, start, np.int32))
    cat = {kk: np.concatenate(v) for kk, v in cols.items()}
    return RoutingTrace.from_arrays(
        cat["experts"].reshape(-1, len(keep), k), num_experts=num_experts, sequence=cat["sequence"],
        position=cat["position"], token_id=cat["token_id"], step=cat["step"], layer_ids=keep,
        meta=dict(meta or {}, source="engine"), next_token_id=cat["next_token_id"],
        prefix_cached=cat["prefix_cached"])


def _get(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def from_vllm(outputs, *, num_experts: int, moe_layers=None, meta: dict | None = None) -> RoutingTrace:
    """vLLM `RequestOutput`s (or dicts with the same fields) -> RoutingTrace.

        >>> import numpy as np
        >>> out = {"prompt_token_ids": [1, 2, 3], "num_cached_tokens": 0,
        ...        "outputs": [{"token_ids": [4, 5], "routed_experts": np.zeros((4, 2, 1), np.int32)}]}
        >>> from_vllm([out], num_experts=8).experts.shape              # 3 + 2 - 1 routed tokens
        (4, 2, 1)

    Reads `prompt_token_ids`, `num_cached_tokens` and, per completion in
    `outputs`, `token_ids` and `routed_experts` ([seq_len, layer_num, topk]).
    """
    reqs = []
    for o in outputs:
        comps = _get(o, "outputs") or []
        for j, c in enumerate(comps):
            ex = _get(c, "routed_experts")
            rid = _get(o, "request_id")
            if ex is None:
                raise EngineFormatError(
                    f"vLLM output {rid!r} completion {j} has no routed_experts: start vLLM with "
                    "enable_return_routed_experts=True")
            reqs.append(EngineRequest(list(_get(o, "prompt_token_ids") or []), list(_get(c, "token_ids") or []),
                                      np.asarray(ex), int(_get(o, "num_cached_tokens") or 0),
                                      rid if len(comps) == 1 or rid is None else f"{rid}/{j}"))
    return import_routing(reqs, num_experts=num_experts, moe_layers=moe_layers, meta=dict(meta or {}, engine="vllm"))


def decode_sglang_experts(b64: str, num_layers: int, top_k: int, where: str = "response") -> np.ndarray:
    """SGLang's meta_info["routed_experts"] (base64 of int32) -> (tokens, num_layers, top_k) int32."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise EngineFormatError(f"{where}: meta_info['routed_experts'] is not base64 ({e})") from None
    if len(raw) % 4:
        raise EngineFormatError(f"{where}: routed_experts holds {len(raw)} bytes, not whole int32 values")
    flat = np.frombuffer(raw, dtype="<i4")
    if flat.size % (num_layers * top_k):
        raise EngineFormatError(
            f"{where}: routed_experts holds {flat.size} int32 values, not a multiple of num_layers x top_k = "
            f"{num_layers} x {top_k}: pass the model's num_hidden_layers and num_experts_per_tok")
    return flat.reshape(-1, num_layers, top_k)


def from_sglang(responses, *, prompt_ids, num_layers: int, top_k: int, num_experts: int, moe_layers=None,
                meta: dict | None = None) -> RoutingTrace:
    """SGLang /generate (or Engine.generate) responses -> RoutingTrace.

    `responses[i]` has "output_ids" and "meta_info" with "routed_experts"
    (base64 int32) and optionally "cached_tokens" and "id"; `prompt_ids[i]` are
    the input ids sent. `num_layers`, `top_k`: the model's num_hidden_layers
    and num_experts_per_tok (the flat array carries no shape).
    """
    responses, prompt_ids = list(responses), list(prompt_ids)
    if len(responses) != len(prompt_ids):
        raise EngineFormatError(f"{len(responses)} responses but {len(prompt_ids)} prompt_ids lists: pass one per request")
    reqs = []
    for i, (r, p) in enumerate(zip(responses, prompt_ids)):
        mi = r.get("meta_info") or {}
        if "routed_experts" not in mi or mi["routed_experts"] is None:
            raise EngineFormatError(
                f"response {i}: meta_info has no routed_experts: launch SGLang with --enable-return-routed-experts "
                "and send return_routed_experts=True")
        ex = decode_sglang_experts(mi["routed_experts"], num_layers, top_k, where=f"response {i}")
        reqs.append(EngineRequest(list(p), list(r.get("output_ids") or []), ex, int(mi.get("cached_tokens") or 0),
                                  mi.get("id")))
    return import_routing(reqs, num_experts=num_experts, moe_layers=moe_layers, meta=dict(meta or {}, engine="sglang"))
