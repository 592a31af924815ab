"""Score interventions: quality per domain against the unmodified model, and the compute they imply.

    >>> import moelab
    >>> from moelab.interventions.score import score, frontier
    >>> model, tok = moelab.load_model(dtype="float32")                      # doctest: +SKIP
    >>> df = score(model, tok, domains=["code", "fiction"], max_windows=4,   # doctest: +SKIP
    ...            interventions={"top-1": dict(top_k=1), "skip 0.5": dict(skip=0.5)})
    >>> df[["intervention", "domain", "ppl", "agreement", "kl", "flops_per_token"]]   # doctest: +SKIP
    >>> frontier(df, model.config)                                          # doctest: +SKIP

Per (intervention, domain), over every next-token prediction of the windows (the decoder runs
without the LM head; nexttoken.py computes the statistics from hidden states, chunk by chunk):

    nll        mean -log p(next token)                     ppl   exp(nll)
    agreement  share of positions whose argmax equals the unmodified model's argmax
    kl         mean KL(p_unmodified || p_intervened) in nats
    k_eff      mean experts with nonzero weight per token and MoE layer (`Intervention.effective_k`)
    active_params, flops_per_token   `moelab.compute` accounting with the experts term scaled by
               k_eff / k (prefill of `seq_len` tokens, head included)

The row `intervention == "none"` is the unmodified model (agreement 1, kl 0). `frontier` averages
the domains (token-weighted) and adds dense baselines of the same active parameters
(`moelab.compute.dense_equivalent(match="active")` at each integer k): their compute is placed on the
frontier; their quality is NaN unless such a dense model has been trained and scored.
"""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import torch

from .hooks import Intervention, intervene, router_spec
from .nexttoken import Reference, final_hidden, scored


