"""Write the embedded model's card (README.md) from what was measured, never from assumptions.

    $ python -m moelab.model_card data/models/moelab-mixtral-tiny

Reads `train_config.json`, `eval.json` (held-out perplexity per domain and the
unigram baseline), `checkpoints.json` and `training_log.csv` written by
`moelab.train`, traces up to `--tokens-per-domain` held-out tokens per domain
with the final model to measure the load per expert per layer, and writes the
card plus `routing_load.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def measure_load(model_dir: Path, tokens_per_domain: int = 4096, seq_len: int = 256):
    """Trace held-out windows of every domain; returns (trace, expert_load fractions (layers, E))."""
    import torch

    import moelab

    from .train import tokenize_split

    model, tok = moelab.load_model(str(model_dir))
    streams = tokenize_split("heldout", max_tokens=tokens_per_domain)
    tracer = moelab.trace(model, logits=True)
    with tracer as tr, torch.no_grad():
        for d, s in streams.items():
            n = len(s) // seq_len
            ids = torch.from_numpy(s[: n * seq_len].reshape(n, seq_len).astype(np.int64))
            tracer.tag(domain=d)
            model(input_ids=ids, use_cache=False)
    load = moelab.metrics.expert_load(tr)["fraction"].unstack("expert")
    return tr, load


def write_card(model_dir, tokens_per_domain: int = 4096) -> Path:
    import moelab

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "train_config.json").read_text())
    ev = json.loads((model_dir / "eval.json").read_text())
    ckpts = json.loads((model_dir / "checkpoints.json").read_text())
    with open(model_dir / "training_log.csv") as f:
        log = list(csv.DictReader(f))
    tps = np.array([float(r["tokens_per_s"]) for r in log])
    tr, load = measure_load(model_dir, tokens_per_domain)
    load.to_csv(model_dir / "routing_load.csv", float_format="%.4f")
    bal = moelab.metrics.balance(tr)
    rr = moelab.metrics.repeat_rates(tr)
    pooled = moelab.metrics.hf_aux_loss(tr)
    k = cfg["num_experts_per_tok"]
    size = sum(p.stat().st_size for p in model_dir.rglob("*.safetensors"))

    rows = "\n".join(
        f"| {d} | {ev['heldout_perplexity'][d]:.1f} | {ev['unigram_perplexity'][d]:.1f} | "
        f"{ev['unigram_perplexity'][d] / ev['heldout_perplexity'][d]:.1f}x |"
        for d in sorted(ev["heldout_perplexity"]))
    load_rows = "\n".join(
        f"| {layer} | " + " | ".join(f"{v:.3f}" for v in load.loc[layer]) +
        f" | {bal.loc[layer, 'cv']:.2f} | {bal.loc[layer, 'maxvio']:.2f} | {rr.loc[layer, 'first']:.3f} |"
        for layer in load.index)
    ck_rows = "\n".join(f"| {c['step']} | {c['tokens_seen']:,} | {c['ce_loss']:.3f} | `{c['path']}` |" for c in ckpts)
    E = cfg["num_local_experts"]
    card = f"""# moelab-mixtral-tiny: the embedded default model

A small model with Mixtral 8x7B's architecture (`transformers.MixtralForCausalLM`: top-{cfg['num_experts_per_tok']}
of {E} SwiGLU experts per layer, GQA attention, RoPE, RMSNorm) and Mixtral's own tokenizer (SentencePiece,
32,000 pieces, from `mistral-common`), trained from scratch on 2 CPU cores on moelab's 12-domain corpus
(`data/corpus/`, train split). It exists so that every notebook shows real, learned routing, offline and
in minutes. It is a teaching and testing model, not a useful language model.

Load it with `model, tok = moelab.load_model()` (bf16 on CPU by default) or with plain transformers:
`MixtralForCausalLM.from_pretrained("data/models/moelab-mixtral-tiny")`.

## Architecture and training (`moelab/train.py`, rerun with `python -m moelab.train --out DIR --steps {cfg['steps']}`)

