"""The expert-ablation sweep: Δ perplexity per (domain, layer, expert), next to each expert's routing share.

    >>> import moelab
    >>> from moelab.interventions.sweep import ablation_sweep
    >>> model, tok = moelab.load_model(dtype="float32")                      # doctest: +SKIP
    >>> df = ablation_sweep(model, tok, domains=["code"], max_windows=2)     # doctest: +SKIP
    >>> df.pivot_table(index="layer", columns="expert", values="delta_ppl")  # doctest: +SKIP

Batched by reusing the prefix: per batch, one unmodified forward records (with a pre-hook on every
decoder layer) the hidden states and keyword arguments each layer received, and the routing (for
the share). Ablating expert e of layer l then re-runs only layers l..L-1, the final norm and the head
from the recorded input of layer l, inside `moelab.intervene(model, ablate={l: [e]})`. The result is
the same as a full forward (tests/test_intervene_score.py checks it); `reuse_prefix=False` runs full
forwards instead, for timing. Caveat: the head and the log-softmax over the vocabulary are paid once
per ablation either way; on a small model with a 32k vocabulary they dominate (see bench/results).

share = fraction of the domain's top-k assignments at layer l that go to expert e (baseline routing).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .hooks import intervene
from .score import Reference, _batches, _corpus


def _stack(model):
    from ..tracer import _decoder_stack

    stack = _decoder_stack(model)
    layers = getattr(stack, "layers", None)
    norm = getattr(stack, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or norm is None or head is None:
        raise TypeError(f"{type(model).__name__}: reuse_prefix needs `.layers`, `.norm` and an output embedding; "
                        "pass reuse_prefix=False")
    return stack, layers, norm, head


class _Recorder:
    """Pre-hooks on every decoder layer: the (args, kwargs) each received in the last forward."""

    def __init__(self, layers):
        self.layers, self.calls, self.handles = layers, {}, []

    def __enter__(self):
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(
                (lambda j: lambda m, a, kw: self.calls.__setitem__(j, (a, dict(kw))))(i), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        while self.handles:
            self.handles.pop().remove()
        return False


def _run_from(layers, norm, head, calls, start: int) -> torch.Tensor:
    args, kw = calls[start]
    h = args[0] if args else kw.pop("hidden_states")
    for j in range(start, len(layers)):
        a, k = calls[j]
        k = {n: v for n, v in k.items() if n != "hidden_states"}
        h = layers[j](h, *a[1:], **k)
        h = h[0] if isinstance(h, tuple) else h
    return head(norm(h))


@torch.no_grad()
def ablation_sweep(model, tok, texts=None, *, domains=None, split: str = "heldout", layers=None, experts=None,
                   mode: str = "route", seq_len: int = 128, max_windows: int | None = 8, batch_size: int = 8,
                   reuse_prefix: bool = True, progress: bool = True) -> pd.DataFrame:
    """One row per (domain, layer, expert) ablated, plus the baseline (layer = expert = -1).

    Columns: nll, ppl, delta_ppl (vs the domain's baseline), kl, agreement, share, tokens.
    """
    from tqdm.auto import tqdm

    from ..adapters import find_routers
    from ..tracer import trace

    routers = find_routers(model)
    all_layers = [r.layer for r in routers]
    layers = all_layers if layers is None else list(layers)
    E = int(routers[0].module.num_experts) if hasattr(routers[0].module, "num_experts") else None
    experts = list(range(E)) if experts is None else list(experts)
    for l in layers:  # validation (errors quote the input) before any forward
        intervene(model, ablate={l: experts}, mode="zero")
    _, dec_layers, norm, head = _stack(model)
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = next(model.parameters()).device
    combos = [(l, e) for l in layers for e in experts]
    acc = {(d, c): np.zeros(4) for d in data for c in [(-1, -1), *combos]}
    counts = {d: np.zeros((len(all_layers), E)) for d in data}
    n_batches = sum(math.ceil(len(w) / batch_size) for w in data.values())
    bar = tqdm(total=n_batches * (1 + len(combos)), desc="ablation sweep", unit="fwd", disable=not progress)
    for d, ws in data.items():
        for ids, mask in _batches(ws, batch_size, pad):
            ids, mask = ids.to(device), mask.to(device)
            with _Recorder(dec_layers) as rec, trace(model) as tr:
                ref = Reference(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids, mask)
            for j in range(len(all_layers)):
                counts[d][j] += np.bincount(tr.experts[:, j].reshape(-1).astype(np.int64), minlength=E)
            acc[(d, (-1, -1))] += [float(ref.nll.sum()), 0.0, len(ref.nll), len(ref.nll)]
            bar.update(1)
            for l, e in combos:
                with intervene(model, ablate={l: [e]}, mode=mode):
                    if reuse_prefix:
                        logits = _run_from(dec_layers, norm, head, rec.calls, all_layers.index(l))
                    else:
                        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll, agree, kl = ref.compare(logits)
                acc[(d, (l, e))] += [float(nll.sum()), float(kl.sum()), float(agree.sum()), len(nll)]
                bar.update(1)
            del rec
    bar.close()
    rows = []
    for (d, (l, e)), (s_nll, s_kl, s_ag, t) in acc.items():
        share = counts[d][all_layers.index(l), e] / counts[d][all_layers.index(l)].sum() if l >= 0 else np.nan
        rows.append({"domain": d, "layer": l, "expert": e, "tokens": int(t), "nll": s_nll / t, "kl": s_kl / t,
                     "agreement": s_ag / t, "share": share})
    df = pd.DataFrame(rows)
    df["ppl"] = np.exp(df.nll)
    base_ppl = df[df.layer < 0].set_index("domain").ppl
    df["delta_ppl"] = df.ppl - df.domain.map(base_ppl)
    return df


@torch.no_grad()
def bias_sweep(model, tok, texts=None, *, layer: int, expert: int, biases=(0.0, 0.5, 1.0, 2.0, 4.0), domains=None,
               split: str = "heldout", seq_len: int = 128, max_windows: int | None = 4, batch_size: int = 8,
               progress: bool = True) -> pd.DataFrame:
    """Steering: add `bias` to one expert's logit at `layer`; per (domain, bias) the expert's traffic
    share at that layer (from a trace inside the block) and nll / ppl / delta_ppl / kl / agreement."""
    from tqdm.auto import tqdm

    from ..tracer import trace

    spec = intervene(model).spec
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = next(model.parameters()).device
    acc = {(d, float(b)): np.zeros(6) for d in data for b in biases}  # nll, kl, agree, tokens, hits, assignments
    for d, ws in tqdm(data.items(), desc="bias sweep", disable=not progress):
        for ids, mask in _batches(ws, batch_size, pad):
            ids, mask = ids.to(device), mask.to(device)
            ref = Reference(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids, mask)
            for b in biases:
                vec = torch.zeros(spec.num_experts)
                vec[expert] = float(b)
                with intervene(model, bias={layer: vec}), trace(model) as tr:
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                nll, agree, kl = ref.compare(logits)
                j = list(tr.layer_ids).index(layer)
                ex = tr.experts[:, j]
                acc[(d, float(b))] += [float(nll.sum()), float(kl.sum()), float(agree.sum()), len(nll),
                                       float((ex == expert).sum()), ex.size]
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
    / (ppl_model - ppl_reference).
    """
    from tqdm.auto import tqdm

    from ..tracer import trace

    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    dev_r, dev_m = next(reference.parameters()).device, next(model.parameters()).device
    rows = []
    for d, ws in tqdm(data.items(), desc="replay gap", disable=not progress):
        s = np.zeros(5)  # nll ref, nll model, nll replayed, tokens, flips
        n_tl = 0
        for ids, mask in _batches(ws, batch_size, pad):
            with trace(reference) as tr_ref:
                ref = Reference(reference(input_ids=ids.to(dev_r), attention_mask=mask.to(dev_r), use_cache=False).logits,
                                ids.to(dev_r), mask.to(dev_r))
            with trace(model) as tr_m:
                lm = model(input_ids=ids.to(dev_m), attention_mask=mask.to(dev_m), use_cache=False).logits
            with intervene(model, replay=tr_ref), trace(model) as tr_rep:
                lr = model(input_ids=ids.to(dev_m), attention_mask=mask.to(dev_m), use_cache=False).logits
            if not (tr_rep.experts == tr_ref.experts).all():
                raise AssertionError("replay did not reproduce the reference routing")
            nm, _, _ = ref.compare(lm.to(dev_r))
            nr, _, _ = ref.compare(lr.to(dev_r))
            s += [float(ref.nll.sum()), float(nm.sum()), float(nr.sum()), len(nm),
                  float((np.sort(tr_m.experts, -1) != np.sort(tr_ref.experts, -1)).any(-1).sum())]
            n_tl += tr_ref.experts.shape[0] * tr_ref.experts.shape[1]
        p_ref, p_m, p_rep = (math.exp(s[i] / s[3]) for i in range(3))
        gap = p_m - p_ref
        rows.append({"domain": d, "tokens": int(s[3]), "ppl_reference": p_ref, "ppl_model": p_m,
                     "ppl_model_reference_routing": p_rep, "flips": s[4] / max(n_tl, 1),
                     "gap_from_routing": (p_m - p_rep) / gap if gap != 0 else np.nan})
    return pd.DataFrame(rows)
