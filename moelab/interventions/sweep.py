"""The expert-ablation sweep: Δ perplexity per (domain, layer, expert), next to each expert's routing share.

    >>> import moelab
    >>> from moelab.interventions.sweep import ablation_sweep
    >>> model, tok = moelab.load_model(dtype="float32")                      # doctest: +SKIP
    >>> df = ablation_sweep(model, tok, domains=["code"], max_windows=2)     # doctest: +SKIP
    >>> df.pivot_table(index="layer", columns="expert", values="delta_ppl")  # doctest: +SKIP

Batched, per batch of windows (all domains mixed; rows are summed per domain at the end):

1. one unmodified decoder forward (no LM head) records, with pre-hooks, the hidden state and
   keyword arguments each decoder layer received, and, with router hooks, the routing (for the
   share and for which tokens an ablation touches);
2. for each ablated layer l, the hidden state entering l is repeated once per ablated expert and
   layers l..L-1 run ONCE on that stack, with a router hook at l that blocks expert e_j in copy j
   (logit -inf, or weight 0 for mode="zero"); everything before l is reused;
3. only the positions an ablation can change pass through the LM head: at the last layer the
   tokens that chose e (plus, where the router does not renormalise, every token, whose weights
   all change), before it every position from the first such token on (causal attention). The
   other positions keep the unmodified NLL, agreement 1 and KL 0 (exact, not an approximation).

`reuse_prefix=False` runs whole forwards inside `moelab.intervene` instead (the reference the tests
compare with). bench/bench_ablation_sweep.py times both.

share = fraction of the domain's top-k assignments at layer l that go to expert e (baseline routing).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..hooks import HookSet
from .hooks import intervene, router_spec
from .nexttoken import Reference, final_hidden, scored
from .score import _batches, _corpus


def _stack(model):
    from ..tracer import _decoder_stack

    stack = _decoder_stack(model)
    layers, norm = getattr(stack, "layers", None), getattr(stack, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or norm is None or head is None:
        raise TypeError(f"{type(model).__name__}: the batched sweep needs `.layers`, `.norm` and an output "
                        "embedding; pass reuse_prefix=False")
    return stack, layers, norm, head


class Prefix:
    """One unmodified decoder forward, recorded: each layer's (args, kwargs) and each router's index."""

    def __init__(self, model, routers, ids, mask):
        stack, self.layers, self.norm, self.head = _stack(model)
        self.calls, self.index = {}, {}
        with HookSet() as hooks:
            for i, layer in enumerate(self.layers):
                hooks.forward_pre(f"layers.{i}", layer, (lambda j: lambda m, a, kw: self.calls.__setitem__(
                    j, (a, dict(kw))))(i), with_kwargs=True)
            for r in routers:
                hooks.forward(r.name, r.module, (lambda j: lambda m, a, o: self.index.__setitem__(j, o[2]))(r.layer))
            self.hidden = final_hidden(model, ids, mask)              # (B, S, H), after the final norm
        self.B, self.S = ids.shape

    def run_from(self, start: int, copies: int) -> torch.Tensor:
        """Layers start..L-1 and the final norm on `copies` stacked copies of the batch: (copies*B, S, H)."""
        args, kw = self.calls[start]
        h = args[0] if args else kw["hidden_states"]
        h = h.repeat(copies, *([1] * (h.dim() - 1)))
        for j in range(start, len(self.layers)):
            a, k = self.calls[j]
            k = {n: _rep(v, self.B, copies) for n, v in k.items() if n != "hidden_states"}
            h = self.layers[j](h, *(_rep(x, self.B, copies) for x in a[1:]), **k)
            h = h[0] if isinstance(h, tuple) else h
        return self.norm(h)


def _rep(v, B: int, copies: int):
    """Repeat a batch-first tensor (or a tuple of them) `copies` times along the batch; others as they are."""
    if isinstance(v, tuple):
        return tuple(_rep(x, B, copies) for x in v)
    if torch.is_tensor(v) and v.dim() >= 2 and v.shape[0] == B and copies > 1:
        return v.repeat(copies, *([1] * (v.dim() - 1)))
    return v


def changed_positions(hit: torch.Tensor, last_layer: bool) -> torch.Tensor:
    """(..., S) bool: positions whose output can differ, given the tokens `hit` (..., S) at the layer.

    At the last layer only the hit tokens; before it, every position from the first hit on.
    """
    return hit if last_layer else hit.cumsum(-1) > 0


@torch.no_grad()
def ablation_sweep(model, tok, texts=None, *, domains=None, split: str = "heldout", layers=None, experts=None,
                   mode: str = "route", seq_len: int = 128, max_windows: int | None = 8, batch_size: int = 8,
                   reuse_prefix: bool = True, progress: bool = True) -> pd.DataFrame:
    """One row per (domain, layer, expert) ablated, plus the baseline (layer = expert = -1).

    Columns: nll, ppl, delta_ppl (vs the domain's baseline), kl, agreement, share, tokens, and
    rescored (share of the domain's positions that went through the LM head again).
    """
    from tqdm.auto import tqdm

    from ..adapters import find_routers

    spec = router_spec(model, "ablation_sweep")
    routers = find_routers(model)
    all_layers = [r.layer for r in routers]
    layers = all_layers if layers is None else list(layers)
    E = spec.num_experts
    experts = list(range(E)) if experts is None else list(experts)
    for l in layers:  # validation (errors quote the input) before any forward
        intervene(model, ablate={l: experts}, mode="zero")
    if mode not in ("route", "zero"):
        intervene(model, ablate=[0], mode=mode)
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    names = list(data)
    wins = [(d, w) for d, ws in enumerate(data.values()) for w in ws]
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = next(model.parameters()).device
    D, nE = len(names), len(experts)
    acc = {c: torch.zeros(D, 5, dtype=torch.float64) for c in [(-1, -1), *((l, e) for l in layers for e in experts)]}
    counts = np.zeros((D, len(all_layers), E))
    batches = [wins[i: i + batch_size] for i in range(0, len(wins), batch_size)]
    bar = tqdm(total=len(batches) * (1 + (len(layers) if reuse_prefix else len(layers) * nE)), desc="ablation sweep",
               unit="run", disable=not progress)
    for chunk in batches:
        (ids, mask), = _batches([w for _, w in chunk], len(chunk), pad)
        ids, mask = ids.to(device), mask.to(device)
        dom = torch.tensor([d for d, _ in chunk], device=device)
        keep, tgt = scored(ids, mask)
        row_dom = dom[:, None].expand_as(keep)[keep]                     # (N,) domain of each scored position
        pre = Prefix(model, routers, ids, mask)
        ref = Reference(pre.head, pre.hidden[:, :-1][keep], tgt)

        def add(key, nll, agree, kl, rescored):
            parts = (nll.double(), agree.double(), kl.double(), torch.ones_like(nll, dtype=torch.float64),
                     rescored.double())
            acc[key] += torch.stack([torch.bincount(row_dom, weights=p, minlength=D) for p in parts], -1).cpu()

        add((-1, -1), ref.nll, torch.ones_like(ref.top, dtype=torch.bool), torch.zeros_like(ref.nll),
            torch.ones_like(ref.nll))
        valid = mask.bool()
        for j, l in enumerate(all_layers):
            idx = pre.index[l].reshape(*ids.shape, -1)                   # (B, S, k)
            for b, d in enumerate(dom.tolist()):
                counts[d, j] += np.bincount(idx[b][valid[b]].reshape(-1).cpu().numpy(), minlength=E)
        bar.update(1)
        for l in layers:
            if reuse_prefix:
                _ablate_layer(pre, ref, keep, spec, routers, all_layers, l, experts, mode, add)
                bar.update(1)
                continue
            for e in experts:
                with intervene(model, ablate={l: [e]}, mode=mode):
                    h = final_hidden(model, ids, mask)[:, :-1][keep]
                nll, agree, kl = ref.compare(h)
                add((l, e), nll, agree, kl, torch.ones_like(nll))
                bar.update(1)
    bar.close()
    rows = []
    for (l, e), a in acc.items():
        for d, name in enumerate(names):
            s_nll, s_ag, s_kl, t, res = a[d].tolist()
            j = all_layers.index(l) if l >= 0 else None
            share = counts[d, j, e] / counts[d, j].sum() if j is not None and counts[d, j].sum() else np.nan
            rows.append({"domain": name, "layer": l, "expert": e, "tokens": int(t), "nll": s_nll / t if t else np.nan,
                         "kl": s_kl / t if t else np.nan, "agreement": s_ag / t if t else np.nan, "share": share,
                         "rescored": res / t if t else np.nan})
    df = pd.DataFrame(rows)
    df["ppl"] = np.exp(df.nll)
    base_ppl = df[df.layer < 0].set_index("domain").ppl
    df["delta_ppl"] = df.ppl - df.domain.map(base_ppl)
    return df


def _ablate_layer(pre: Prefix, ref: Reference, keep, spec, routers, all_layers, l, experts, mode, add):
    """All ablations of layer l as one stacked run of layers l..L-1; only changed positions rescored."""
    from . import ops

    nE, B, S = len(experts), pre.B, pre.S
    router = next(r for r in routers if r.layer == l)
    e_tok = torch.as_tensor(experts, device=ref.h.device).repeat_interleave(B * S)   # (nE*B*S,) expert per token

    def hook(module, args, out):
        logits, w, idx = out
        if mode == "route":
            shifted = torch.zeros(logits.shape, device=logits.device).scatter_(
                -1, e_tok[:, None].to(logits.device), float("-inf"))         # (tokens, E) per copy
            w, idx = ops.select(logits, spec, idx.shape[-1], shifted=shifted)
        else:
            w = w.masked_fill(idx == e_tok[:, None].to(idx.device), 0.0)
        return logits, w, idx

    with HookSet() as hooks:
        hooks.forward(router.name, router.module, hook, prepend=True)
        h = pre.run_from(l, nE)                                          # (nE*B, S, H)
    base_idx = pre.index[l].reshape(B, S, -1)                            # (B, S, k)
    last = l == all_layers[-1] and l == len(pre.layers) - 1
    for j, e in enumerate(experts):
        hit = (base_idx == e).any(-1)                                    # (B, S) tokens that chose e
        if mode == "route" and not spec.renormalise:
            hit = torch.ones_like(hit)                                   # every token's weights change
        changed = changed_positions(hit, last)[:, :-1][keep]             # (N,)
        hj = h[j * B:(j + 1) * B, :-1][keep]                             # (N, H)
        nll, agree, kl = ref.compare_sparse(hj, changed)
        add((l, e), nll, agree, kl, changed)
