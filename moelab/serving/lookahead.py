"""
The lookahead prefetcher: apply layer l+1's router to layer l's hidden state to guess layer l+1's
experts before layer l has finished (Eliseev & Mazur 2023, arXiv:2312.17238, §3.2 "speculative
expert loading"; github.com/dvmazur/mixtral-offloading).

    >>> import moelab                                                       # doctest: +SKIP
    >>> from moelab.serving import record_lookahead, simulate_cache         # doctest: +SKIP
    >>> model, tok = moelab.load_model()                                    # doctest: +SKIP
    >>> la = record_lookahead(model, tok("The cat sat on the mat", return_tensors="pt").input_ids)  # doctest: +SKIP
    >>> la.experts.shape == la.predicted.shape                              # doctest: +SKIP
    True
    >>> simulate_cache(la.experts, 4, "prefetch", num_experts=8, predicted=la.predicted)  # doctest: +SKIP

What is recorded, with this module's own hooks (`moelab.hooks.HookSet`, removed in `finally`; the
tracer is not involved, but its readers are: `moelab.arch.record`, through the model's adapter):

    x_l          the input of layer l's router: the normalised hidden state the MoE block of layer
                 l routes (for Mixtral, post_attention_layernorm's output), (tokens, hidden)
    experts      what layer l's router chose, (tokens, layers, k)
    predicted    layer l+1's router module applied to x_l after the forward pass (its other call
                 arguments, if any, are its own), read by `router_choice`; layer 0 has no previous
                 layer and gets -1 ("no prefetch"), (tokens, layers, k). A router whose return
                 moelab cannot read raises RecordError naming its class and what it returned.

x_l is available as soon as layer l's experts start, so the copy of layer l+1's guessed experts
can overlap layer l's expert compute. The forward pass runs the decoder only (no LM head: no
logits nobody reads), without a KV cache. Padding tokens (attention_mask == 0) are dropped; the
token order is batch-major, like a RoutingTrace's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Lookahead:
    """What `record_lookahead` found: actual and predicted expert ids, (tokens, layers, k) int64."""

    experts: np.ndarray
    predicted: np.ndarray
    num_experts: int

    def accuracy(self) -> np.ndarray:
        """(layers,) share of each layer's chosen experts that the lookahead predicted (layer 0: NaN)."""
        hit = (self.predicted[:, :, :, None] == self.experts[:, :, None, :]).any(2)  # (tokens, layers, k)
        acc = hit.mean(axis=(0, 2)) if len(hit) else np.full(self.experts.shape[1], np.nan)
        acc[0] = np.nan
        return acc


def router_choice(adapter, output, *, top_k: int, tokens: int, num_experts: int, path: str, router_class: str):
    """(tokens, k) expert ids a router chose, read from its return the way `adapter` (moelab.arch) reads it.

    record="router" adapters (Llama 4: (scores, logits)) go through the tracer's own reader
    (`moelab.arch.record.router_record`); the others return (logits, weights, index) in transformers
    5.x and give their index. Anything else raises RecordError naming the router class and what it
    returned, never an IndexError or a wrong guess."""
    import torch

    from ..arch.record import RecordError, describe, router_record

    if adapter.record == "router":
        try:
            return router_record(output, top_k=top_k, tokens=tokens, num_experts=num_experts, path=path)[0]
        except RecordError as e:
            raise RecordError(f"the lookahead cannot read the experts chosen by router {router_class} "
                              f"(adapter {adapter.name!r}): {e}") from None
    index = output[2] if isinstance(output, tuple) and len(output) > 2 else None
    if not (torch.is_tensor(index) and not index.is_floating_point() and tuple(index.shape) == (tokens, top_k)):
        raise RecordError(
            f"the lookahead cannot read the experts chosen by router {path!r} ({router_class}, adapter "
            f"{adapter.name!r}): it returned {describe(output)}, and moelab reads an integer ({tokens}, {top_k}) "
            "index at position 2 (transformers 5.x routers return (logits, weights, index)). Update the adapter in "
            "moelab/arch/registry.py, or trace the model (moelab.trace) and use predict_from_previous_layer instead")
    return index


