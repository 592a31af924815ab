"""Measure an embedded model's issue-16 targets and write its card, never from assumptions.

    $ python -m moelab.tools.model_card data/models/moelab-mixtral-tiny --tokens-per-domain 100000
    $ python -m moelab.tools.model_card data/models/moelab-mixtral-tiny-pooled --tokens-per-domain 100000
    $ python -m moelab.tools.model_card DIR --targets-only    # print the targets of any folder (a checkpoint); write nothing

    >>> from moelab.tools.model_card import TARGETS
    >>> TARGETS["min_expert_share"], TARGETS["max_layer_cv"]
    (0.04, 0.35)

`measure_targets` loads the folder's weights (in fp32) and measures, with code
in this module only:

* the mixed held-out perplexity of the shipped weights: `moelab.tools.train`'s
  protocol (first `eval_tokens` held-out tokens of each domain, non-overlapping
  windows of `seq_len`, token-weighted over domains), so it is comparable with
  `eval.json` (measured on the fp32 master weights at the end of training);
* the routing on up to `tokens_per_domain` held-out tokens per domain, traced
  through the decoder stack alone (`moelab.corpus.trace_corpus`: the LM head
  never runs): every expert's share of its layer's top-k assignments (the
  minimum per layer; target >= 4%), the CV of each layer's load (target <= 0.35);
* the per-layer Switch losses E·Σᵢ fᵢ·Pᵢ (`moelab.metrics.balance(...)["hf_aux"]`,
  their mean is what `balance="per_layer"` trains) against transformers' pooled
  `load_balancing_loss_func` value (`moelab.metrics.hf_aux_loss`).

`main` writes `targets.json` and `routing_load.csv` into the folder, prints the
table (`format_table`) and, when the folder holds the training record
(`train_config.json`, `eval.json`), rewrites its card `README.md`.

References: Fedus et al. 2021 (Switch, eq. 4); Jiang et al. 2024 (Mixtral).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

# issue 16: the per-layer model must be at least as good as the pooled one (99.5) and balanced per layer
TARGETS = {"mixed_heldout_perplexity": 99.5, "min_expert_share": 0.04, "max_layer_cv": 0.35}


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


def _train_time(cfg, ev, log) -> tuple[float, str]:
    if "train_seconds" in ev:
        return float(ev["train_seconds"]), "wall time of the training loop"
    if not log:
        return float("nan"), "not recorded"
    n = cfg["batch_size"] * cfg["seq_len"]
    return float(sum(n / float(r["tokens_per_s"]) for r in log)), "sum of the logged step times"


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


POOLED_WHY = """**Why so unbalanced, with a load-balancing loss in training?** transformers' `load_balancing_loss_func`
(the loss Mixtral is trained with in transformers) pools the router outputs of *all layers* before
computing E·Σᵢ fᵢ·Pᵢ, so expert i of layer 0 and expert i of layer 3 count as one expert. On these
tokens the pooled value is **{pooled:.3f}** (≈ k = {k}, perfectly "balanced"), while the same quantity per
layer is {per_layer} (layers {layers}).
The loss was satisfied by layers favouring *different* experts, not by balancing each layer. The default
model `moelab-mixtral-tiny` is the same recipe (architecture, data, steps, seed, coefficient) with the
Switch loss computed per layer (`moelab.tools.train.switch_balance_loss`), as in Switch, GShard, Mixtral's own
training and Megatron-Core; compare its card. We keep this model, final weights only, because it shows
the effect (notebook 04, "pooled vs per-layer balance").
(`moelab.metrics.balance(trace)["hf_aux"]` is per layer, `moelab.metrics.hf_aux_loss(trace)` reproduces
transformers' pooled value.)"""

PER_LAYER_WHY = """**Balance loss.** Trained with `moelab.tools.train.switch_balance_loss`: for each MoE layer
E·Σᵢ fᵢ·Pᵢ from that layer's router logits (fᵢ = top-{k} assignments to expert i per token, Pᵢ = mean router
probability; Fedus et al. 2021 eq. 4 per layer, as Switch, GShard, Mixtral's training and Megatron-Core
apply it), averaged over layers, weight {coef}. On these held-out tokens the per-layer values are
{per_layer} (layers {layers}; {k} = balanced) and transformers' pooled value is {pooled:.3f}. The earlier
model trained with transformers' pooled loss is kept as `moelab-mixtral-tiny-pooled` (its card explains
why pooling let layers collapse)."""


def write_targets(model_dir, t: dict) -> Path:
    """Write `targets.json` and `routing_load.csv` (fraction per layer and expert) of `measure_targets`."""
    model_dir = Path(model_dir)
    t = dict(t)
    t.pop("load").to_csv(model_dir / "routing_load.csv", float_format="%.4f")
    out = model_dir / "targets.json"
    out.write_text(json.dumps(t, indent=2))
    return out


def write_card(model_dir, t: dict, tr) -> Path:
    """Rewrite the card `README.md` of a trained folder from `measure_targets`' (targets, trace)."""
    model_dir = Path(model_dir)
    name = model_dir.name
    for f in ("train_config.json", "eval.json"):
        if not (model_dir / f).is_file():
            raise FileNotFoundError(f"{model_dir / f} not found: a card needs the training record that "
                                    "`python -m moelab.tools.train` writes; use --targets-only for other folders")
    cfg = json.loads((model_dir / "train_config.json").read_text())
    ev = json.loads((model_dir / "eval.json").read_text())
    ck_path = model_dir / "checkpoints.json"
    ckpts = json.loads(ck_path.read_text()) if ck_path.is_file() else []
    log = []
    if (model_dir / "training_log.csv").is_file():
        with open(model_dir / "training_log.csv") as f:
            log = list(csv.DictReader(f))
    kind = cfg.get("balance", "pooled")   # models trained before the `balance` field used the pooled loss
    tps = np.array([float(r["tokens_per_s"]) for r in log]) if log else np.array([np.nan])
    seconds, how = _train_time(cfg, ev, log)
    load = t["load"]
    tokens_per_domain = t["tokens_per_domain"]

    import moelab

    bal = moelab.metrics.balance(tr)
    rr = moelab.metrics.repeat_rates(tr)
    k, E = cfg["num_experts_per_tok"], cfg["num_local_experts"]
    size = sum(p.stat().st_size for p in model_dir.rglob("*.safetensors"))
    rows = "\n".join(
        f"| {d} | {ev['heldout_perplexity'][d]:.1f} | {ev['unigram_perplexity'][d]:.1f} | "
        f"{ev['unigram_perplexity'][d] / ev['heldout_perplexity'][d]:.1f}x |"
        for d in sorted(ev["heldout_perplexity"]))
    load_rows = "\n".join(
        f"| {layer} | " + " | ".join(f"{v:.3f}" for v in load.loc[layer]) +
        f" | {bal.loc[layer, 'cv']:.2f} | {bal.loc[layer, 'maxvio']:.2f} | {rr.loc[layer, 'first']:.3f} |"
        for layer in load.index)
    fmt = dict(pooled=t["pooled_aux"], k=k, coef=cfg["aux_loss_coef"],
               per_layer=", ".join(f"{v:.2f}" for v in t["per_layer_aux"]),
               layers=", ".join(str(i) for i in load.index))
    why = (PER_LAYER_WHY if kind == "per_layer" else POOLED_WHY).format(**fmt)
    loss_name = ("per-layer Switch loss (`moelab.tools.train.switch_balance_loss`)" if kind == "per_layer"
                 else "transformers' pooled `load_balancing_loss_func`")
    ppl_ev, mn, cv = ev["mixed_heldout_perplexity"], t["min_expert_share"], t["max_layer_cv"]
    ppl = t.get("mixed_heldout_perplexity", ppl_ev)
    title = ("the embedded default model" if kind == "per_layer"
             else "the embedded model trained with transformers' pooled balance loss (final weights only)")
    if ckpts:
        ck_rows = "\n".join(f"| {c['step']} | {c['tokens_seen']:,} | {c['ce_loss']:.3f} | `{c['path']}` |"
                            for c in ckpts)
        ck_section = f"""## Checkpoints (`checkpoints/`, for the router-saturation study of OLMoE §5)

| step | tokens seen | train CE loss | path |
|---|---:|---:|---|
{ck_rows}

Each folder loads with `moelab.load_model(path)`; `moelab.models.checkpoints("{name}")` lists them."""
    else:
        ck_section = ("## Checkpoints\n\nNone shipped: this model keeps its final weights only "
                      "(the default model carries the checkpoints for the saturation study).")
    # models trained before `balance` existed got the pooled loss from transformers' forward (labels=...);
    # `--balance pooled` computes the same function explicitly
    retrain = (f"moelab train --out DIR --steps {cfg['steps']} --batch-size {cfg['batch_size']} "
               f"--balance {kind} --aux-loss-coef {cfg['aux_loss_coef']}")
    card = f"""# {name}: {title}

A small model with Mixtral 8x7B's architecture (`transformers.MixtralForCausalLM`: top-{k}
of {E} SwiGLU experts per layer, GQA attention, RoPE, RMSNorm) and Mixtral's own tokenizer (SentencePiece,
32,000 pieces, from `mistral-common`), trained from scratch on 2 CPU cores on moelab's 12-domain corpus
(`data/corpus/`, train split). It exists so that every notebook shows real, learned routing, offline and
in minutes. It is a teaching and testing model, not a useful language model.

Load it with `model, tok = moelab.load_model({'' if kind == 'per_layer' else repr(name)})` (on CPU: bf16 where native, else fp32) or with plain
transformers: `MixtralForCausalLM.from_pretrained("data/models/{name}")`.

## Targets (issue 16; `targets.json`, written by `python -m moelab.tools.model_card data/models/{name}`)

| target | measured | bar | |
|---|---:|---:|---|
| mixed held-out perplexity of the shipped weights (eval.json, fp32 master weights: {ppl_ev:.1f}) | {ppl:.1f} | ≤ {TARGETS['mixed_heldout_perplexity']} | {_mark(round(ppl, 1) <= TARGETS['mixed_heldout_perplexity'])} |
| smallest expert share of any layer (held-out) | {mn:.3f} | ≥ {TARGETS['min_expert_share']} | {_mark(mn >= TARGETS['min_expert_share'])} |
| largest per-layer CV (held-out) | {cv:.2f} | ≤ {TARGETS['max_layer_cv']} | {_mark(cv <= TARGETS['max_layer_cv'])} |

Smallest share per layer: {', '.join(f'{v:.3f}' for v in t['min_share_per_layer'])}; CV per layer:
{', '.join(f'{v:.2f}' for v in t['cv_per_layer'])} (layers {fmt['layers']}), on {t['tokens']:,} held-out tokens
({tokens_per_domain:,} per domain) traced in fp32 from the bf16 weights.

## Architecture and training (`moelab/tools/train.py`, rerun with `{retrain}`)

| | |
|---|---|
| layers / hidden / heads / KV heads | {cfg['num_hidden_layers']} / {cfg['hidden_size']} / {cfg['num_attention_heads']} / {cfg['num_key_value_heads']} |
| experts / top-k / expert intermediate size | {E} / {k} / {cfg['intermediate_size']} |
| vocabulary / tied embeddings | 32,000 / {cfg['tie_word_embeddings']} |
| parameters | {ev['parameters']:,} |
| steps x batch x sequence | {cfg['steps']} x {cfg['batch_size']} x {cfg['seq_len']} = {ev['tokens_seen']:,} training tokens |
| balance loss | {loss_name}, coefficient {cfg['aux_loss_coef']} |
| optimiser | AdamW (0.9, 0.95), lr {cfg['lr']} cosine to {cfg['min_lr']}, warm-up {cfg['warmup']}, wd {cfg['weight_decay']}, clip {cfg['grad_clip']} |
| experts implementation | `{cfg['experts_implementation']}`, fp32 master weights, seed {cfg['seed']} |
| training time | {seconds / 60:.1f} min ({how}), torch threads {ev.get('torch_threads', cfg.get('threads') or 'default')} |
| throughput (median over steps) | {np.nanmedian(tps):,.0f} tokens/s on this 2-core machine (shared with other work; see `training_log.csv`) |
| weights on disk | bf16 safetensors, {size / 1e6:.1f} MB for this folder{' (final model and all checkpoints)' if ckpts else ''} |

## Quality (held-out split, `eval.json`)

Perplexity on up to {cfg['eval_tokens']:,} held-out tokens per domain, non-overlapping windows of
{cfg['seq_len']}, against an add-one-smoothed unigram model fitted on the same training tokens.
Mixed held-out set: model **{ppl_ev:.1f}**, unigram **{ev['mixed_unigram_perplexity']:.1f}**, i.e. the
model is **{ev['unigram_over_model']:.1f}x** better.

| domain | model perplexity | unigram perplexity | unigram / model |
|---|---:|---:|---:|
{rows}

## Routing (measured on {t['tokens']:,} held-out tokens, `routing_load.csv`)

Fraction of top-{k} assignments per expert (uniform = {1 / E:.3f}), the balance metrics of
`moelab.metrics.balance`, and the rate at which consecutive tokens share their first choice
(`repeat_rates`; random = {1 / E:.3f}):

| layer | {' | '.join(f'e{i}' for i in range(E))} | CV | MaxVio | same first choice |
|---|{'---:|' * E}---:|---:|---:|
{load_rows}

{why}

{ck_section}

## Data and licences

Trained on `data/corpus/*/train.txt` (see `data/README.md` for sources and licences). Weights are
released under the project's licence (Apache-2.0).
"""
    out = model_dir / "README.md"
    out.write_text(card)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m moelab.tools.model_card", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="a model folder, e.g. data/models/moelab-mixtral-tiny")
    p.add_argument("--tokens-per-domain", type=int, default=100_000,
                   help="held-out tokens traced per domain for the routing targets (default 100000: all there is)")
    p.add_argument("--eval-tokens", type=int, default=None,
                   help="held-out tokens per domain for perplexity (default: train_config.json's eval_tokens, else 20000)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-card", action="store_true", help="write targets.json and routing_load.csv, not README.md")
    p.add_argument("--targets-only", action="store_true",
                   help="print the targets of MODEL_DIR (any model folder, e.g. a checkpoint) as JSON; write nothing")
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t, tr = measure_targets(a.model_dir, a.tokens_per_domain, a.eval_tokens, batch_size=a.batch_size)
    print(format_table(t))
    if a.targets_only:
        print(json.dumps({k: v for k, v in t.items() if k != "load"}, indent=2))
        return
    print(f"wrote {write_targets(a.model_dir, t)}")
    if not a.no_card and (Path(a.model_dir) / "train_config.json").is_file():
        print(f"wrote {write_card(a.model_dir, t, tr)}")


if __name__ == "__main__":
    main()