| | |
|---|---|
| layers / hidden / heads / KV heads | {cfg['num_hidden_layers']} / {cfg['hidden_size']} / {cfg['num_attention_heads']} / {cfg['num_key_value_heads']} |
| experts / top-k / expert intermediate size | {E} / {cfg['num_experts_per_tok']} / {cfg['intermediate_size']} |
| vocabulary / tied embeddings | 32,000 / {cfg['tie_word_embeddings']} |
| parameters | {ev['parameters']:,} |
| steps x batch x sequence | {cfg['steps']} x {cfg['batch_size']} x {cfg['seq_len']} = {ev['tokens_seen']:,} tokens |
| optimiser | AdamW (0.9, 0.95), lr {cfg['lr']} cosine to {cfg['min_lr']}, warm-up {cfg['warmup']}, wd {cfg['weight_decay']}, clip {cfg['grad_clip']} |
| router aux loss coefficient | {cfg['aux_loss_coef']} (transformers' `load_balancing_loss_func`) |
| experts implementation | `{cfg['experts_implementation']}`, fp32 master weights, seed {cfg['seed']} |
| throughput (median over steps) | {np.median(tps):,.0f} tokens/s on this 2-core machine (shared with other work; see `training_log.csv`) |
| weights on disk | bf16 safetensors, {size / 1e6:.1f} MB for the final model and all checkpoints |

## Quality (held-out split, `eval.json`)

Perplexity on up to {cfg['eval_tokens']:,} held-out tokens per domain, non-overlapping windows of
{cfg['seq_len']}, against an add-one-smoothed unigram model fitted on the same training tokens.
Mixed held-out set: model **{ev['mixed_heldout_perplexity']:.1f}**, unigram
**{ev['mixed_unigram_perplexity']:.1f}**, i.e. the model is **{ev['unigram_over_model']:.1f}x** better.

| domain | model perplexity | unigram perplexity | unigram / model |
|---|---:|---:|---:|
{rows}

## Routing (measured on {tr.num_tokens:,} held-out tokens, `routing_load.csv`)

Fraction of top-{cfg['num_experts_per_tok']} assignments per expert (uniform = {1 / E:.3f}), the balance
metrics of `moelab.metrics.balance`, and the rate at which consecutive tokens share their first
choice (`repeat_rates`; random = {1 / E:.3f}):

| layer | {' | '.join(f'e{i}' for i in range(E))} | CV | MaxVio | same first choice |
|---|{'---:|' * E}---:|---:|---:|
{load_rows}

**Why so unbalanced, with a load-balancing loss in training?** transformers' `load_balancing_loss_func`
(the loss Mixtral is trained with in transformers) pools the router outputs of *all layers* before
computing E·Σᵢ fᵢ·Pᵢ, so expert i of layer 0 and expert i of layer 3 count as one expert. On these
tokens the pooled value is **{pooled:.3f}** (≈ k = {k}, perfectly "balanced"), while the same quantity per
layer is {', '.join(f'{v:.2f}' for v in bal['hf_aux'])} (layers {', '.join(str(i) for i in bal.index)}).
The loss was satisfied by layers favouring *different* experts, not by balancing each layer. A
per-layer loss (as in Switch/GShard, one loss per MoE layer) would have prevented it; we keep the
model as trained because it shows the effect. (`moelab.metrics.balance(trace)["hf_aux"]` is per layer,
`moelab.metrics.hf_aux_loss(trace)` reproduces transformers' pooled value.)

## Checkpoints (`checkpoints/`, for the router-saturation study of OLMoE §5)

| step | tokens seen | train CE loss | path |
|---|---:|---:|---|
{ck_rows}

Each folder loads with `moelab.load_model(path)`; `moelab.models.checkpoints()` lists them.

## Data and licences

Trained on `data/corpus/*/train.txt` (see `data/README.md` for sources and licences). Weights are
released under the project's licence (Apache-2.0).
"""
    out = model_dir / "README.md"
    out.write_text(card)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--tokens-per-domain", type=int, default=4096)
    a = p.parse_args(argv)
    print(write_card(a.model_dir, a.tokens_per_domain))


if __name__ == "__main__":
    main()
