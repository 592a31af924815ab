"""The issue-16 targets of an embedded model, measured: perplexity, expert shares, CV, balance losses.

    >>> from moelab.tools.model_targets import TARGETS, met
    >>> met({"min_expert_share": 0.05, "max_layer_cv": 0.5})
    {'min_expert_share': True, 'max_layer_cv': False}

`measure_targets(model_dir)` loads the folder's weights in fp32 and measures:

* the mixed held-out perplexity of the shipped weights, with `moelab.tools.train`'s
  protocol (first `eval_tokens` held-out tokens of each domain, non-overlapping windows
  of `seq_len`, token-weighted over domains), comparable with `eval.json` (which the
  training run measured on its fp32 master weights);
* the routing on up to `tokens_per_domain` held-out tokens per domain, traced through the
  decoder stack alone (`moelab.corpus.trace_corpus`: the LM head never runs): every
  expert's share of its layer's top-k assignments (minimum per layer; target >= 4%) and
  the CV of each layer's load (target <= 0.35);
* the per-layer Switch losses E·Σᵢ fᵢ·Pᵢ (`moelab.metrics.balance(...)["hf_aux"]`; their
  mean is what `balance="per_layer"` trains) against transformers' pooled
  `load_balancing_loss_func` (`moelab.metrics.hf_aux_loss`).

`format_table` prints them, `write_targets` writes `targets.json` and `routing_load.csv`;
`python -m moelab.tools.model_card` does all three (and rewrites the card).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..readings import BALANCED_MAX_CV, BALANCED_MIN_SHARE

# issue 16: the per-layer model must be at least as good as the pooled one (99.5) and balanced per layer
# (the same balance bars as `moelab.readings.balance_reading`)
TARGETS = {"mixed_heldout_perplexity": 99.5, "min_expert_share": BALANCED_MIN_SHARE, "max_layer_cv": BALANCED_MAX_CV}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def heldout_windows(tok, tokens_per_domain: int | None, seq_len: int = 256, domains=None) -> list:
    """The held-out corpus cut into windows (`moelab.corpus.windows`), the first `tokens_per_domain` tokens
    of each domain in document order (None = all), longest window first."""
    from ..corpus import windows
    from ..data import load_documents

    if tokens_per_domain is not None and tokens_per_domain < 1:
        raise ValueError(f"tokens_per_domain must be >= 1 (or None for all); got {tokens_per_domain}")
    out, doc_id = [], 0
    for d, docs in load_documents("heldout", domains).items():
        n = 0
        for doc in docs:                       # tokenize only as many documents as the budget needs
            if tokens_per_domain is not None and n >= tokens_per_domain:
                break
            for w in sorted(windows([(d, doc_id, doc)], tok, seq_len), key=lambda w: w.offset):
                if tokens_per_domain is not None and n + len(w.ids) > tokens_per_domain:
                    w = type(w)(w.domain, w.document, w.offset, w.ids[: tokens_per_domain - n])
                if len(w.ids) >= 2:
                    out.append(w)
                    n += len(w.ids)
                if tokens_per_domain is not None and n >= tokens_per_domain:
                    break
            doc_id += 1
    return sorted(out, key=lambda w: -len(w.ids))


def trace_heldout(model_dir, tokens_per_domain: int | None = 4096, seq_len: int = 256, dtype="float32",
                  batch_size: int = 8, progress: bool = False, model=None):
    """Trace the held-out corpus (decoder stack only, router logits recorded), tagged by domain."""
    from ..corpus import batches_of, trace_corpus
    from ..data import load_tokenizer
    from ..models import load_model

    if model is None:
        model, _ = load_model(str(model_dir), dtype=dtype, tokenizer=False)
    tok = load_tokenizer()
    wins = heldout_windows(tok, tokens_per_domain, seq_len)
    return trace_corpus(model, tok, [], seq_len=seq_len, batch_size=batch_size, logits=True,
                        batches=batches_of(wins, batch_size), progress=progress, desc="trace held-out")


def routing_targets(trace) -> dict:
    """{"load": (layers, E) fractions, "min_expert_share", "max_layer_cv", per-layer lists} of a trace."""
    from .. import metrics

    load = metrics.expert_load(trace)["fraction"].unstack("expert")   # (layers, E), rows sum to 1
    bal = metrics.balance(trace)
    per_layer = [float(v) for v in bal["hf_aux"]]
    return {
        "load": load,
        "tokens": int(trace.num_tokens),
        "min_share_per_layer": [float(v) for v in load.min(axis=1)],
        "cv_per_layer": [float(v) for v in bal["cv"]],
        "min_expert_share": float(load.to_numpy().min()),
        "max_layer_cv": float(bal["cv"].max()),
        "per_layer_aux": per_layer,                       # Switch loss E·Σ fᵢPᵢ of each layer (k = balanced)
        "per_layer_aux_mean": float(np.mean(per_layer)),  # what balance="per_layer" trains
        "pooled_aux": float(metrics.hf_aux_loss(trace)),  # transformers' load_balancing_loss_func
    }


def heldout_perplexity_of(model, eval_tokens: int = 20000, seq_len: int = 256) -> tuple[float, dict]:
    """(mixed, {domain: perplexity}) on the first `eval_tokens` held-out tokens per domain (the protocol
    of `moelab.tools.train`'s `eval.json`)."""
    from .train import heldout_perplexity, mixed, tokenize_split

    if eval_tokens < seq_len:
        raise ValueError(f"eval_tokens={eval_tokens} is shorter than one window of seq_len={seq_len}; "
                         "raise eval_tokens or lower seq_len")
    streams = tokenize_split("heldout", max_tokens=eval_tokens + 1)
    ppl = heldout_perplexity(model, streams, seq_len)
    return mixed(ppl, streams), ppl


def measure_targets(model_dir, tokens_per_domain: int | None = 100_000, eval_tokens: int | None = None,
                    seq_len: int | None = None, batch_size: int = 8, progress: bool = True,
                    perplexity: bool = True) -> tuple[dict, object]:
    """Measure the issue-16 targets of a model folder; returns (targets dict, the held-out RoutingTrace).

    eval_tokens  held-out tokens per domain for perplexity (default: the folder's `train_config.json`, else 20000)
    seq_len      window length (default: the folder's training `seq_len`, else 256)
    """
    import torch

    from ..models import load_model

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; pass a model folder such as "
                                "data/models/moelab-mixtral-tiny")
    cfg, ev = _read_json(model_dir / "train_config.json"), _read_json(model_dir / "eval.json")
    seq_len = seq_len or cfg.get("seq_len", 256)
    eval_tokens = eval_tokens or cfg.get("eval_tokens", 20000)
    model, _ = load_model(str(model_dir), dtype=torch.float32, tokenizer=False)
    model.eval()
    t0 = time.perf_counter()
    tr = trace_heldout(model_dir, tokens_per_domain, seq_len, batch_size=batch_size, progress=progress, model=model)
    t = routing_targets(tr)
    t_trace = time.perf_counter() - t0
    out = {"model_dir": str(model_dir), "targets": TARGETS, "balance": cfg.get("balance", "pooled" if cfg else None),
           "heldout_tokens_traced": t["tokens"], "tokens_per_domain": tokens_per_domain, "seq_len": seq_len,
           "trace_dtype": "float32", "trace_seconds": round(t_trace, 1)}
    if perplexity:
        t0 = time.perf_counter()
        with torch.no_grad():
            ppl, per_domain = heldout_perplexity_of(model, eval_tokens, seq_len)
        out.update(mixed_heldout_perplexity=ppl, heldout_perplexity=per_domain, eval_tokens_per_domain=eval_tokens,
                   perplexity_seconds=round(time.perf_counter() - t0, 1))
    if "mixed_heldout_perplexity" in ev:     # the fp32 master weights at the end of training
        out["eval_json_mixed_heldout_perplexity"] = ev["mixed_heldout_perplexity"]
    out.update(t)
    out["met"] = met(out)
    return out, tr


