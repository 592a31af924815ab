"""Train the embedded default model: a small Mixtral on moelab's multi-domain corpus.

    $ moelab train --out data/models/moelab-mixtral-tiny               # ~25 min on 2 CPU cores
    $ python -m moelab.tools.train --preset smoke --out /tmp/smoke     # seconds, for tests

The model is `transformers.MixtralForCausalLM` (top-2 of 8 SwiGLU experts per
layer, GQA attention, RoPE, RMSNorm) with Mixtral 8x7B's tokenizer (32,000
pieces), trained from scratch with next-token cross-entropy plus a router
load-balancing loss of weight `aux_loss_coef`, chosen by `balance`:

  "per_layer"  `switch_balance_loss`: the Switch loss E·Σᵢ fᵢ·Pᵢ computed for each
               MoE layer from that layer's router logits, averaged over layers
               (Fedus et al. 2021 eq. 4 applied per layer, as in Switch, GShard,
               Mixtral's training and Megatron-Core). The default.
  "pooled"     transformers' `load_balancing_loss_func`: counts and probabilities
               summed over all layers *before* the product, so it balances the
               pooled load and a layer may collapse while another compensates
               (how `moelab-mixtral-tiny-pooled` was trained).

Each step samples `batch_size` windows of `seq_len` tokens, domains drawn
uniformly so that every domain is seen equally often.

Saved next to the final weights: `checkpoints/step-XXXXXX/` (same format, for
the router-saturation study of OLMoE §5), `training_log.csv` (loss, aux loss,
tokens/s per step), `eval.json` (held-out perplexity per domain and a unigram
baseline), and `checkpoints.json` (step, tokens seen, loss of each checkpoint).

References: Jiang et al. 2024 (Mixtral); Fedus et al. 2021 (Switch, aux loss);
Muennighoff et al. 2024 (OLMoE, router saturation).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


@dataclass
class TrainConfig:
    # model (transformers MixtralConfig fields)
    hidden_size: int = 128
    intermediate_size: int = 256          # per expert (SwiGLU)
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2          # GQA
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    tie_word_embeddings: bool = True      # halves the 32k x hidden embedding cost
    max_position_embeddings: int = 1024
    # optimisation
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 600                      # the shipped model: 600 x 16 x 256 = 2.46M tokens
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.1
    aux_loss_coef: float = 0.02           # Mixtral's router_aux_loss_coef
    balance: str = "per_layer"            # "per_layer" (Switch loss per layer) | "pooled" (transformers')
    grad_clip: float = 1.0
    seed: int = 0
    experts_implementation: str = "grouped_mm"  # fastest on CPU here (~4.5x eager)
    # checkpoints: fractions of `steps` at which to save (the final step is always saved)
    checkpoint_fractions: tuple[float, ...] = (0.01, 0.04, 0.12, 0.3, 0.6)
    eval_tokens: int = 20000              # held-out tokens per domain for perplexity
    domains: list[str] | None = None      # None = every corpus domain
    threads: int | None = None

    def model_config(self):
        from transformers import MixtralConfig

        from ..data import load_tokenizer

        tok = load_tokenizer()
        return MixtralConfig(
            vocab_size=tok.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            num_local_experts=self.num_local_experts,
            num_experts_per_tok=self.num_experts_per_tok,
            tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            router_aux_loss_coef=self.aux_loss_coef,
            output_router_logits=False,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            sliding_window=None,
        )


BALANCE_LOSSES = ("per_layer", "pooled")

PRESETS = {
    "default": {},
    # today's second model: the same recipe with transformers' pooled loss (data/models/moelab-mixtral-tiny-pooled)
    "pooled": dict(balance="pooled"),
    # a few steps of a much smaller model: used by the test suite so the training code cannot rot
    "smoke": dict(hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, seq_len=32, batch_size=4, steps=6, warmup=2,
                  checkpoint_fractions=(0.5,), eval_tokens=256, domains=["code", "fiction"]),
}


# ----------------------------------------------------------------------------- data
def tokenize_split(split: str, domains=None, max_tokens: int | None = None) -> dict[str, np.ndarray]:
    """{domain: int32 token stream}, BOS before every document."""
    from ..data import load_documents, load_tokenizer

    tok = load_tokenizer()
    out = {}
    for d, docs in load_documents(split, domains).items():
        ids, n = [], 0
        for doc in docs:
            piece = tok.encode(doc)
            ids.append(piece)
            n += len(piece)
            if max_tokens and n >= max_tokens:
                break
        stream = np.concatenate([np.asarray(x, np.int32) for x in ids])
        out[d] = stream[:max_tokens] if max_tokens else stream
    return out


def sample_batch(streams: dict[str, np.ndarray], batch: int, seq_len: int, rng: np.random.Generator) -> torch.Tensor:
    names = sorted(streams)
    rows = []
    for d in rng.choice(names, size=batch):
        s = streams[d]
        start = rng.integers(0, len(s) - seq_len - 1)
        rows.append(s[start: start + seq_len])
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, p)))


# ----------------------------------------------------------------------------- balance loss
def switch_balance_loss(router_logits, top_k: int) -> torch.Tensor:
    """Switch load-balancing loss per MoE layer, averaged over layers (a scalar tensor).

        >>> lg = torch.zeros(4, 8)                                    # (tokens, experts): uniform probs
        >>> float(switch_balance_loss((lg, lg), top_k=2))             # ties go to experts 0, 1
        2.0

    router_logits  one (tokens, E) tensor per layer (`output_router_logits=True`)
    For layer l: E · Σᵢ fᵢ · Pᵢ with fᵢ = (top-k assignments to i) / tokens and
    Pᵢ = mean router probability of i (Fedus et al. 2021 eq. 4; fᵢ counts every
    top-k slot, transformers' convention, so a balanced layer gives k and the
    coefficient means the same as for `load_balancing_loss_func`). The gradient
    flows through Pᵢ only. Equals `moelab.metrics.balance(trace)["hf_aux"].mean()`
    on a trace of the same tokens; transformers' pooled loss equals it only when
    every layer has the same load.
    """
    if isinstance(router_logits, torch.Tensor):
        router_logits = (router_logits,)
    if not router_logits:
        raise ValueError("switch_balance_loss got no router logits; run the model with output_router_logits=True")
    losses = []
    for lg in router_logits:                                      # (tokens, E)
        if lg.dim() != 2:
            raise ValueError(f"router logits must be (tokens, experts) per layer, got shape {tuple(lg.shape)}")
        E = lg.shape[-1]
        p = torch.softmax(lg.float(), dim=-1)                     # (tokens, E)
        idx = torch.topk(p, top_k, dim=-1).indices                # (tokens, k)
        f = torch.zeros(E, device=p.device).index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), device=p.device))
        f = f / p.shape[0]                                        # (E,) sums to k
        losses.append(E * (f * p.mean(0)).sum())
    return torch.stack(losses).mean()


def balance_loss(router_logits, num_experts: int, top_k: int, kind: str) -> torch.Tensor:
    """The aux loss of `TrainConfig.balance`: "per_layer" or "pooled" (transformers')."""
    if kind == "per_layer":
        return switch_balance_loss(router_logits, top_k)
    if kind == "pooled":
        from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

        return load_balancing_loss_func(tuple(router_logits), num_experts, top_k)
    raise ValueError(f"balance={kind!r} is not a balance loss; use one of {BALANCE_LOSSES}")


# ----------------------------------------------------------------------------- eval
@torch.no_grad()
def heldout_perplexity(model, streams: dict[str, np.ndarray], seq_len: int, batch: int = 8) -> dict[str, float]:
    """Per-domain perplexity on non-overlapping windows (next-token cross-entropy, no aux loss)."""
    model.eval()
    out = {}
    for d, s in streams.items():
        n = (len(s) - 1) // seq_len
        windows = np.stack([s[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)]).astype(np.int64)
        nll, count = 0.0, 0
        for i in range(0, n, batch):
            w = torch.from_numpy(windows[i: i + batch])
            logits = model(w[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                                     reduction="sum")
            nll += loss.item()
            count += w[:, 1:].numel()
        out[d] = math.exp(nll / count)
    return out


def unigram_perplexity(train: dict[str, np.ndarray], heldout: dict[str, np.ndarray], vocab: int) -> dict[str, float]:
    """Add-one-smoothed unigram model fitted on the pooled training tokens (the baseline to beat)."""
    counts = np.ones(vocab, np.float64)
    for s in train.values():
        counts += np.bincount(s, minlength=vocab)
    logp = np.log(counts / counts.sum())
    return {d: float(math.exp(-logp[s[1:]].mean())) for d, s in heldout.items()}


def mixed(ppl: dict[str, float], streams: dict[str, np.ndarray]) -> float:
    """Perplexity of the union of the domains' held-out tokens (token-weighted mean of log-ppl)."""
    n = {d: len(s) - 1 for d, s in streams.items()}
    return math.exp(sum(math.log(ppl[d]) * n[d] for d in ppl) / sum(n.values()))


# ----------------------------------------------------------------------------- train
def save_checkpoint(model, out: Path, dtype=torch.bfloat16) -> None:
    """`save_pretrained` of a bf16 copy (the fp32 master weights keep training)."""
    snap = copy.deepcopy(model).to(dtype)
    snap.save_pretrained(out, safe_serialization=True)


def train(cfg: TrainConfig, out: Path, progress: bool = True) -> dict:
    from transformers import MixtralForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.balance not in BALANCE_LOSSES:
        raise ValueError(f"TrainConfig.balance={cfg.balance!r}; use one of {BALANCE_LOSSES}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    train_streams = tokenize_split("train", cfg.domains)
    heldout_streams = tokenize_split("heldout", cfg.domains, max_tokens=cfg.eval_tokens + 1)
    mcfg = cfg.model_config()
    model = MixtralForCausalLM._from_config(mcfg, dtype=torch.float32)
    model.set_experts_implementation(cfg.experts_implementation)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    ckpt_steps = sorted({max(1, round(f * cfg.steps)) for f in cfg.checkpoint_fractions} - {cfg.steps})
    log_path = out / "training_log.csv"
    checkpoints, tokens_seen = [], 0
    with open(log_path, "w", newline="") as f:
        log = csv.writer(f)
        # aux_loss is the loss trained on; aux_per_layer / aux_pooled are both values (one is the same number)
        log.writerow(["step", "lr", "loss", "ce_loss", "aux_loss", "aux_per_layer", "aux_pooled",
                      "tokens_seen", "tokens_per_s"])
        bar = tqdm(range(1, cfg.steps + 1), desc="train", disable=not progress)
        t_start = time.perf_counter()
        for step in bar:
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr_at(step - 1, cfg)
            x = sample_batch(train_streams, cfg.batch_size, cfg.seq_len, rng)  # (batch, seq_len)
            outp = model(x, output_router_logits=True)            # no labels: the loss is ours
            logits = outp.logits[:, :-1].float()                  # (batch, seq_len - 1, vocab)
            ce_t = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            E, k = mcfg.num_local_experts, mcfg.num_experts_per_tok
            aux_t = balance_loss(outp.router_logits, E, k, cfg.balance)
            loss_t = ce_t + cfg.aux_loss_coef * aux_t
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            dt = time.perf_counter() - t0
            n = cfg.batch_size * cfg.seq_len
            tokens_seen += n
            with torch.no_grad():
                rl = tuple(r.detach() for r in outp.router_logits)
                aux_pl = float(balance_loss(rl, E, k, "per_layer"))
                aux_po = float(balance_loss(rl, E, k, "pooled"))
            aux, ce = float(aux_t.detach()), float(ce_t.detach())
            log.writerow([step, f"{lr_at(step - 1, cfg):.3e}", f"{float(loss_t.detach()):.4f}", f"{ce:.4f}",
                          f"{aux:.4f}", f"{aux_pl:.4f}", f"{aux_po:.4f}", tokens_seen, f"{n / dt:.0f}"])
            bar.set_postfix(loss=f"{ce:.3f}", aux=f"{aux:.3f}", tok_s=f"{n / dt:.0f}")
            if step in ckpt_steps or step == cfg.steps:
                f.flush()
                sub = out if step == cfg.steps else out / "checkpoints" / f"step-{step:06d}"
                save_checkpoint(model, sub)
                checkpoints.append({"step": step, "tokens_seen": tokens_seen, "ce_loss": round(ce, 4),
                                    "path": str(sub.relative_to(out)) if sub != out else "."})
                model.train()

    train_seconds = time.perf_counter() - t_start
    model.eval()
    ppl = heldout_perplexity(model, heldout_streams, cfg.seq_len)
    uni = unigram_perplexity(train_streams, heldout_streams, mcfg.vocab_size)
    result = {
        "heldout_perplexity": ppl,
        "unigram_perplexity": uni,
        "mixed_heldout_perplexity": mixed(ppl, heldout_streams),
        "mixed_unigram_perplexity": mixed(uni, heldout_streams),
        "train_tokens": {d: int(len(s)) for d, s in train_streams.items()},
        "eval_tokens_per_domain": {d: int(len(s) - 1) for d, s in heldout_streams.items()},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "tokens_seen": tokens_seen,
        "balance": cfg.balance,
        "train_seconds": round(train_seconds, 1),          # wall time of the training loop (incl. checkpoints)
        "torch_threads": torch.get_num_threads(),
    }
    result["unigram_over_model"] = result["mixed_unigram_perplexity"] / result["mixed_heldout_perplexity"]
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    (out / "checkpoints.json").write_text(json.dumps(checkpoints, indent=2))
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (final weights + checkpoints/)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--aux-loss-coef", type=float)
    p.add_argument("--balance", choices=BALANCE_LOSSES)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    cfg = TrainConfig(**PRESETS[a.preset])
    for k in ("steps", "batch_size", "warmup", "aux_loss_coef", "balance", "seed", "threads"):
        if getattr(a, k) is not None:
            setattr(cfg, k, getattr(a, k))
    res = train(cfg, Path(a.out))
    print(json.dumps({k: v for k, v in res.items() if "perplexity" in k or k == "unigram_over_model"}, indent=2))


if __name__ == "__main__":
    main()
