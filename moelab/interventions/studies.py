"""Two studies of notebook 07: steering by router bias, and how much of a precision gap is routing.

    >>> import moelab
    >>> from moelab.interventions.studies import bias_sweep
    >>> model, tok = moelab.load_model(dtype="float32")                          # doctest: +SKIP
    >>> bias_sweep(model, tok, layer=2, expert=5, biases=[0, 2, 4], domains=["code"])   # doctest: +SKIP

bias_sweep   one expert's logit at one layer raised by each bias in turn: its traffic share there
             and what it costs (Δ ppl, KL, agreement). Batched like the ablation sweep (sweep.py):
             the prefix before the layer runs once, all biases run as one stack of copies.
replay_gap   a reference model (fp32) and the same weights in lower precision (bf16): the low
             precision model with the reference's routing replayed (`intervene(replay=...)`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..hooks import HookSet
from . import ops
from .hooks import intervene, router_spec
from .nexttoken import Reference, final_hidden, nll_of, scored
from .score import _batches, _corpus
from .sweep import Prefix


@torch.no_grad()
def bias_sweep(model, tok, texts=None, *, layer: int, expert: int, biases=(0.0, 0.5, 1.0, 2.0, 4.0), domains=None,
               split: str = "heldout", seq_len: int = 128, max_windows: int | None = 4, batch_size: int = 8,
               progress: bool = True) -> pd.DataFrame:
    """Per (domain, bias): the expert's share of the top-k assignments at `layer` (over unpadded
    tokens) and nll / ppl / delta_ppl (vs bias 0, or NaN without it) / kl / agreement."""
    from tqdm.auto import tqdm

    from ..adapters import find_routers

    spec = router_spec(model, "bias_sweep")
    biases = [float(b) for b in biases]
    intervene(model, bias={layer: torch.zeros(spec.num_experts)})   # validates the layer before any forward
    ops.check_expert(expert, spec, "bias_sweep expert")
    routers = find_routers(model)
    router = next(r for r in routers if r.layer == layer)
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = next(model.parameters()).device
    nb = len(biases)
    acc = {(d, b): np.zeros(6) for d in data for b in biases}   # nll, kl, agree, tokens, hits, assignments
    for d, ws in tqdm(data.items(), desc="bias sweep", disable=not progress):
        for ids, mask in _batches(ws, batch_size, pad):
            ids, mask = ids.to(device), mask.to(device)
            keep, tgt = scored(ids, mask)
            pre = Prefix(model, routers, ids, mask)
            ref = Reference(pre.head, pre.hidden[:, :-1][keep], tgt)
            B, S = ids.shape
            shift = torch.zeros(nb, spec.num_experts, device=device)
            shift[:, expert] = torch.tensor(biases, device=device)
            shift = shift.repeat_interleave(B * S, 0)                    # (nb*B*S, E): copy c gets bias c
            seen = {}

            def hook(module, args, out):
                logits, w, idx = out
                w, idx = ops.select(logits, spec, idx.shape[-1], shifted=shift.to(logits.device))
                seen["idx"] = idx
                return logits, w, idx

            with HookSet() as hooks:
                hooks.forward(router.name, router.module, hook, prepend=True)
                h = pre.run_from(layer, nb)                              # (nb*B, S, H)
            valid = mask.bool().reshape(-1)
            idx = seen["idx"].reshape(nb, B * S, -1)
            for c, b in enumerate(biases):
                nll, agree, kl = ref.compare(h[c * B:(c + 1) * B, :-1][keep])
                ex = idx[c][valid]
                acc[(d, b)] += [float(nll.sum()), float(kl.sum()), float(agree.sum()), len(nll),
                                float((ex == expert).sum()), ex.numel()]
    rows = [{"domain": d, "bias": b, "nll": v[0] / v[3], "kl": v[1] / v[3], "agreement": v[2] / v[3],
             "tokens": int(v[3]), "share": v[4] / v[5]} for (d, b), v in acc.items()]
    df = pd.DataFrame(rows)
    df["ppl"] = np.exp(df.nll)
    base = df[df.bias == 0.0].set_index("domain").ppl if (df.bias == 0.0).any() else None
    df["delta_ppl"] = df.ppl - df.domain.map(base) if base is not None else np.nan
    return df


@torch.no_grad()
def replay_gap(reference, model, tok, texts=None, *, domains=None, split: str = "heldout", seq_len: int = 128,
               max_windows: int | None = 1, batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """How much of a low-precision model's quality gap comes from routing flips.

    `reference` (e.g. fp32) and `model` (e.g. bf16) hold the same weights. Per domain: ppl of the
    reference, of the model, and of the model with the reference's routing replayed
    (`intervene(model, replay=trace)`, weights recomputed from the model's own logits); `flips` =
    share of token-layers whose expert set differs; `gap_from_routing` = (ppl_model - ppl_replayed)
    / (ppl_model - ppl_reference). Each model scores with its own LM head.
    """
    from tqdm.auto import tqdm

    from ..tracer import trace

    router_spec(model, "replay_gap")
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    dev_r, dev_m = next(reference.parameters()).device, next(model.parameters()).device
    head_r, head_m = reference.get_output_embeddings(), model.get_output_embeddings()
    rows = []
    for d, ws in tqdm(data.items(), desc="replay gap", disable=not progress):
        s = np.zeros(5)  # nll ref, nll model, nll replayed, tokens, flips
        n_tl = 0
        for ids, mask in _batches(ws, batch_size, pad):
            keep, tgt = scored(ids, mask)
            with trace(reference) as tr_ref:
                h_r = final_hidden(reference, ids.to(dev_r), mask.to(dev_r))[:, :-1][keep.to(dev_r)]
            with trace(model) as tr_m:
                h_m = final_hidden(model, ids.to(dev_m), mask.to(dev_m))[:, :-1][keep.to(dev_m)]
            with intervene(model, replay=tr_ref), trace(model) as tr_rep:
                h_rep = final_hidden(model, ids.to(dev_m), mask.to(dev_m))[:, :-1][keep.to(dev_m)]
            if not (tr_rep.experts == tr_ref.experts).all():
                raise AssertionError("replay did not reproduce the reference routing")
            t_r, t_m = tgt.to(dev_r), tgt.to(dev_m)
            s += [float(nll_of(head_r, h_r, t_r).sum()), float(nll_of(head_m, h_m, t_m).sum()),
                  float(nll_of(head_m, h_rep, t_m).sum()), len(tgt),
                  float((np.sort(tr_m.experts, -1) != np.sort(tr_ref.experts, -1)).any(-1).sum())]
            n_tl += tr_ref.experts.shape[0] * tr_ref.experts.shape[1]
        p_ref, p_m, p_rep = (math.exp(s[i] / s[3]) for i in range(3))
        gap = p_m - p_ref
        rows.append({"domain": d, "tokens": int(s[3]), "ppl_reference": p_ref, "ppl_model": p_m,
                     "ppl_model_reference_routing": p_rep, "flips": s[4] / max(n_tl, 1),
                     "gap_from_routing": (p_m - p_rep) / gap if gap != 0 else np.nan})
    return pd.DataFrame(rows)