def windows(tok, texts, seq_len: int = 128, max_windows: int | None = None) -> list[list[int]]:
    """Cut text(s) into windows of `seq_len` tokens (BOS opens each text), at most `max_windows`."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    bos = getattr(tok, "bos_token_id", None)
    out = []
    for t in texts:
        ids = tok(t)["input_ids"]
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + list(ids)
        for s in range(0, max(len(ids) - 1, 0), seq_len):
            w = ids[s: s + seq_len]
            if len(w) >= 2:
                out.append(list(w))
            if max_windows is not None and len(out) >= max_windows:
                return out
    return out


def implied_compute(config, k_eff: dict[int, float] | float | None = None, seq_len: int = 128) -> dict:
    """Active parameters and prefill FLOPs per token when MoE layer l runs k_eff[l] experts per token."""
    from ..compute import count_params, flops_per_token, model_shape
    from ..compute.params import expert_params

    s = model_shape(config)
    p = count_params(config)
    f = flops_per_token(config, context=seq_len, phase="prefill")
    n_moe = max(s.num_moe_layers, 1)
    if k_eff is None:
        mean_k = float(s.top_k)
    elif isinstance(k_eff, dict):  # layers not in the dict run the configured k
        mean_k = (sum(k_eff.values()) + (n_moe - len(k_eff)) * s.top_k) / n_moe
    else:
        mean_k = float(k_eff)
    per_expert = expert_params(s)
    active = p.active + (mean_k - s.top_k) * per_expert * s.num_moe_layers
    experts = f.experts * mean_k / s.top_k
    return {"k_eff": mean_k, "active_params": float(active), "flops_per_token": float(f.total - f.experts + experts),
            "expert_flops_per_token": float(experts), "moe_layers": n_moe}


def _corpus(tok, texts, domains, split, seq_len, max_windows) -> dict[str, list[list[int]]]:
    if texts is None:
        from ..data import load_documents

        texts = load_documents(split, domains)
    elif isinstance(texts, str) or (isinstance(texts, (list, tuple)) and texts and isinstance(texts[0], str)):
        texts = {"text": texts}
    elif not isinstance(texts, dict):
        raise TypeError(f"texts={type(texts).__name__}: pass a string, a list of strings or {{domain: text(s)}}")
    return {d: windows(tok, t, seq_len, max_windows) for d, t in texts.items()}


def _batches(ws: list[list[int]], batch_size: int, pad: int):
    for i in range(0, len(ws), batch_size):
        b = ws[i: i + batch_size]
        S = max(len(w) for w in b)
        ids = torch.full((len(b), S), pad, dtype=torch.long)
        mask = torch.zeros((len(b), S), dtype=torch.long)
        for r, w in enumerate(b):
            ids[r, : len(w)] = torch.tensor(w)
            mask[r, : len(w)] = 1
        yield ids, mask


@torch.no_grad()
def score(model, tok, texts=None, *, domains=None, split: str = "heldout", interventions=None, seq_len: int = 128,
          max_windows: int | None = None, batch_size: int = 8, progress: bool = True) -> pd.DataFrame:
    """NLL, perplexity, agreement and KL with the unmodified model, and implied compute, per domain.

    texts: a string, a list of strings, {domain: text or [documents]}, or None = the corpus `split`
    (`domains` to restrict). interventions: {name: kwargs for `moelab.intervene`}.
    """
    from tqdm.auto import tqdm

    router_spec(model, "score")          # refuses architectures whose routing moelab has not verified
    interventions = dict(interventions or {})
    for name, kw in interventions.items():
        if not isinstance(kw, dict):
            raise TypeError(f"interventions[{name!r}] = {kw!r}: give the keyword arguments of moelab.intervene as a dict")
        Intervention(model, **kw)  # validate every intervention before the first forward
    data = _corpus(tok, texts, domains, split, seq_len, max_windows)
    pad = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    names = ["none", *interventions]
    acc = {(n, d): np.zeros(4) for n in names for d in data}      # nll sum, agree, kl sum, tokens
    act = {(n, d): {} for n in names for d in data}                # layer -> [active, tokens]
    total = sum(math.ceil(len(w) / batch_size) for w in data.values())
    bar = tqdm(total=total * len(names), desc="score", unit="fwd", disable=not progress)
    for d, ws in data.items():
        for ids, mask in _batches(ws, batch_size, pad):
            ids, mask = ids.to(device), mask.to(device)
            keep, tgt = scored(ids, mask)
            ref = Reference(head, final_hidden(model, ids, mask)[:, :-1][keep], tgt)   # the decoder without the head
            bar.update(1)
            for n in names:
                if n == "none":
                    nll, agree, kl, iv = ref.nll, torch.ones_like(ref.top, dtype=torch.bool), torch.zeros_like(ref.nll), None
                else:
                    with intervene(model, **interventions[n]) as iv:
                        h = final_hidden(model, ids, mask)[:, :-1][keep]
                    nll, agree, kl = ref.compare(h)
                    bar.update(1)
                acc[(n, d)] += [float(nll.sum()), float(agree.sum()), float(kl.sum()), len(nll)]
                if iv is not None:
                    for layer, (a, t) in iv.counts().items():
                        c = act[(n, d)].setdefault(layer, [0.0, 0])
                        c[0] += a
                        c[1] += t
    bar.close()
    rows = []
    for (n, d), (s_nll, s_agree, s_kl, t) in acc.items():
        k_eff = {l: a / t_ for l, (a, t_) in act[(n, d)].items() if t_} or None
        comp = implied_compute(cfg, k_eff, seq_len)
        nll = s_nll / t if t else float("nan")
        rows.append({"intervention": n, "domain": d, "tokens": int(t), "nll": nll, "ppl": math.exp(nll) if t else float("nan"),
                     "agreement": s_agree / t if t else float("nan"), "kl": s_kl / t if t else float("nan"), **comp})
    return pd.DataFrame(rows)


def frontier(scores: pd.DataFrame, config=None, dense_k=None) -> pd.DataFrame:
    """Quality vs compute: one row per intervention (token-weighted over domains), plus dense baselines.

    Dense rows (`kind == "dense"`): `dense_equivalent(config with k experts, match="active")` for each
    k in `dense_k` (default 1..configured k); quality columns are NaN (no dense model is scored here).
    `pareto` marks the interventions no other intervention beats on both nll and flops.
    """
    g = scores.assign(w_nll=scores.nll * scores.tokens, w_kl=scores.kl * scores.tokens,
                      w_agree=scores.agreement * scores.tokens, w_f=scores.flops_per_token * scores.tokens,
                      w_p=scores.active_params * scores.tokens, w_k=scores.k_eff * scores.tokens)
    g = g.groupby("intervention", sort=False)[["tokens", "w_nll", "w_kl", "w_agree", "w_f", "w_p", "w_k"]].sum()
    out = pd.DataFrame({
        "nll": g.w_nll / g.tokens, "kl": g.w_kl / g.tokens, "agreement": g.w_agree / g.tokens,
        "flops_per_token": g.w_f / g.tokens, "active_params": g.w_p / g.tokens, "k_eff": g.w_k / g.tokens,
        "tokens": g.tokens,
    })
    out["ppl"] = np.exp(out.nll)
    out["kind"] = "moe"
    f, n = out.flops_per_token.to_numpy(), out.nll.to_numpy()
    out["pareto"] = [not np.any((f <= f[i]) & (n <= n[i]) & ((f < f[i]) | (n < n[i]))) for i in range(len(out))]
    if config is not None:
        out = pd.concat([out, dense_baselines(config, dense_k)])
    return out.rename_axis("intervention").reset_index()


def dense_baselines(config, ks=None, seq_len: int = 128) -> pd.DataFrame:
    """Dense Mistral configs with the active parameters of the MoE at each k: their params and FLOPs."""
    from ..compute import count_params, dense_equivalent, flops_per_token, model_shape

    cfg = getattr(config, "get_text_config", lambda: config)()
    s = model_shape(cfg)
    ks = range(1, s.top_k + 1) if ks is None else ks
    rows = {}
    for k in ks:
        c = cfg.__class__.from_dict({**cfg.to_dict(), "num_experts_per_tok": int(k)})
        d = dense_equivalent(c, match="active")
        rows[f"dense = active params of k={k}"] = {
            "nll": np.nan, "kl": np.nan, "agreement": np.nan, "ppl": np.nan, "tokens": 0,
            "flops_per_token": flops_per_token(d, context=seq_len, phase="prefill").total,
            "active_params": float(count_params(d).total), "k_eff": np.nan, "kind": "dense",
            "pareto": False, "intermediate_size": d.intermediate_size}
    return pd.DataFrame.from_dict(rows, orient="index")