def record_lookahead(model, input_ids, attention_mask=None) -> Lookahead:
    """Run `model` once on `input_ids` (batch, seq) and return each layer's actual and lookahead-predicted
    experts (module docstring). Routers are found by `moelab.arch.find_routers`; the actual choice is read
    as `moelab.trace` reads it (the experts module's inputs, or the router's return for record="router"
    adapters such as Llama 4), the prediction by `router_choice`."""
    import torch

    from ..arch import adapter_for, find_routers, model_config
    from ..arch.base import experts_arguments
    from ..arch.record import experts_inputs, router_record
    from ..hooks import HookSet
    from ..trace_support import _top_k

    adapter, config = adapter_for(model), model_config(model)
    routers = find_routers(model)
    if len(routers) < 2:
        raise ValueError(f"a lookahead needs at least 2 MoE layers; {type(model).__name__} has {len(routers)}")
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, seq); got shape {tuple(ids.shape)}")
    E, k, tokens = adapter.num_experts(config), _top_k(routers[0], adapter, config), ids.numel()
    from_experts = adapter.record == "experts"
    ex_args = experts_arguments(routers[0].experts) if from_experts else None
    calls, chosen = {}, {}  # layer slot -> the router's (args, kwargs); -> (tokens, k) chosen ids

    def keep_call(i):
        def fn(module, args, kwargs):
            calls[i] = (tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs))
        return fn

    def keep_experts_input(i, r):
        def fn(module, args, kwargs):
            chosen[i] = experts_inputs(args, kwargs, ex_args, tokens=tokens, path=r.experts_path)[0].detach().clone()
        return fn

    def keep_router_return(i, r):
        def fn(module, args, output):
            chosen[i] = router_record(output, top_k=k, tokens=tokens, num_experts=E, path=r.path)[0].detach()
        return fn

    body = getattr(model, "model", None)
    body = model if body is None else body  # the decoder without the LM head
    dev = next(model.parameters()).device
    with torch.no_grad():
        hooks = HookSet()
        try:
            for i, r in enumerate(routers):
                hooks.forward_pre(f"{r.name}.lookahead_input", r.module, keep_call(i), with_kwargs=True)
                if from_experts:
                    hooks.forward_pre(f"{r.name}.lookahead_choice", r.experts, keep_experts_input(i, r),
                                      with_kwargs=True)
                else:
                    hooks.forward(f"{r.name}.lookahead_choice", r.module, keep_router_return(i, r))
            kw = {} if attention_mask is None else {"attention_mask": torch.as_tensor(attention_mask).to(dev)}
            body(input_ids=ids.to(dev), use_cache=False, **kw)
        finally:
            hooks.close()
        pred = [torch.full_like(chosen[0], -1)]
        for i in range(1, len(routers)):  # layer i's router on layer i-1's routed hidden state (its other args: its own)
            r, (args, kwargs) = routers[i], calls[i]
            x = calls[i - 1][0][0] if calls[i - 1][0] else None
            if not (torch.is_tensor(x) and args and torch.is_tensor(args[0]) and x.shape == args[0].shape):
                raise ValueError(f"the lookahead feeds router {r.path!r} ({type(r.module).__name__}) the input of the "
                                 f"router before it, but their inputs differ: {_describe_call(calls[i - 1])} vs "
                                 f"{_describe_call(calls[i])}")
            out = r.module(x.to(args[0].device), *args[1:], **kwargs)
            got = router_choice(adapter, out, top_k=k, tokens=tokens, num_experts=E, path=r.path,
                                router_class=type(r.module).__name__)
            pred.append(got.reshape(-1, chosen[i].shape[-1]).to(chosen[i].device, chosen[i].dtype))
    experts = torch.stack([chosen[i] for i in range(len(routers))], 1).cpu().numpy().astype(np.int64)
    predicted = torch.stack(pred, 1).cpu().numpy().astype(np.int64)
    if attention_mask is not None:
        keep = torch.as_tensor(attention_mask).reshape(-1).bool().cpu().numpy()
        experts, predicted = experts[keep], predicted[keep]
    return Lookahead(experts, predicted, E)


def _describe_call(call) -> str:
    from ..arch.record import describe

    args, kwargs = call
    return describe(tuple(args)) + (f" and keywords {sorted(kwargs)}" if kwargs else "")
