"""Pure routing transforms on a router's `(logits, weights, index)`: no model, no hooks.

Every function takes the tensors one router returns (transformers 5.x)

    logits   (tokens, E)   pre-softmax scores, model dtype
    weights  (tokens, k)   mixing weights (fp32 for Mixtral, model dtype for Qwen/OLMoE/PhiMoE)
    index    (tokens, k)   chosen experts, rank 0 = highest weight

and a `RouterSpec` saying how the architecture turns logits into (weights, index), and returns new
tensors. `select` recomputes the choice exactly as the architecture's router does (same ops, same
order, same dtypes), so an unmodified recomputation is bitwise equal to what the router returned:

* mixtral: softmax(logits.float()) -> top-k -> renormalise (always); weights stay fp32
* qwen2_moe / qwen3_moe / olmoe: softmax(logits, dtype=float) -> top-k -> renormalise if
  `norm_topk_prob` -> cast to the logits dtype
* phimoe: sparsemixer (Liu et al. 2024, arXiv:2409.12136), top-2 only, eval mode; its weights depend
  on its own choice, so operations that need "the weight the router would give expert e" raise
  `UnsupportedIntervention` naming the architecture and the operation.

    >>> import torch
    >>> spec = RouterSpec("mixtral", num_experts=4, top_k=2, renormalise=True, cast_weights=False)
    >>> logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    >>> select(logits, spec)[1]                                  # (tokens, k)
    tensor([[0, 1]])
    >>> select(logits, spec, blocked=[0])[1]                     # route around expert 0
    tensor([[1, 2]])
    >>> skip(*select(logits, spec), beta=0.5, spec=spec)[0]      # 2nd weight 0.27 < 0.5 * 0.73: dropped
    tensor([[1., 0.]])

References: Lu et al. 2024, "Not All Experts are Equal" (dynamic skipping, arXiv:2402.14800);
SteerMoE (router-logit steering, arXiv:2509.09660); Ma et al. 2025 routing replay (R3, arXiv:2510.11370).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class InterventionError(ValueError):
    """An intervention was given input it cannot apply (the message quotes it)."""


class UnsupportedIntervention(InterventionError):
    """The architecture's router cannot express this operation, or moelab has not verified it there."""


# Architectures whose routers `select` reproduces bitwise (tests/test_intervene_ops.py) and whose
# interventions are tested end to end (tests/test_intervene.py). Any other architecture an adapter
# finds (moelab.adapters / moelab.arch) is refused, naming the architecture and the operation.
VERIFIED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe")


def check_verified(arch: str, operation: str) -> None:
    """Refuse `operation` on an architecture whose routing moelab has not verified."""
    if arch not in VERIFIED:
        raise UnsupportedIntervention(
            f"{arch}: {operation} is not verified for this architecture: moelab intervenes only where it has "
            f"checked that it reproduces the router bitwise ({', '.join(VERIFIED)}). Tracing works; to add "
            f"{arch}, give it a RouterSpec in moelab/interventions/ops.py and the tests of tests/test_intervene*.py")


@dataclass(frozen=True)
class RouterSpec:
    arch: str                 # adapter name, e.g. "mixtral"
    num_experts: int          # E
    top_k: int                # k the config declares
    renormalise: bool         # top-k weights divided by their sum
    cast_weights: bool        # weights cast back to the logits dtype (Qwen/OLMoE) or kept fp32 (Mixtral)
    sparsemixer: bool = False  # PhiMoE's sparsemixer instead of softmax -> top-k
    jitter_eps: float = 0.0   # sparsemixer's threshold parameter (config.router_jitter_noise)

    def unsupported(self, operation: str, why: str) -> UnsupportedIntervention:
        return UnsupportedIntervention(f"{self.arch}: {operation} cannot be expressed for this architecture: {why}")


def spec_from_config(adapter, config) -> RouterSpec:
    """The RouterSpec of an adapter (moelab.adapters) for a model config."""
    arch = adapter.name
    return RouterSpec(
        arch=arch, num_experts=adapter.num_experts(config), top_k=adapter.top_k(config),
        renormalise=adapter.is_renormalised(config), cast_weights=arch != "mixtral",
        sparsemixer=arch == "phimoe", jitter_eps=float(getattr(config, "router_jitter_noise", 0.0) or 0.0),
    )


def check_expert(e, spec: RouterSpec, what: str) -> int:
    if isinstance(e, bool) or not isinstance(e, (int,)) and not (torch.is_tensor(e) and e.ndim == 0):
        raise InterventionError(f"{what}={e!r}: expert ids are integers 0..{spec.num_experts - 1}")
    e = int(e)
    if not 0 <= e < spec.num_experts:
        raise InterventionError(f"{what}: expert {e} does not exist; this model has experts "
                                f"0..{spec.num_experts - 1} (num_experts={spec.num_experts})")
    return e


def check_k(k, spec: RouterSpec, available: int | None = None) -> int:
    E = spec.num_experts
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= E:
        raise InterventionError(f"top_k={k!r}: k must be an integer from 1 to num_experts={E}")
    if available is not None and k > available:
        raise InterventionError(f"top_k={k} but only {available} experts are left after ablation; "
                                "ablate fewer experts or lower k")
    if spec.sparsemixer and k != 2:
        raise spec.unsupported(f"top_k={k}", "sparsemixer selects exactly 2 experts (top-2 only)")
    return k


