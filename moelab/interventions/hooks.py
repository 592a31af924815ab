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
* Per forward: one pre-hook call (token ids, padding: a few tensor ops, no host sync) and per
  changed layer one router-hook call that applies precomputed masks (plan.py). Host syncs happen
  only where the input must be read: replay (token check) and Force(positions=/token_ids=).
* Zeroed weights (ablate "zero", skip) still send the token through the expert with weight 0 in
  transformers' experts modules: the output is what the smaller routing gives, the wall time is not
  reduced. `effective_k()` counts experts with nonzero weight: what the routing implies for compute.
* Sigmoid routers (DeepSeek-V3 family) re-select with the router's own e_score_correction_bias,
  read at every forward.
* Only architectures in `ops.VERIFIED` accept operations; any other raises UnsupportedIntervention
  naming the architecture and the operation (an empty block is allowed anywhere).

See docs/interventions.md. Argument checks and per-layer plans: plan.py; references: ops.py.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from ..adapters import adapter_for, find_routers, model_config
from . import ops
from .ops import InterventionError, RouterSpec
from .plan import OPERATIONS, Force, LayerPlan, _short, build_plans, requested

__all__ = ["intervene", "Intervention", "Force", "LayerPlan"]

_HELD: "weakref.WeakKeyDictionary[nn.Module, dict[int, str]]" = weakref.WeakKeyDictionary()


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


def router_spec(model: nn.Module, operation: str = "an intervention") -> RouterSpec:
    """The RouterSpec of `model`; refuses architectures whose routing moelab has not verified."""
    adapter = adapter_for(model)
    ops.check_verified(getattr(adapter, "name", type(adapter).__name__), operation)
    return ops.spec_from_config(adapter, model_config(model))


