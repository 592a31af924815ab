"""Routing variants in a few lines of einsum each, checked against transformers where it has one.

    >>> import torch
    >>> from moelab.variants import softmax_topk, router_z_loss
    >>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])                  # (tokens, E)
    >>> w, idx = softmax_topk(logits, 2)                                # Mixtral: renormalised
    >>> idx.tolist(), round(float(w.sum()), 4)
    ([[0, 1]], 1.0)
    >>> round(float(softmax_topk(logits, 2, renormalize=False)[0].sum()), 4)   # OLMoE: not renormalised
    0.8808

Token choice vs expert choice
    softmax_topk     each token picks its top-k experts (Mixtral, OLMoE, Switch): loads can be
                     anything, so capacity limits drop tokens or a balance loss is needed
    expert_choice    each expert picks its top-C tokens (Zhou et al. 2022, "Mixture-of-Experts
                     with Expert Choice Routing"): every expert is exactly full, but a token
                     may get 0 or many experts
Renormalisation
    renormalize=True  (Mixtral) the k weights sum to 1: the layer's output scale does not
                     depend on how confident the router is
    renormalize=False (OLMoE) weights are the softmax probabilities over all E: a token whose
                     top-k hold little probability gets a small update
Shared + fine-grained experts (DeepSeekMoE, Dai et al. 2024; DeepSeek-V3)
    moe_forward(..., shared=...) adds always-on shared experts to many small routed ones
Sigmoid routing, aux-loss-free balancing (DeepSeek-V3, Liu et al. 2024, §2.1.2)
    sigmoid_topk     scores sigmoid(logits); a per-expert bias is added for *selection only*
                     (optionally group-limited); the weights use the unbiased scores
    update_balance_bias  after each step, bias −= γ for overloaded experts, += γ for underloaded
Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5)
    router_z_loss    mean over tokens of logsumexp(logits)²: keeps router logits small
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum

__all__ = ["softmax_topk", "sigmoid_topk", "update_balance_bias", "expert_choice", "experts_forward",
           "moe_forward", "expert_choice_forward", "router_z_loss"]


def softmax_topk(logits: torch.Tensor, k: int, renormalize: bool = True):
    """(weights (tokens, k), experts (tokens, k)): softmax over all E, keep the top k, renormalise or not."""
    probs = logits.float().softmax(-1)                                    # (tokens, E)
    w, idx = probs.topk(k, dim=-1)                                        # (tokens, k)
    return (w / w.sum(-1, keepdim=True) if renormalize else w), idx


def sigmoid_topk(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None, *, n_group: int = 1,
                 topk_group: int = 1, renormalize: bool = True, scale: float = 1.0):
    """DeepSeek-V3 routing: (weights (tokens, k), experts (tokens, k)).

    Selection uses sigmoid(logits) + bias, restricted to the `topk_group` groups (of `n_group`
    equal groups of experts) with the largest sum of their two best biased scores; the weights
    are the *unbiased* sigmoid scores of the selected experts, renormalised and times `scale`.
    """
    s = logits.float().sigmoid()                                          # (tokens, E)
    choice = s if bias is None else s + bias
    T, E = s.shape
    grouped = choice.view(T, n_group, E // n_group)                       # (tokens, groups, E/groups)
    best_groups = grouped.topk(min(2, E // n_group), -1).values.sum(-1).topk(topk_group, -1).indices
    keep = torch.zeros(T, n_group, dtype=torch.bool).scatter_(1, best_groups, True)
    choice = choice.masked_fill(~keep.repeat_interleave(E // n_group, 1), float("-inf"))
    idx = choice.topk(k, -1).indices                                      # (tokens, k)
    w = s.gather(1, idx)
    if renormalize:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return w * scale, idx


def update_balance_bias(bias: torch.Tensor, experts: torch.Tensor, rate: float = 1e-3) -> torch.Tensor:
    """DeepSeek-V3's aux-loss-free update: bias − rate·sign(load − mean load), from a step's experts (tokens, k)."""
    load = torch.bincount(experts.reshape(-1), minlength=bias.numel()).float()
    return bias - rate * torch.sign(load - load.mean())


def expert_choice(logits: torch.Tensor, capacity: int):
    """Expert choice: (weights (E, C), tokens (E, C)): each expert takes the C tokens with the largest
    softmax score for it (scores: softmax over experts, per token, as in Zhou et al. 2022)."""
    probs = logits.float().softmax(-1)                                    # (tokens, E)
    w, tok = probs.T.topk(int(capacity), dim=-1)                          # (E, C)
    return w, tok


def experts_forward(x, gate_up, down, idx, w, act=F.silu):
    """Σ_k w[t, k] · SwiGLU_{idx[t, k]}(x[t]) for x (tokens, H), gate_up (E, 2I, H), down (E, H, I)."""
    gu = einsum(x, gate_up[idx], "t h, t k i2 h -> t k i2")               # (tokens, k, 2I)
    g, u = gu.chunk(2, dim=-1)
    out = einsum(act(g) * u, down[idx], "t k i, t k h i -> t k h")        # (tokens, k, H)
    return einsum(out, w.to(out.dtype), "t k h, t k -> t h")


def moe_forward(x, router_weight, gate_up, down, route, shared=None):
    """A whole MoE block: logits = x W_gᵀ, (w, idx) = route(logits), routed experts, + shared(x).

    `route` is e.g. `lambda lg: softmax_topk(lg, 2, renormalize=False)` (OLMoE) or
    `lambda lg: sigmoid_topk(lg, 8, bias, n_group=8, topk_group=4, scale=2.5)` (DeepSeek-V3);
    `shared` a callable for the always-on shared experts (DeepSeekMoE), or None.
    """
    logits = einsum(x.float(), router_weight.float(), "t h, e h -> t e")  # (tokens, E)
    w, idx = route(logits)
    y = experts_forward(x, gate_up, down, idx, w)
    return y + shared(x) if shared is not None else y


def expert_choice_forward(x, router_weight, gate_up, down, capacity: int):
    """Expert-choice MoE block: every expert processes exactly `capacity` tokens; returns (y, tokens per
    expert count of each token (tokens,)). Tokens no expert picked get 0 (only the residual carries them)."""
    logits = einsum(x.float(), router_weight.float(), "t h, e h -> t e")
    w, tok = expert_choice(logits, capacity)                              # (E, C)
    xe = x[tok]                                                           # (E, C, H)
    g, u = einsum(xe, gate_up, "e c h, e i2 h -> e c i2").chunk(2, dim=-1)
    out = einsum(F.silu(g) * u, down, "e c i, e h i -> e c h") * w[..., None]
    y = torch.zeros_like(x).index_add_(0, tok.reshape(-1), out.reshape(-1, x.shape[-1]).to(x.dtype))
    return y, torch.bincount(tok.reshape(-1), minlength=x.shape[0])


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss, mean over tokens of (log Σ_e exp logit_e)²; logits (..., E).

        >>> round(float(router_z_loss(torch.zeros(3, 4))), 4)            # log 4 squared
        1.9218
    """
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
