"""The collapse lesson, trained from scratch in seconds: a toy MoE and three balance losses.

    >>> from moelab.toy import ToyConfig, train_toy
    >>> run = train_toy("per_layer", ToyConfig(steps=5))
    >>> run.loads.shape                                      # (steps, layers, experts): share of assignments
    (5, 2, 4)

A toy classifier with `num_layers` residual MoE layers (Mixtral routing: softmax, top-k,
renormalised weights; each expert a small SiLU MLP) learns the cluster label of Gaussian
tokens. It is trained three ways from the same initialisation and data:

none       cross-entropy only: nothing asks the router to spread tokens
per_layer  + coef · mean over layers of the Switch loss E Σᵢ fᵢ Pᵢ of each layer
           (Fedus et al. 2022; what Switch, Megatron-Core and moelab's training use)
pooled     + coef · transformers' `load_balancing_loss_func`, which sums counts and
           probabilities over all layers before multiplying: it balances the pooled load

The initialisation gives each layer a router bias towards a different group of experts
(`favour`): layer 0 prefers experts 0, 1 and layer 1 experts 2, 3. Each layer is
unbalanced, yet the pooled counts are even, so the pooled loss is already near its minimum
(k) and has almost nothing to push against; the per-layer loss sees each layer's imbalance
and removes it. `ToyRun.loads` (steps, layers, experts) is what a small-multiple heatmap
plots (`moelab.plots.teaching.toy_load_heatmaps`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ToyConfig", "ToyRun", "ToyMoE", "switch_loss", "per_layer_balance_loss", "pooled_balance_loss",
           "train_toy", "collapse_lesson", "synthetic_routers", "BALANCE_MODES"]

BALANCE_MODES = ("none", "per_layer", "pooled")


@dataclass(frozen=True)
class ToyConfig:
    num_layers: int = 2
    num_experts: int = 4
    top_k: int = 2
    dim: int = 16                 # token vector size
    hidden: int = 32              # each expert's MLP width
    clusters: int = 8             # classes of the task: which Gaussian cluster a token comes from
    noise: float = 1.0            # within-cluster standard deviation (cluster centres have norm ~ 4)
    steps: int = 100
    batch: int = 256
    lr: float = 1e-2
    coef: float = 0.1             # weight of the balance loss
    favour: float = 2.0           # router-bias head start of each layer's favourite experts at init
    seed: int = 0


@dataclass
class ToyRun:
    mode: str
    config: ToyConfig
    loads: np.ndarray             # (steps, layers, experts): share of the step's top-k assignments
    ce: np.ndarray                # (steps,) cross-entropy
    per_layer_aux: np.ndarray     # (steps, layers) Switch loss of each layer (k = balanced)
    pooled_aux: np.ndarray        # (steps,) transformers' pooled loss (k = balanced)
    accuracy: float               # on a fresh batch after training

    def cv(self) -> np.ndarray:
        """Coefficient of variation of the final load per layer, (layers,): 0 = balanced."""
        last = self.loads[-1]
        return last.std(-1) / last.mean(-1)


class ToyMoE(nn.Module):
    """Residual MoE layers over token vectors; `forward` returns (class logits, router logits per layer)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        E, d, h = cfg.num_experts, cfg.dim, cfg.hidden
        self.routers = nn.ModuleList(nn.Linear(d, E) for _ in range(cfg.num_layers))
        self.w_in = nn.Parameter(torch.randn(cfg.num_layers, E, d, h) / d ** 0.5)     # (layers, E, d, h)
        self.w_out = nn.Parameter(torch.randn(cfg.num_layers, E, h, d) / h ** 0.5)    # (layers, E, h, d)
        self.head = nn.Linear(d, cfg.clusters)
        with torch.no_grad():
            for l, r in enumerate(self.routers):
                r.weight.mul_(0.1)
                fav = (np.arange(E) // max(1, E // cfg.num_layers)) % cfg.num_layers == l % cfg.num_layers
                r.bias.copy_(torch.as_tensor(np.where(fav, cfg.favour, 0.0), dtype=torch.float32))

    def forward(self, x):                                             # x (tokens, d)
        router_logits = []
        for l, router in enumerate(self.routers):
            logits = router(x)                                        # (tokens, E)
            probs = logits.softmax(-1)
            top_p, top_i = probs.topk(self.cfg.top_k, -1)             # (tokens, k)
            w = top_p / top_p.sum(-1, keepdim=True)                   # Mixtral: renormalised
            h = F.silu(torch.einsum("td,tkdh->tkh", x, self.w_in[l][top_i]))
            y = torch.einsum("tkh,tkhd->tkd", h, self.w_out[l][top_i])
            x = x + torch.einsum("tkd,tk->td", y, w)
            router_logits.append(logits)
        return self.head(x), tuple(router_logits)


def switch_loss(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """E Σᵢ fᵢ Pᵢ of one layer, transformers' convention (fᵢ counts top-k assignments per token, so
    the minimum at perfect balance is k): fᵢ = assignments to i / tokens, Pᵢ = mean router probability."""
    E = logits.shape[-1]
    probs = logits.float().softmax(-1)                                # (tokens, E)
    top_i = probs.topk(top_k, -1).indices                             # (tokens, k)
    f = F.one_hot(top_i, E).float().sum(1).mean(0)                    # (E,)
    return E * (f * probs.mean(0)).sum()


def per_layer_balance_loss(router_logits, top_k: int) -> torch.Tensor:
    """Mean over layers of each layer's `switch_loss`."""
    return torch.stack([switch_loss(lg, top_k) for lg in router_logits]).mean()


def pooled_balance_loss(router_logits, top_k: int) -> torch.Tensor:
    """Counts and probabilities summed over all layers first, then multiplied (transformers'
    `load_balancing_loss_func`): equal to `switch_loss` of all layers' logits stacked as tokens."""
    return switch_loss(torch.cat(list(router_logits), 0), top_k)


def _data(cfg: ToyConfig, gen: torch.Generator, centres: torch.Tensor, n: int):
    y = torch.randint(cfg.clusters, (n,), generator=gen)
    return centres[y] + cfg.noise * torch.randn(n, cfg.dim, generator=gen), y


def train_toy(mode: str = "per_layer", config: ToyConfig | None = None) -> ToyRun:
    """Train one ToyMoE with balance loss `mode` ("none", "per_layer", "pooled"); deterministic per seed."""
    if mode not in BALANCE_MODES:
        raise ValueError(f"mode={mode!r}: use one of {BALANCE_MODES}")
    cfg = config or ToyConfig()
    if not 1 <= cfg.top_k <= cfg.num_experts:
        raise ValueError(f"top_k={cfg.top_k} must lie in [1, num_experts={cfg.num_experts}]")
    gen = torch.Generator().manual_seed(cfg.seed)
    centres = 4 * torch.randn(cfg.clusters, cfg.dim, generator=gen) / cfg.dim ** 0.5 * 2
    torch.manual_seed(cfg.seed)
    model = ToyMoE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    L, E, k = cfg.num_layers, cfg.num_experts, cfg.top_k
    loads, ce_hist, per_hist, pooled_hist = np.zeros((cfg.steps, L, E)), [], [], []
    for step in range(cfg.steps):
        x, y = _data(cfg, gen, centres, cfg.batch)
        out, rl = model(x)
        ce = F.cross_entropy(out, y)
        per, pooled = per_layer_balance_loss(rl, k), pooled_balance_loss(rl, k)
        loss = ce + cfg.coef * {"none": 0.0, "per_layer": per, "pooled": pooled}[mode]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for l, lg in enumerate(rl):
                counts = torch.bincount(lg.topk(k, -1).indices.reshape(-1), minlength=E).float()
                loads[step, l] = (counts / counts.sum()).numpy()
            per_hist.append([switch_loss(lg, k).item() for lg in rl])
        ce_hist.append(ce.item())
        pooled_hist.append(pooled.item())
    with torch.no_grad():
        x, y = _data(cfg, gen, centres, 2048)
        acc = float((model(x)[0].argmax(-1) == y).float().mean())
    return ToyRun(mode, cfg, loads, np.array(ce_hist), np.array(per_hist), np.array(pooled_hist), acc)


def collapse_lesson(config: ToyConfig | None = None, modes=BALANCE_MODES) -> dict[str, ToyRun]:
    """The same toy trained with each balance loss in `modes`: {mode: ToyRun}, same init and data."""
    cfg = config or ToyConfig()
    return {m: train_toy(m, replace(cfg)) for m in modes}


def synthetic_routers(strengths=(0.0, 0.5, 1.0, 2.0, 4.0), num_experts: int = 8, top_k: int = 2,
                      tokens: int = 4096, seed: int = 0):
    """Notebook 01's synthetic routers, balanced to collapsed, as one RoutingTrace (a "layer" per strength).

        >>> t = synthetic_routers((0.0, 4.0), tokens=64)
        >>> t.experts.shape, t.logits.shape                  # (tokens, routers, k), (tokens, routers, E)
        ((64, 2, 2), (64, 2, 8))

    Logits are standard normal noise plus `strength` times a bias towards experts 0 and 1
    (favour 1.0, 0.9, then 0 down to -0.6 for the others); top-k by logit.
    """
    from .routing_trace import RoutingTrace

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(tokens, num_experts))                                  # (tokens, E)
    favour = np.r_[1.0, 0.9, -np.linspace(0.0, 0.6, num_experts - 2)]
    logits = np.stack([base + s * favour for s in strengths], 1).astype(np.float32)  # (tokens, routers, E)
    experts = np.argsort(-logits, -1, kind="stable")[..., :top_k]
    return RoutingTrace.from_arrays(experts, num_experts=num_experts, logits=logits)
