"""What an `intervene` block does per router layer: its arguments checked and turned into `LayerPlan`s.

    >>> import torch
    >>> from moelab.interventions.ops import RouterSpec
    >>> from moelab.interventions.plan import build_plans
    >>> spec = RouterSpec("mixtral", num_experts=8, top_k=2, renormalise=True, cast_weights=False)
    >>> plans, _ = build_plans(spec, [0, 1, 2], dict(ablate={1: [3]}, top_k=1))
    >>> [(p.layer, p.blocked, p.k) for p in plans.values()]
    [(0, (), 1), (1, (3,), 1), (2, (), 1)]
    >>> build_plans(spec, [0, 1, 2], dict(ablate=[8]))                       # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    InterventionError: ablate: expert 8 does not exist; this model has experts 0..7 (num_experts=8)

Everything that can be checked before the first forward is checked here, with messages that quote
the offending value; the hooks (hooks.py) only apply the plans. Masks and shift vectors are
precomputed here, once per block, so the per-forward work does not grow with the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from . import ops
from .ops import InterventionError, RouterSpec


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
    blocked: tuple[int, ...] = ()      # ablate, route around
    zeroed: tuple[int, ...] = ()       # ablate, zero
    k: int | None = None               # top-k override
    beta: float | None = None          # dynamic skipping
    bias: torch.Tensor | None = None   # (E,) added to the logits before top-k
    force: Force | None = None
    replay: bool = False
    what: list[str] = field(default_factory=list)
    shifted: torch.Tensor | None = None    # (E,) bias + -inf at blocked experts (ops.shift), precomputed
    zero_ids: torch.Tensor | None = None   # zeroed experts as a tensor, precomputed

    @property
    def reselect(self) -> bool:
        return bool(self.blocked) or self.k is not None or self.bias is not None

    @property
    def may_zero(self) -> bool:
        """Can this layer give a chosen expert weight 0 (then effective k is counted, not known)?"""
        return bool(self.zeroed) or self.beta is not None or (self.force is not None and self.force.weights is not None)

    @property
    def empty(self) -> bool:
        return not (self.reselect or self.zeroed or self.beta is not None or self.force is not None or self.replay)

    def finish(self, spec: RouterSpec, device) -> "LayerPlan":
        """Precompute the shift vector and the zero mask on the router's device."""
        self.shifted = ops.shift(spec.num_experts, self.bias, self.blocked, device)
        self.zero_ids = torch.as_tensor(self.zeroed, dtype=torch.long, device=device) if self.zeroed else None
        if self.force is not None:
            f = self.force
            self.force = Force(f.experts.to(device), None if f.weights is None else f.weights.to(device),
                               f.positions, f.token_ids)
        return self


OPERATIONS = ("ablate", "force", "top_k", "skip", "bias", "replay")


def requested(kw: dict) -> list[str]:
    """The operations an `intervene(...)` call asks for (its non-None arguments)."""
    return [f"{name}={_short(kw[name])}" for name in OPERATIONS if kw.get(name) is not None]


def build_plans(spec: RouterSpec, router_layers: list[int], kw: dict):
    """{layer: LayerPlan} for every router layer, and the replay trace (or None). Raises on bad input."""
    b = _Builder(spec, router_layers)
    mode, replay_weights = kw.get("mode", "route"), kw.get("replay_weights", "recompute")
    if mode not in ("route", "zero"):
        raise InterventionError(f"mode={mode!r}: use 'route' (route around the expert) or 'zero' (drop its output)")
    if replay_weights not in ("recompute", "trace"):
        raise InterventionError(f"replay_weights={replay_weights!r}: use 'recompute' or 'trace'")
    default = b.layers(kw.get("layers"), "layers")
    plans = {i: LayerPlan(i) for i in router_layers}
    E = spec.num_experts
    for i, ids in b.per_layer(kw.get("ablate"), default, "ablate").items():
        ids = tuple(sorted({ops.check_expert(e, spec, "ablate") for e in _as_list(ids)}))
        if mode == "route":
            plans[i].blocked = ids
            if len(ids) >= E:
                raise InterventionError(f"ablate={list(ids)} at layer {i} removes every expert; keep at least k")
        else:
            plans[i].zeroed = ids
        plans[i].what.append(f"ablate={list(ids)} ({mode})")
    for i, k in b.per_layer(kw.get("top_k"), default, "top_k").items():
        plans[i].k = ops.check_k(k, spec, E - len(plans[i].blocked))
        plans[i].what.append(f"top_k={k}")
    for p in plans.values():
        if p.blocked:
            k = p.k or spec.top_k
            ops.check_k(k, spec, E - len(p.blocked))
            cap = ops.group_capacity(spec, p.blocked)
            if cap is not None and k > cap:
                n, kept = spec.groups
                raise InterventionError(
                    f"ablate={list(p.blocked)} at layer {p.layer} with top_k={k}: the router keeps topk_group={kept} of "
                    f"n_group={n} groups, scored by their 2 best experts; with these experts gone "
                    + ("fewer than that many groups keep 2 experts" if cap == 0 else
                       f"the kept groups may hold only {cap} of the others")
                    + "; ablate fewer experts per group or lower k")
    for i, beta in b.per_layer(kw.get("skip"), default, "skip", sequence_is_per_layer=True).items():
        ops.skip(torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.long), beta, spec)  # validates beta
        plans[i].beta = float(beta)
        plans[i].what.append(f"skip beta={beta}")
    for i, vec in b.per_layer(kw.get("bias"), default, "bias").items():
        plans[i].bias = b.bias(vec, i)
        plans[i].what.append("bias")
    for i, f in b.per_layer(kw.get("force"), default, "force").items():
        plans[i].force = b.force(f, plans[i])
        plans[i].what.append(f"force={_short(plans[i].force.experts)}")
    trace = kw.get("replay")
    if trace is not None:
        b.replay(trace, default, plans, replay_weights)
    return plans, trace