class Intervention:
    def __init__(self, model, **kw):
        unknown = sorted(set(kw) - set(OPERATIONS) - {"layers", "mode", "replay_weights"})
        if unknown:
            raise TypeError(f"intervene() got unknown argument(s) {unknown}; it takes {', '.join(OPERATIONS)}, "
                            "layers, mode, replay_weights")
        self.model = model
        self.routers = find_routers(model)
        asked = requested(kw)
        adapter = adapter_for(model)
        arch = getattr(adapter, "name", type(adapter).__name__)
        if asked:
            ops.check_verified(arch, " and ".join(asked))
            self.spec: RouterSpec = ops.spec_from_config(adapter, model_config(model))
        else:  # an empty block changes nothing, on any architecture
            self.spec = ops.spec_from_config(adapter, model_config(model)) if arch in ops.VERIFIED else None
        self._by_layer = {r.layer: r for r in self.routers}
        if asked and self.spec.selection_bias:
            missing = [r for r in self.routers if not torch.is_tensor(getattr(r.module, "e_score_correction_bias", None))]
            if missing:
                raise ops.UnsupportedIntervention(
                    f"{arch}: {' and '.join(asked)} needs the router's selection bias, but {missing[0].path} "
                    f"({type(missing[0].module).__name__}) has no e_score_correction_bias; this transformers version "
                    "routes differently from the one moelab verified")
        plans, self.trace = build_plans(self.spec, list(self._by_layer), kw) if asked else ({}, None)
        self.mode, self.replay_weights = kw.get("mode", "route"), kw.get("replay_weights", "recompute")
        if self.trace is not None:
            self._replay_col = {int(l): j for j, l in enumerate(self.trace.layer_ids)}
            self._cursor = 0
        self.plans = {i: p.finish(self.spec, _device(self._by_layer[i].module)) for i, p in plans.items() if not p.empty}
        self._handles: list = []
        self._fwd: dict | None = None
        self._active: dict[int, torch.Tensor] = {}   # may-zero layers: nonzero weights counted per forward
        self._tokens: dict[int, int] = {}
        self._n_total = 0                             # unpadded tokens of every forward (one add per forward)
        self._width: dict[int, int] = {}              # other layers: every chosen expert counts, k is known

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
                hook = (lambda p: lambda m, a, o: self._router_hook(p, o, m))(plan)
                self._handles.append(self._by_layer[i].module.register_forward_hook(hook, prepend=True))
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
        c = self.counts()
        k = self.spec.top_k if self.spec is not None else 0
        return {r.layer: c[r.layer][0] / c[r.layer][1] if r.layer in c and c[r.layer][1] else float(k)
                for r in self.routers}

    def counts(self) -> dict[int, tuple[float, int]]:
        """Per changed layer: (experts with nonzero weight summed over tokens, unpadded tokens) so far."""
        out = {i: (float(w * self._n_total), int(self._n_total)) for i, w in self._width.items()}
        out.update({i: (float(self._active[i]), int(self._tokens[i])) for i in self._active})
        return dict(sorted(out.items()))

    # -------------------------------------------------------------- hooks
    def _pre_hook(self, module, args, kwargs):
        get = kwargs.get
        ids, mask = get("input_ids", args[0] if args else None), get("attention_mask")
        if ids is None:
            if self.trace is not None:
                raise InterventionError("replay needs input_ids (the forward got inputs_embeds): cannot check tokens")
            emb = get("inputs_embeds")
            self._n_total = self._n_total + (emb.shape[0] * emb.shape[1] if emb is not None else 0)
            self._fwd = None
            return None
        B, S = ids.shape[0], ids.shape[1]
        if mask is not None and mask.dim() != 2:
            mask = None
        fwd = {"ids": ids.reshape(-1), "mask": mask, "B": B, "S": S, "kwargs": kwargs}
        if mask is not None:
            valid = mask[:, -S:].to(ids.device).bool().reshape(-1)
            fwd["valid"], fwd["n"] = valid, valid.sum()   # tensors: no host sync per forward
        else:
            fwd["valid"], fwd["n"] = None, B * S
        self._n_total = self._n_total + fwd["n"]
        if self.trace is not None:
            self._check_replay(fwd)
        self._fwd = fwd
        return None

    def _check_replay(self, fwd) -> None:
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

    @staticmethod
    def _positions(fwd) -> torch.Tensor:
        """(B*S,) real-token positions of this forward's tokens, as the tracer counts them."""
        if "pos" not in fwd:
            ids, mask, B, S = fwd["ids"], fwd["mask"], fwd["B"], fwd["S"]
            if mask is not None:
                valid = mask[:, -S:].to(ids.device).long()
                pos = mask[:, :-S].to(ids.device).sum(1, keepdim=True) + valid.cumsum(1) - 1
            else:
                kw = fwd["kwargs"]
                cache = next((v for v in kw.values() if hasattr(v, "get_seq_length")), None)
                past = int(cache.get_seq_length()) if cache is not None else 0
                pos = past + torch.arange(S, device=ids.device).expand(B, S)
            fwd["pos"] = pos.reshape(-1)
        return fwd["pos"]

    @staticmethod
    def _valid(fwd, n: int, device) -> torch.Tensor:
        v = None if fwd is None else fwd["valid"]
        return torch.ones(n, dtype=torch.bool, device=device) if v is None else v.to(device)

    @torch.no_grad()
    def _router_hook(self, plan: LayerPlan, output, module=None):
        logits, w, idx = output
        spec, fwd = self.spec, self._fwd
        if plan.reselect:
            sel = module.e_score_correction_bias if spec.selection_bias else None   # read each forward: live buffer
            w, idx = ops.select(logits, spec, plan.k, shifted=plan.shifted, selection_bias=sel, dtype=w.dtype)
        if plan.replay:
            w, idx = self._apply_replay(plan, logits, w, idx, fwd)
        if plan.force is not None:
            w, idx = self._apply_force(plan, logits, w, idx, fwd)
        if plan.zero_ids is not None:
            w = ops.zero(w, idx, plan.zero_ids)
        if plan.beta is not None:
            w, _ = ops.skip(w, idx, plan.beta, spec)
        if plan.may_zero:                                                 # count nonzero weights, on the device
            n = w.shape[0] if fwd is None else fwd["n"]                  # unpadded tokens (int or 0-d tensor)
            act = ops.active_experts(w)                                   # (tokens,)
            act = act.sum() if fwd is None or fwd["valid"] is None else (act * fwd["valid"].to(act.device)).sum()
            self._active[plan.layer] = self._active.get(plan.layer, 0) + act
            self._tokens[plan.layer] = self._tokens.get(plan.layer, 0) + n
        else:                                                             # every chosen expert contributes: k known
            self._width[plan.layer] = idx.shape[-1]
        return logits, w, idx

    def _apply_replay(self, plan, logits, w, idx, fwd):
        j = self._replay_col[plan.layer]
        r_idx = torch.as_tensor(fwd["replay"][:, j].astype(np.int64), device=idx.device)   # (real tokens, k)
        if r_idx.shape[-1] != idx.shape[-1]:
            raise InterventionError(f"replay trace has k={r_idx.shape[-1]} but layer {plan.layer} routes "
                                    f"k={idx.shape[-1]}")
        rows = fwd["valid"]                                               # None: every token is real
        if self.replay_weights == "trace":
            r_w = torch.as_tensor(fwd["replay_w"][:, j].astype(np.float32), device=w.device).to(w.dtype)
        else:
            r_w = ops.weights_for(logits if rows is None else logits[rows.to(logits.device)], r_idx, self.spec, "replay",
                                  dtype=w.dtype)
        if rows is None:
            return r_w.to(w.dtype).contiguous(), r_idx.contiguous()
        rows = rows.to(idx.device)
        return _put(w, rows, r_w), _put(idx, rows, r_idx)

    def _apply_force(self, plan, logits, w, idx, fwd):
        f = plan.force
        T = logits.shape[0]
        if f.positions is None and f.token_ids is None:
            rows, n = None, T
        else:
            if fwd is None:
                raise InterventionError("Force(positions=/token_ids=) needs input_ids (the forward got inputs_embeds)")
            on = self._positions(fwd) if f.positions is not None else fwd["ids"]
            vals_t = torch.as_tensor(f.positions if f.positions is not None else f.token_ids, dtype=torch.long,
                                     device=on.device)
            rows = (torch.isin(on, vals_t) & self._valid(fwd, on.shape[0], on.device)).to(logits.device)
            n = int(rows.sum())
        ex = f.experts
        if ex.ndim == 1:
            ex = ex.expand(n, -1)
        elif ex.shape[0] != n:
            raise InterventionError(f"force experts has {ex.shape[0]} rows but layer {plan.layer} selects {n} tokens "
                                    "in this forward; give k' ids (broadcast) or one row per selected token")
        if f.weights is None:
            fw = ops.weights_for(logits if rows is None else logits[rows], ex, self.spec, "force", dtype=w.dtype)
        else:
            fw = f.weights.to(w.dtype)
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


def _device(module: nn.Module):
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