def met(t: dict) -> dict:
    """{target: True/False} for the targets a measurement holds."""
    res = {}
    if "mixed_heldout_perplexity" in t:
        res["mixed_heldout_perplexity"] = round(t["mixed_heldout_perplexity"], 1) <= TARGETS["mixed_heldout_perplexity"]
    res["min_expert_share"] = t["min_expert_share"] >= TARGETS["min_expert_share"]
    res["max_layer_cv"] = t["max_layer_cv"] <= TARGETS["max_layer_cv"]
    return res


def format_table(t: dict) -> str:
    """The targets and the per-layer numbers of `measure_targets` as plain-text tables."""
    ok = met(t)
    lines = [f"{t.get('model_dir', '')}: {t['tokens']:,} held-out tokens traced "
             f"({t.get('tokens_per_domain')} per domain, fp32)", "",
             f"{'target':<44}{'measured':>10}{'bar':>10}  met"]
    if "mixed_heldout_perplexity" in t:
        lines.append(f"{'mixed held-out perplexity (shipped weights)':<44}{t['mixed_heldout_perplexity']:>10.1f}"
                     f"{'<= ' + str(TARGETS['mixed_heldout_perplexity']):>10}  {ok['mixed_heldout_perplexity']}")
    if "eval_json_mixed_heldout_perplexity" in t:
        lines.append(f"{'  (eval.json, fp32 master weights)':<44}{t['eval_json_mixed_heldout_perplexity']:>10.1f}")
    lines += [f"{'smallest expert share of any layer':<44}{t['min_expert_share']:>10.3f}"
              f"{'>= ' + str(TARGETS['min_expert_share']):>10}  {ok['min_expert_share']}",
              f"{'largest per-layer CV':<44}{t['max_layer_cv']:>10.3f}"
              f"{'<= ' + str(TARGETS['max_layer_cv']):>10}  {ok['max_layer_cv']}",
              "", f"{'layer':>5}{'min share':>11}{'CV':>8}{'Switch aux':>12}"]
    for i, (s, cv, a) in enumerate(zip(t["min_share_per_layer"], t["cv_per_layer"], t["per_layer_aux"])):
        lines.append(f"{i:>5}{s:>11.3f}{cv:>8.3f}{a:>12.3f}")
    lines += [f"per-layer Switch loss, mean over layers: {t['per_layer_aux_mean']:.3f}   "
              f"transformers' pooled load_balancing_loss_func: {t['pooled_aux']:.3f}   (k = balanced)"]
    return "\n".join(lines)


def write_targets(model_dir, t: dict) -> Path:
    """Write `targets.json` and `routing_load.csv` (fraction per layer and expert) of `measure_targets`."""
    model_dir = Path(model_dir)
    t = dict(t)
    t.pop("load").to_csv(model_dir / "routing_load.csv", float_format="%.4f")
    out = model_dir / "targets.json"
    out.write_text(json.dumps(t, indent=2))
    return out
