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
tracer is not involved):

    x_l          the input of layer l's router: the normalised hidden state the MoE block of layer
                 l routes (for Mixtral, post_attention_layernorm's output), (tokens, hidden)
    experts      what layer l's router chose, (tokens, layers, k)
    predicted    layer l+1's router module applied to x_l after the forward pass; layer 0 has no
                 previous layer and gets -1 ("no prefetch"), (tokens, layers, k)

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


def record_lookahead(model, input_ids, attention_mask=None) -> Lookahead:
    """Run `model` once on `input_ids` (batch, seq) and return each layer's actual and lookahead-predicted
    experts (module docstring). Routers are found by `moelab.adapters.find_routers`."""
    import torch

    from ..adapters import adapter_for, find_routers, model_config
    from ..hooks import HookSet

    routers = find_routers(model)
    if len(routers) < 2:
        raise ValueError(f"a lookahead needs at least 2 MoE layers; {type(model).__name__} has {len(routers)}")
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, seq); got shape {tuple(ids.shape)}")
    E = adapter_for(model).num_experts(model_config(model))
    xs, chosen = {}, {}

    def keep_input(i):
        def fn(module, args):
            xs[i] = args[0].detach().reshape(-1, args[0].shape[-1])
        return fn

    def keep_choice(i):
        def fn(module, args, output):
            chosen[i] = output[2].detach().reshape(-1, output[2].shape[-1])
        return fn

    body = getattr(model, "model", None)
    body = model if body is None else body  # the decoder without the LM head
    dev = next(model.parameters()).device
    with torch.no_grad():
        hooks = HookSet()
        try:
            for i, r in enumerate(routers):
                hooks.forward_pre(f"{r.name}.lookahead_input", r.module, keep_input(i))
                hooks.forward(f"{r.name}.lookahead_choice", r.module, keep_choice(i))
            kw = {} if attention_mask is None else {"attention_mask": torch.as_tensor(attention_mask).to(dev)}
            body(input_ids=ids.to(dev), use_cache=False, **kw)
        finally:
            hooks.close()
        pred = [torch.full_like(chosen[0], -1)]
        for i in range(1, len(routers)):  # layer i's router on layer i-1's routed hidden state
            x = xs[i - 1].to(next(routers[i].module.parameters()).device)
            pred.append(routers[i].module(x)[2].reshape(-1, chosen[i].shape[-1]).to(chosen[i].device))
    experts = torch.stack([chosen[i] for i in range(len(routers))], 1).cpu().numpy().astype(np.int64)
    predicted = torch.stack(pred, 1).cpu().numpy().astype(np.int64)
    if attention_mask is not None:
        keep = torch.as_tensor(attention_mask).reshape(-1).bool().cpu().numpy()
        experts, predicted = experts[keep], predicted[keep]
    return Lookahead(experts, predicted, E)