def _renorm(v: torch.Tensor) -> torch.Tensor:
    v /= v.sum(dim=-1, keepdim=True)  # in place, as the routers do (bitwise the same result)
    return v


def shift(num_experts: int, bias=None, blocked=None, device=None) -> torch.Tensor | None:
    """The (E,) fp32 vector `select` adds to the logits: `bias`, and -inf at the `blocked` experts.

    Precomputed once per block (adding 0.0 is exact, so a zero shift changes nothing bitwise).
    """
    if bias is None and not blocked:
        return None
    v = torch.zeros(num_experts) if bias is None else torch.as_tensor(bias, dtype=torch.float32).clone()
    if blocked:
        v[_ids(blocked, "cpu")] = float("-inf")
    return v.to(device) if device is not None else v


def select(logits: torch.Tensor, spec: RouterSpec, k: int | None = None, *, bias: torch.Tensor | None = None,
           blocked=None, shifted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The architecture's (weights, index) for `logits` (+ `bias`), top-`k`, never choosing `blocked`.

    Blocked experts get logit -inf before the softmax: the router picks the next best and the
    weights are whatever the architecture makes of the remaining logits (renormalised or not).
    `shifted`: a precomputed `shift(...)` vector (E,) or a per-token (tokens, E) one, instead of
    bias / blocked.
    """
    k = spec.top_k if k is None else k
    if shifted is None:
        shifted = shift(spec.num_experts, bias, blocked, logits.device)
    if spec.sparsemixer:
        from transformers.models.phimoe.modeling_phimoe import sparsemixer

        scores = logits if shifted is None else logits + shifted.to(logits.dtype)
        return sparsemixer(scores, jitter_eps=spec.jitter_eps, training=False, top_k=2)
    scores = logits.float()  # (tokens, E) fp32, like softmax(x.float()) / softmax(x, dtype=float)
    if shifted is not None:
        scores = scores + shifted
    probs = torch.nn.functional.softmax(scores, dim=-1)
    top_v, top_i = torch.topk(probs, k, dim=-1)  # (tokens, k)
    if spec.renormalise:
        _renorm(top_v)
    if spec.cast_weights:
        top_v = top_v.to(logits.dtype)
    return top_v, top_i


def weights_for(logits: torch.Tensor, index: torch.Tensor, spec: RouterSpec, operation: str = "force") -> torch.Tensor:
    """The weights the architecture gives the experts `index` (tokens, k) from `logits` (tokens, E).

    softmax over all E, gather, renormalise as the router does: for the router's own choice this
    is bitwise what it returned.
    """
    if spec.sparsemixer:
        raise spec.unsupported(f"{operation} without explicit weights",
                               "sparsemixer's weights depend on its own choice; pass weights= explicitly")
    probs = torch.nn.functional.softmax(logits.float(), dim=-1)
    v = probs.gather(-1, index.to(logits.device, torch.long))
    if spec.renormalise:
        _renorm(v)
    return v.to(logits.dtype) if spec.cast_weights else v


def zero(weights: torch.Tensor, index: torch.Tensor, experts) -> torch.Tensor:
    """Keep the choice, drop the experts' contribution: their weight becomes 0 (no renormalisation)."""
    ids = experts if torch.is_tensor(experts) else _ids(experts, index.device)  # precomputed by intervene
    return weights.masked_fill(torch.isin(index, ids), 0.0)


def skip(weights: torch.Tensor, index: torch.Tensor, beta: float, spec: RouterSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic skipping (Lu et al. 2024): rank r >= 1 is dropped when w_r < beta * w_0.

    The dropped weight becomes 0 and the rest are renormalised when the architecture renormalises
    (Mixtral top-2: the kept expert gets weight 1). The ratio test is the same before or after
    renormalisation. Returns (weights, kept) with kept (tokens, k) bool.
    """
    if not 0.0 <= float(beta) <= 1.0:
        raise InterventionError(f"skip beta={beta!r}: beta is a ratio in [0, 1] (0 = never skip, 1 = always top-1)")
    if weights.shape[-1] < 2:
        return weights, torch.ones_like(weights, dtype=torch.bool)
    kept = torch.ones_like(weights, dtype=torch.bool)
    kept[:, 1:] = ~(weights[:, 1:].float() < beta * weights[:, :1].float())
    w = weights.masked_fill(~kept, 0.0)
    if spec.renormalise:  # tokens that keep every expert keep their weights bitwise (no host sync)
        w = torch.where(kept.all(-1, keepdim=True), weights, (w.float() / w.float().sum(-1, keepdim=True)).to(w.dtype))
    return w, kept


def active_experts(weights: torch.Tensor) -> torch.Tensor:
    """(tokens,) number of experts that contribute (nonzero weight): the effective k per token."""
    return (weights != 0).sum(-1)


def _ids(experts, device) -> torch.Tensor:
    return torch.as_tensor(sorted(int(e) for e in experts), dtype=torch.long, device=device)