class _Builder:
    def __init__(self, spec: RouterSpec, router_layers: list[int]):
        self.spec, self.router_layers = spec, list(router_layers)

    def layers(self, layers, what) -> list[int]:
        if layers is None:
            return list(self.router_layers)
        out = []
        for i in _as_list(layers):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or int(i) not in self.router_layers:
                raise InterventionError(f"{what}={layers!r}: layer {i!r} does not exist; this model has router "
                                        f"layers {sorted(self.router_layers)}")
            out.append(int(i))
        return out

    def per_layer(self, value, default, what, sequence_is_per_layer=False) -> dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {self.layers([i], f"{what} key")[0]: v for i, v in value.items()}
        if sequence_is_per_layer and isinstance(value, (list, tuple)):
            if len(value) != len(self.router_layers):
                raise InterventionError(f"{what}={list(value)!r}: a list needs one value per router layer "
                                        f"({len(self.router_layers)}), or pass a float or {{layer: value}}")
            return dict(zip(self.router_layers, value))
        return {i: value for i in default}

    def bias(self, vec, layer) -> torch.Tensor:
        t = torch.as_tensor(vec, dtype=torch.float32).detach()
        E = self.spec.num_experts
        if t.shape != (E,):
            raise InterventionError(f"bias at layer {layer} has shape {tuple(t.shape)} (value {_short(vec)}), but the "
                                    f"router has {E} experts: pass a vector of length {E}")
        return t

    def force(self, f, plan: LayerPlan) -> Force:
        spec = self.spec
        if not isinstance(f, Force):
            f = Force(experts=f)
        ex = f.experts
        t = torch.as_tensor(ex if torch.is_tensor(ex) else _as_list(ex), dtype=torch.long)
        if t.ndim not in (1, 2) or t.shape[-1] < 1:
            raise InterventionError(f"force experts={_short(ex)}: give k' ids, or a (tokens, k') tensor")
        bad = t[(t < 0) | (t >= spec.num_experts)]
        if bad.numel():
            ops.check_expert(int(bad[0]), spec, f"force experts={_short(ex)}")
        if t.shape[-1] > spec.num_experts:
            ops.check_k(t.shape[-1], spec)
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
        elif spec.sparsemixer:
            raise spec.unsupported("force without explicit weights",
                                   "sparsemixer's weights depend on its own choice; pass Force(weights=...)")
        if f.positions is not None and f.token_ids is not None:
            raise InterventionError("Force takes positions= or token_ids=, not both")
        return Force(t, w, None if f.positions is None else list(_as_list(f.positions)),
                     None if f.token_ids is None else list(_as_list(f.token_ids)))

    def replay(self, tr, default, plans, replay_weights) -> None:
        from ..routing_trace import RoutingTrace

        spec = self.spec
        if not isinstance(tr, RoutingTrace):
            raise InterventionError(f"replay={type(tr).__name__}: pass a RoutingTrace (moelab.trace / load_trace)")
        if tr.num_experts != spec.num_experts:
            raise InterventionError(f"replay trace has num_experts={tr.num_experts}, the model {spec.num_experts}")
        if tr.token_id is None or (len(tr.token_id) and int(np.min(tr.token_id)) < 0):
            raise InterventionError("replay trace has no token ids (recorded from inputs_embeds?): cannot check "
                                    "that it describes the same tokens")
        col = {int(l): j for j, l in enumerate(tr.layer_ids)}
        missing = [i for i in default if i not in col]
        if missing:
            raise InterventionError(f"replay trace has layers {list(col)}, not {missing}")
        if replay_weights == "recompute" and spec.sparsemixer:
            raise spec.unsupported("replay with recomputed weights", "sparsemixer's weights depend on its own "
                                   "choice; use replay_weights='trace'")
        for i in default:
            p = plans[i]
            if p.force is not None or p.k is not None or p.blocked:
                raise InterventionError(f"layer {i}: replay decides the routing; it cannot be combined with "
                                        f"{', '.join(p.what)} on the same layer")
            p.replay = True
            p.what.append("replay")


def _as_list(x) -> list:
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        return x.reshape(-1).tolist()
    if isinstance(x, (list, tuple, set, range)):
        return list(x)
    return [x]


def _short(x) -> str:
    """repr of `x` cut to 80 characters (tensors and arrays of more than 64 values by their shape)."""
    if torch.is_tensor(x) or isinstance(x, np.ndarray):
        n = x.numel() if torch.is_tensor(x) else x.size
        if n > 64:
            return f"<{type(x).__name__} of shape {tuple(x.shape)}>"
        x = x.tolist()
    s = repr(x)
    return s if len(s) <= 80 else s[:77] + "..."
