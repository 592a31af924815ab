"""moelab.intervene: change what the routers choose inside a `with` block, through hooks only.

    >>> import moelab
    >>> model, tok = moelab.load_model()                                     # doctest: +SKIP
    >>> batch = tok(["def add(a, b):"], return_tensors="pt")                 # doctest: +SKIP
    >>> with moelab.intervene(model, ablate={1: [3]}), moelab.trace(model) as tr:   # doctest: +SKIP
    ...     model(**batch)                                                   # expert 3 of layer 1 never runs
    >>> with moelab.intervene(model, top_k=1) as iv:                         # doctest: +SKIP
    ...     model(**batch); iv.effective_k()                                 # {0: 1.0, 1: 1.0, ...}

How it works
------------
* One forward hook per changed router (`moelab.adapters.find_routers`), registered with
  `prepend=True`: it runs before any other hook on the router, so a `moelab.trace` block entered
  before or after records the routing that was actually used. It returns a new
  `(logits, weights, index)` triple (the logits are the router's own, unbiased); the experts module
  consumes weights and index as usual, with any implementation (`eager`, `grouped_mm`,
  `batched_mm`: all of them take any k width). Nothing is patched or swapped; parameters, buffers
  and config are never written. Every hook is removed in `finally`, on every exit path.
* A pre-hook on the decoder stack reads `input_ids` / `attention_mask` (padding is left out of
  `effective_k`; `Force(positions=..., token_ids=...)` and `replay` select tokens with them).
  Positions count real tokens only, like the tracer (0 = the first unpadded token).
* Operations, applied per layer in this order: `bias` and `ablate` (mode "route": logit -inf) and
  `top_k` re-select with the architecture's own rule (ops.select); `replay` or `force` replace the
  choice; `ablate` (mode "zero") zeroes the weight of a kept choice; `skip` (dynamic skipping).
* Zeroed weights (ablate "zero", skip) still send the token through the expert with weight 0 in
  transformers' experts modules: the output is what the smaller routing gives, the wall time is not
  reduced. `effective_k()` counts experts with nonzero weight: what the routing implies for compute.

See docs/interventions.md. References in moelab/intervene/ops.py.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..adapters import adapter_for, find_routers, model_config
from . import ops
from .ops import InterventionError, RouterSpec

_HELD: "weakref.WeakKeyDictionary[nn.Module, dict[int, str]]" = weakref.WeakKeyDictionary()


@dataclass
class Force:
    """Route chosen tokens to given experts.

    experts: k' expert ids for every selected token, or a (selected tokens, k') tensor.
    weights: k' weights (broadcast), a (selected tokens, k') tensor, or None = the weights the
             architecture would give those experts (softmax of the logits, renormalised as it does).
    positions / token_ids: select tokens (real-token positions, like the tracer; or input ids);
             None for both = every token.
    """

    experts: Any
    weights: Any = None
    positions: Sequence[int] | None = None
    token_ids: Sequence[int] | None = None


@dataclass
class LayerPlan:
    layer: int
    blocked: tuple[int, ...] = ()     # ablate, route around
    zeroed: tuple[int, ...] = ()      # ablate, zero
    k: int | None = None              # top-k override
    beta: float | None = None         # dynamic skipping
    bias: torch.Tensor | None = None  # (E,) added to the logits before top-k
    force: Force | None = None
    replay: bool = False
    what: list[str] = field(default_factory=list)

    @property
    def reselect(self) -> bool:
        return bool(self.blocked) or self.k is not None or self.bias is not None

    @property
    def empty(self) -> bool:
        return not (self.reselect or self.zeroed or self.beta is not None or self.force is not None or self.replay)


def intervene(model: nn.Module, *, layers=None, ablate=None, mode: str = "route", force=None, top_k=None,
              skip=None, bias=None, replay=None, replay_weights: str = "recompute") -> "Intervention":
    """A context manager that changes the routing of `model` inside the block.

    layers   which decoder layers the non-dict arguments apply to (int, list; None = every router)
    ablate   expert id(s), or {layer: ids}; `mode="route"` routes around them (logit -inf before
             top-k), `mode="zero"` keeps the choice and zeroes its weight
    force    expert id(s), a `Force`, or {layer: Force}
    top_k    int 1..E, or {layer: k}
    skip     beta of dynamic skipping (float, {layer: beta}, or one beta per router in layer order)
    bias     (E,) vector added to the logits before top-k, or {layer: vector}
    replay   a RoutingTrace of the same tokens: route by its experts; `replay_weights="recompute"`
             gives them the weights the current logits imply, `"trace"` uses the recorded weights
    """
    return Intervention(model, layers=layers, ablate=ablate, mode=mode, force=force, top_k=top_k, skip=skip,
                        bias=bias, replay=replay, replay_weights=replay_weights)


class Intervention:
    def __init__(self, model, *, layers=None, ablate=None, mode="route", force=None, top_k=None, skip=None,
                 bias=None, replay=None, replay_weights="recompute"):
        self.model = model
        cfg = model_config(model)
        self.spec: RouterSpec = ops.spec_from_config(adapter_for(model), cfg)
        self.routers = find_routers(model)
        self._by_layer = {r.layer: r for r in self.routers}
        if mode not in ("route", "zero"):
            raise InterventionError(f"mode={mode!r}: use 'route' (route around the expert) or 'zero' (drop its output)")
        if replay_weights not in ("recompute", "trace"):
            raise InterventionError(f"replay_weights={replay_weights!r}: use 'recompute' or 'trace'")
        self.mode, self.replay_weights = mode, replay_weights
        default = self._layers(layers, "layers")
        plans = {i: LayerPlan(i) for i in self._by_layer}

        for i, ids in self._per_layer(ablate, default, "ablate").items():
            ids = tuple(sorted({ops.check_expert(e, self.spec, "ablate") for e in _as_list(ids)}))
            if mode == "route":
                plans[i].blocked = ids
                if len(ids) >= self.spec.num_experts:
                    raise InterventionError(f"ablate={list(ids)} at layer {i} removes every expert; keep at least k")
            else:
                plans[i].zeroed = ids
            plans[i].what.append(f"ablate={list(ids)} ({mode})")
        for i, k in self._per_layer(top_k, default, "top_k").items():
            plans[i].k = ops.check_k(k, self.spec, self.spec.num_experts - len(plans[i].blocked))
            plans[i].what.append(f"top_k={k}")
        if plans and any(p.blocked for p in plans.values()):
            for p in plans.values():
                if p.blocked:
                    ops.check_k(p.k or self.spec.top_k, self.spec, self.spec.num_experts - len(p.blocked))
        for i, beta in self._per_layer(skip, default, "skip", sequence_is_per_layer=True).items():
            ops.skip(torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.long), beta, self.spec)  # validates beta
            plans[i].beta = float(beta)
            plans[i].what.append(f"skip beta={beta}")
        for i, vec in self._per_layer(bias, default, "bias", vector=True).items():
            plans[i].bias = self._bias(vec, i)
            plans[i].what.append("bias")
        for i, f in self._per_layer(force, default, "force").items():
            plans[i].force = self._force(f, plans[i])
            plans[i].what.append(f"force={_short(plans[i].force.experts)}")
        self.trace = None
        if replay is not None:
            self._setup_replay(replay, default, plans)
        self.plans = {i: p for i, p in plans.items() if not p.empty}
        self._handles: list = []
        self._fwd: dict | None = None
        self._active: dict[int, torch.Tensor] = {}
        self._tokens: dict[int, int] = {}

    # ------------------------------------------------------------ validation
    def _layers(self, layers, what) -> list[int]:
        if layers is None:
            return list(self._by_layer)
        out = []
        for i in _as_list(layers):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or int(i) not in self._by_layer:
                raise InterventionError(f"{what}={layers!r}: layer {i!r} does not exist; this model has router "
                                        f"layers {sorted(self._by_layer)}")
            out.append(int(i))
        return out

    def _per_layer(self, value, default, what, vector=False, sequence_is_per_layer=False) -> dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {self._layers([i], f"{what} key")[0]: v for i, v in value.items()}
        if sequence_is_per_layer and isinstance(value, (list, tuple)):
            if len(value) != len(self.routers):
                raise InterventionError(f"{what}={list(value)!r}: a list needs one value per router layer "
                                        f"({len(self.routers)}), or pass a float or {{layer: value}}")
            return {r.layer: v for r, v in zip(self.routers, value)}
        return {i: value for i in default}

    def _bias(self, vec, layer) -> torch.Tensor:
        t = torch.as_tensor(vec, dtype=torch.float32).detach()
        E = self.spec.num_experts
        if t.shape != (E,):
            raise InterventionError(f"bias at layer {layer} has shape {tuple(t.shape)} (value {_short(vec)}), but the "
                                    f"router has {E} experts: pass a vector of length {E}")
        return t.to(next(self._by_layer[layer].module.parameters()).device)

    def _force(self, f, plan: LayerPlan) -> Force:
        if not isinstance(f, Force):
            f = Force(experts=f)
        ex = f.experts
        t = torch.as_tensor(ex if torch.is_tensor(ex) else _as_list(ex), dtype=torch.long)
        if t.ndim not in (1, 2) or t.shape[-1] < 1:
            raise InterventionError(f"force experts={_short(ex)}: give k' ids, or a (tokens, k') tensor")
        bad = t[(t < 0) | (t >= self.spec.num_experts)]
        if bad.numel():
            ops.check_expert(int(bad[0]), self.spec, f"force experts={_short(ex)}")
        if t.shape[-1] > self.spec.num_experts:
            ops.check_k(t.shape[-1], self.spec)
        hit = sorted(set(t.flatten().tolist()) & set(plan.blocked))
        if hit:
            raise InterventionError(f"force experts={_short(ex)} at layer {plan.layer} includes ablated expert(s) {hit}")
        if plan.k is not None:
            raise InterventionError(f"layer {plan.layer}: force and top_k={plan.k} both set k; use one of them")
        w = None
        if f.weights is not None:
            w = torch.as_tensor(f.weights, dtype=torch.float32)
            if w.shape[-1] != t.shape[-1] or w.ndim not in (1, 2):
                raise InterventionError(f"force weights={_short(f.weights)} do not match experts={_short(ex)} "
                                        f"({t.shape[-1]} per token)")
        elif self.spec.sparsemixer:
            raise self.spec.unsupported("force without explicit weights",
                                        "sparsemixer's weights depend on its own choice; pass Force(weights=...)")
        if f.positions is not None and f.token_ids is not None:
            raise InterventionError("Force takes positions= or token_ids=, not both")
        return Force(t, w, None if f.positions is None else list(_as_list(f.positions)),
                     None if f.token_ids is None else list(_as_list(f.token_ids)))

    def _setup_replay(self, tr, default, plans):
        from ..routing_trace import RoutingTrace

        if not isinstance(tr, RoutingTrace):
            raise InterventionError(f"replay={type(tr).__name__}: pass a RoutingTrace (moelab.trace / load_trace)")
        if tr.num_experts != self.spec.num_experts:
            raise InterventionError(f"replay trace has num_experts={tr.num_experts}, the model {self.spec.num_experts}")
        if tr.token_id is None or (len(tr.token_id) and int(np.min(tr.token_id)) < 0):
            raise InterventionError("replay trace has no token ids (recorded from inputs_embeds?): cannot check "
                                    "that it describes the same tokens")
        col = {int(l): j for j, l in enumerate(tr.layer_ids)}
        missing = [i for i in default if i not in col]
        if missing:
            raise InterventionError(f"replay trace has layers {list(col)}, not {missing}")
        if self.replay_weights == "recompute" and self.spec.sparsemixer:
            raise self.spec.unsupported("replay with recomputed weights", "sparsemixer's weights depend on its own "
                                        "choice; use replay_weights='trace'")
        for i in default:
            p = plans[i]
            if p.force is not None or p.k is not None or p.blocked:
                raise InterventionError(f"layer {i}: replay decides the routing; it cannot be combined with "
                                        f"{', '.join(p.what)} on the same layer")
            p.replay = True
            p.what.append("replay")
        self.trace, self._replay_col, self._cursor = tr, col, 0

    # ---------------------------------------------------------- context
    def __enter__(self) -> "Intervention":
        held = _HELD.setdefault(self.model, {})
        clash = {i: held[i] for i in self.plans if i in held}
        if clash:
            i, other = next(iter(clash.items()))
            raise InterventionError(f"nested intervene blocks conflict on layer {i}: the enclosing block already does "
                                    f"{other}, this one does {', '.join(self.plans[i].what)}; change each layer in one block")
        try:
            if self.plans:  # token ids, padding and positions of each forward (cheap: no host copy)
                from ..tracer import _decoder_stack

                self._handles.append(_decoder_stack(self.model).register_forward_pre_hook(
                    self._pre_hook, with_kwargs=True, prepend=True))
            for i, plan in self.plans.items():
                r = self._by_layer[i]
                hook = (lambda p: lambda m, a, o: self._router_hook(p, o))(plan)
                self._handles.append(r.module.register_forward_hook(hook, prepend=True))
            for i, plan in self.plans.items():
                held[i] = ", ".join(plan.what)
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._remove()
        return False

    def _remove(self):
        while self._handles:
            self._handles.pop().remove()
        held = _HELD.get(self.model, {})
        for i, plan in self.plans.items():
            if held.get(i) == ", ".join(plan.what):
                del held[i]
        self._fwd = None

    def effective_k(self) -> dict[int, float]:
        """Per router layer, the mean number of experts with nonzero weight per (unpadded) token so far."""
        out = {}
        for r in self.routers:
            n = self._tokens.get(r.layer, 0)
            out[r.layer] = float(self._active[r.layer]) / int(n) if int(n) else float(self.spec.top_k)
        return out

    def counts(self) -> dict[int, tuple[float, int]]:
        """Per changed layer: (experts with nonzero weight summed over tokens, unpadded tokens) so far."""
        return {i: (float(self._active[i]), int(self._tokens[i])) for i in self._active}

    # -------------------------------------------------------------- hooks
    def _pre_hook(self, module, args, kwargs):
        get = kwargs.get
        ids, mask = get("input_ids", args[0] if args else None), get("attention_mask")
        if ids is None:
            if self.trace is not None:
                raise InterventionError("replay needs input_ids (the forward got inputs_embeds): cannot check tokens")
            self._fwd = None
            return None
        B, S = ids.shape[0], ids.shape[1]
        if mask is not None and mask.dim() != 2:
            mask = None
        fwd = {"ids": ids.reshape(-1), "mask": mask, "B": B, "S": S, "kwargs": kwargs}
        if mask is not None:
            valid = mask[:, -S:].to(ids.device).bool()
            fwd["valid"], fwd["n"] = valid.reshape(-1), valid.sum()   # tensors: no host sync per forward
        else:
            fwd["valid"], fwd["n"] = None, B * S
        if self.trace is not None:
            real = (fwd["ids"] if fwd["valid"] is None else fwd["ids"][fwd["valid"]]).cpu().numpy()
            a, b = self._cursor, self._cursor + len(real)
            want = self.trace.token_id[a:b]
            if len(want) != len(real) or not np.array_equal(want, real):
                n = min(len(want), len(real))
                bad = int(np.argmax(want[:n] != real[:n])) if n and not np.array_equal(want[:n], real[:n]) else n
                raise InterventionError(
                    f"replay: the trace does not describe these tokens: trace rows {a}..{b - 1} have token ids "
                    f"{_short(want.tolist())}, this forward's unpadded tokens are {_short(real.tolist())} (first "
                    f"difference at token {bad}); replay a trace recorded on the same input, in the same order")
            fwd["replay"] = self.trace.experts[a:b]  # (tokens, layers, k)
            fwd["replay_w"] = self.trace.weights[a:b]
            self._cursor = b
        self._fwd = fwd
        return None

    @staticmethod
    def _positions(fwd) -> torch.Tensor:
        """(B*S,) real-token positions of this forward's tokens, as the tracer counts them."""
        if "pos" not in fwd:
            ids, mask, B, S = fwd["ids"], fwd["mask"], fwd["B"], fwd["S"]
            if mask is not None:
                valid = mask[:, -S:].to(ids.device).long()
                pos = mask[:, :-S].to(ids.device).sum(1, keepdim=True) + valid.cumsum(1) - 1
            else:
                cache = fwd["kwargs"].get("past_key_values")
                past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
                pos = past + torch.arange(S, device=ids.device).expand(B, S)
            fwd["pos"] = pos.reshape(-1)
        return fwd["pos"]

    @staticmethod
    def _valid(fwd, n: int, device) -> torch.Tensor:
        v = None if fwd is None else fwd["valid"]
        return torch.ones(n, dtype=torch.bool, device=device) if v is None else v.to(device)

    @torch.no_grad()
    def _router_hook(self, plan: LayerPlan, output):
        logits, w, idx = output
        spec = self.spec
        fwd = self._fwd
        if plan.reselect:
            bias = None if plan.bias is None else plan.bias.to(logits.device)
            w, idx = ops.select(logits, spec, plan.k, bias=bias, blocked=plan.blocked)
        if plan.replay:
            rows = self._valid(fwd, idx.shape[0], idx.device)
            j = self._replay_col[plan.layer]
            r_idx = torch.as_tensor(fwd["replay"][:, j].astype(np.int64), device=idx.device)
            if r_idx.shape[-1] != idx.shape[-1]:
                raise InterventionError(f"replay trace has k={r_idx.shape[-1]} but layer {plan.layer} routes "
                                        f"k={idx.shape[-1]}")
            if self.replay_weights == "trace":
                r_w = torch.as_tensor(fwd["replay_w"][:, j].astype(np.float32), device=w.device).to(w.dtype)
            else:
                r_w = ops.weights_for(logits[rows], r_idx, spec, "replay")
            idx, w = _put(idx, rows, r_idx), _put(w, rows, r_w)
        if plan.force is not None:
            w, idx = self._apply_force(plan, logits, w, idx, fwd)
        if plan.zeroed:
            w = ops.zero(w, idx, plan.zeroed)
        if plan.beta is not None:
            w, _ = ops.skip(w, idx, plan.beta, spec)
        valid = None if fwd is None else fwd["valid"]
        act = ops.active_experts(w)                                       # (tokens,) on the device, no sync
        act = act.sum() if valid is None else (act * valid.to(act.device)).sum()
        self._active[plan.layer] = self._active.get(plan.layer, 0) + act
        self._tokens[plan.layer] = self._tokens.get(plan.layer, 0) + (w.shape[0] if fwd is None else fwd["n"])
        return logits, w, idx

    def _apply_force(self, plan, logits, w, idx, fwd):
        f = plan.force
        T = logits.shape[0]
        if f.positions is None and f.token_ids is None:
            rows = None
            n = T
        else:
            if fwd is None:
                raise InterventionError("Force(positions=/token_ids=) needs input_ids (the forward got inputs_embeds)")
            on = self._positions(fwd) if f.positions is not None else fwd["ids"]
            vals_t = torch.as_tensor(f.positions if f.positions is not None else f.token_ids, dtype=torch.long,
                                     device=on.device)
            rows = (torch.isin(on, vals_t) & self._valid(fwd, on.shape[0], on.device)).to(logits.device)
            n = int(rows.sum())
        ex = f.experts.to(logits.device)
        if ex.ndim == 1:
            ex = ex.expand(n, -1)
        elif ex.shape[0] != n:
            raise InterventionError(f"force experts has {ex.shape[0]} rows but layer {plan.layer} selects {n} tokens "
                                    "in this forward; give k' ids (broadcast) or one row per selected token")
        if f.weights is None:
            fw = ops.weights_for(logits if rows is None else logits[rows], ex, self.spec, "force")
        else:
            fw = f.weights.to(w.device, w.dtype)
            fw = fw.expand(n, -1) if fw.ndim == 1 else fw
            if fw.shape[0] != n:
                raise InterventionError(f"force weights has {fw.shape[0]} rows, the layer selects {n} tokens")
        if rows is None:
            return fw.contiguous(), ex.contiguous()
        if ex.shape[-1] != idx.shape[-1]:
            raise InterventionError(f"force with positions/token_ids must keep k={idx.shape[-1]} per token "
                                    f"(got {ex.shape[-1]}): the other tokens still route top-{idx.shape[-1]}")
        return _put(w, rows, fw), _put(idx, rows, ex)


def _put(base: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    out = base.clone()
    out[rows] = values.to(out.dtype)
    return out


def _as_list(x) -> list:
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        return x.reshape(-1).tolist()
    if isinstance(x, (list, tuple, set, range)):
        return list(x)
    return [x]


def _short(x, n: int = 8) -> str:
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        x = x.tolist()
    s = repr(x)
    return s if len(s) <= 80 else s[:77] + "..."
