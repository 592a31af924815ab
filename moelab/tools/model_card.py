"""Measure an embedded model's issue-16 targets and write its card, never from assumptions.

    $ python -m moelab.tools.model_card data/models/moelab-mixtral-tiny --tokens-per-domain 100000
    $ python -m moelab.tools.model_card data/models/moelab-mixtral-tiny-pooled --tokens-per-domain 100000
    $ python -m moelab.tools.model_card DIR --targets-only    # print the targets of any folder (a checkpoint); write nothing

    >>> from moelab.tools.model_card import TARGETS
    >>> TARGETS["min_expert_share"], TARGETS["max_layer_cv"]
    (0.04, 0.35)

`main` measures the targets (`moelab.tools.model_targets.measure_targets`: the mixed
held-out perplexity of the shipped weights, every expert's share of its layer's
assignments, per-layer CV, per-layer Switch losses against transformers' pooled loss),
prints the table, writes `targets.json` and `routing_load.csv` into the folder and,
when the folder holds the training record (`train_config.json`, `eval.json`),
rewrites its card `README.md` (`write_card`).

References: Fedus et al. 2021 (Switch, eq. 4); Jiang et al. 2024 (Mixtral).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from .model_targets import (TARGETS, format_table, heldout_perplexity_of, heldout_windows, measure_targets,  # noqa: F401
                            met, routing_targets, trace_heldout, write_targets)


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
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the training seq_len, else 256)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-card", action="store_true", help="write targets.json and routing_load.csv, not README.md")
    p.add_argument("--targets-only", action="store_true",
                   help="print the targets of MODEL_DIR (any model folder, e.g. a checkpoint) as JSON; write nothing")
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t, tr = measure_targets(a.model_dir, a.tokens_per_domain, a.eval_tokens, a.seq_len, batch_size=a.batch_size)
    print(format_table(t))
    if a.targets_only:
        print(json.dumps({k: v for k, v in t.items() if k != "load"}, indent=2))
        return
    print(f"wrote {write_targets(a.model_dir, t)}")
    if not a.no_card and (Path(a.model_dir) / "train_config.json").is_file():
        print(f"wrote {write_card(a.model_dir, t, tr)}")


if __name__ == "__main__":
    main()
