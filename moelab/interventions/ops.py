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
* qwen3_next / flex_olmo / lara_mini / mellum: the same router code as qwen3_moe (same rule)
* phimoe: sparsemixer (Liu et al. 2024, arXiv:2409.12136), top-2 only, eval mode; its weights depend
  on its own choice, so operations that need "the weight the router would give expert e" raise
  `UnsupportedIntervention` naming the architecture and the operation.
* deepseek_v3 / glm4_moe / dots1 and the 13 other adapters running DeepseekV3TopkRouter's code
  (`_SIGMOID`; scoring "sigmoid"): fp32 logits -> sigmoid scores; the choice is
  made on scores + e_score_correction_bias (the router's buffer, selection only), limited to the
  `topk_group` best of `n_group` groups (group score: sum of its 2 highest), top-k unsorted; the
  weights are the chosen *unbiased* scores, divided by (their sum + 1e-20) if `norm_topk_prob`,
  times `routed_scaling_factor`; fp32. Dynamic skipping is refused there (no rank-0 reference).
* gpt_oss / granitemoe (+ granitemoeshared, granitemoehybrid, granitemoe_swa; scoring "softmax_topk"): top-k of the raw logits, weights = softmax over
  the k chosen logits (gpt_oss: in the logits' dtype; granitemoe: fp32 logits, weights cast to the
  hidden dtype: `dtype=` gives the dtype the router returned).

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
VERIFIED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe",
            # the qwen3_moe router, verbatim (softmax -> top-k -> norm_topk_prob -> logits dtype)
            "qwen3_next", "flex_olmo", "lara_mini", "mellum",
            # DeepseekV3TopkRouter's forward (_SIGMOID), and softmax over the k chosen logits (_SOFTMAX_TOPK)
            "deepseek_v3", "glm4_moe", "dots1", "mimo_v2_flash", "nemotron_h", "axk1", "sarvam_mla", "bailing_hybrid",
            "kimi_linear", "exaone_moe", "glm4_moe_lite", "solar_open", "deepseek_v32", "glm_moe_dsa", "hy_v4",
            "dots3_note",
            "gpt_oss", "granitemoe", "granitemoeshared", "granitemoehybrid", "granitemoe_swa")

# The batched studies (sweep.py's ablation_sweep, studies.py's bias_sweep) call `select` on stacked copies
# without the router module (no selection bias) and rely on which tokens an ablation can change: verified on these.
STUDY_VERIFIED = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe")
STUDIES = ("ablation_sweep", "bias_sweep")


def check_verified(arch: str, operation: str) -> None:
    """Refuse `operation` on an architecture whose routing moelab has not verified."""
    if operation in STUDIES and arch in VERIFIED and arch not in STUDY_VERIFIED:
        raise UnsupportedIntervention(
            f"{arch}: {operation} is not verified for this architecture: the batched study is verified on "
            f"{', '.join(STUDY_VERIFIED)}; on {arch} run the same interventions one by one with "
            "moelab.intervene / moelab.interventions.score")
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
    scoring: str = "softmax"  # "softmax" (over all E) | "sigmoid" (DeepSeek-V3) | "softmax_topk" (GPT-OSS)
    groups: tuple[int, int] | None = None  # sigmoid: (n_group, topk_group), group score = sum of its top-2
    scaling: float = 1.0      # sigmoid: routed_scaling_factor, multiplies the weights
    selection_bias: bool = False  # sigmoid: the router's e_score_correction_bias is added for selection only

    def unsupported(self, operation: str, why: str) -> UnsupportedIntervention:
        return UnsupportedIntervention(f"{self.arch}: {operation} cannot be expressed for this architecture: {why}")


def spec_from_config(adapter, config) -> RouterSpec:
    """The RouterSpec of an adapter (moelab.adapters) for a model config."""
    arch = adapter.name
    if arch in _SIGMOID:
        n, kept = getattr(config, "n_group", None), getattr(config, "topk_group", None)
        return RouterSpec(
            arch=arch, num_experts=adapter.num_experts(config), top_k=adapter.top_k(config),
            renormalise=adapter.is_renormalised(config), cast_weights=False, scoring="sigmoid",
            groups=(int(n), int(kept)) if n is not None and kept is not None else None,
            scaling=float(config.routed_scaling_factor), selection_bias=True)
    if arch in _SOFTMAX_TOPK:   # the weights always sum to 1 (softmax over the k chosen)
        return RouterSpec(arch=arch, num_experts=adapter.num_experts(config), top_k=adapter.top_k(config),
                          renormalise=True, cast_weights=True, scoring="softmax_topk")
    return RouterSpec(
        arch=arch, num_experts=adapter.num_experts(config), top_k=adapter.top_k(config),
        renormalise=adapter.is_renormalised(config), cast_weights=arch != "mixtral",
        sparsemixer=arch == "phimoe", jitter_eps=float(getattr(config, "router_jitter_noise", 0.0) or 0.0),
    )


# DeepseekV3TopkRouter's forward, verbatim in transformers 5.24 (tests/test_intervene_arch.py checks each bitwise)
_SIGMOID = ("deepseek_v3", "glm4_moe", "dots1", "mimo_v2_flash", "nemotron_h", "axk1", "sarvam_mla", "bailing_hybrid",
            "kimi_linear", "exaone_moe", "glm4_moe_lite", "solar_open", "deepseek_v32", "glm_moe_dsa", "hy_v4",
            "dots3_note")
_SOFTMAX_TOPK = ("gpt_oss", "granitemoe", "granitemoeshared", "granitemoehybrid", "granitemoe_swa")


def group_capacity(spec: RouterSpec, blocked=()) -> int | None:
    """The fewest experts a grouped router can still choose from, whichever groups it keeps (None: no groups).

    Blocked experts score -inf for selection, so a group with fewer than 2 left scores -inf (its score
    is the sum of its 2 best). 0 when fewer than `topk_group` groups keep 2 experts: the router would
    then pick among -inf groups by tie order, which has no defined meaning, so `intervene` refuses it.
    """
    if spec.groups is None:
        return None
    n, kept = spec.groups
    size = spec.num_experts // n
    left = [size - sum(1 for e in set(blocked) if g * size <= e < (g + 1) * size) for g in range(n)]
    finite = sorted(a for a in left if a >= 2)
    return sum(finite[:kept]) if len(finite) >= kept else 0


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
    cap = group_capacity(spec)
    if cap is not None and k > cap:
        n, kept = spec.groups
        raise InterventionError(f"top_k={k}: the router keeps only topk_group={kept} of n_group={n} groups of "
                                f"{spec.num_experts // n} experts, so it can choose at most {cap}; use k <= {cap}")
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
           blocked=None, shifted: torch.Tensor | None = None, selection_bias: torch.Tensor | None = None,
           dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The architecture's (weights, index) for `logits` (+ `bias`), top-`k`, never choosing `blocked`.

    Blocked experts get logit -inf before the softmax: the router picks the next best and the
    weights are whatever the architecture makes of the remaining logits (renormalised or not).
    `shifted`: a precomputed `shift(...)` vector (E,) or a per-token (tokens, E) one, instead of
    bias / blocked. `selection_bias`: the router's (E,) e_score_correction_bias (sigmoid routers).
    `dtype`: the dtype the router returned its weights in (default: the architecture's rule).
    """
    k = spec.top_k if k is None else k
    if shifted is None:
        shifted = shift(spec.num_experts, bias, blocked, logits.device)
    if spec.scoring == "sigmoid":
        return _select_sigmoid(logits, spec, k, shifted, selection_bias)
    if spec.scoring == "softmax_topk":
        return _select_softmax_topk(logits, k, shifted, dtype)
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
    return (top_v if dtype is None else top_v.to(dtype)), top_i


def _select_sigmoid(logits, spec: RouterSpec, k: int, shifted, selection_bias):
    """DeepseekV3TopkRouter.forward after its linear, op for op (so the unmodified result is bitwise equal)."""
    router_logits = logits if shifted is None else logits + shifted.to(logits.device)   # (tokens, E) fp32
    scores = router_logits.sigmoid()
    scores_for_choice = scores if selection_bias is None else scores + selection_bias
    if shifted is not None:  # a blocked expert is never chosen, whatever its selection bias
        scores_for_choice = scores_for_choice.masked_fill(torch.isneginf(shifted).to(logits.device), float("-inf"))
    E = spec.num_experts
    if spec.groups is not None:
        n, kept = spec.groups
        group_scores = scores_for_choice.view(-1, n, E // n).topk(2, dim=-1)[0].sum(dim=-1)   # (tokens, n)
        group_idx = torch.topk(group_scores, k=kept, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, n, E // n).reshape(-1, E)
        scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), float("-inf"))
    topk_indices = torch.topk(scores_for_choice, k=k, dim=-1, sorted=False)[1]   # (tokens, k), unsorted
    return _sigmoid_weights(scores, topk_indices, spec), topk_indices


def _sigmoid_weights(scores, index, spec: RouterSpec):
    topk_weights = scores.gather(1, index)
    if spec.renormalise:
        denominator = topk_weights.sum(dim=-1, keepdim=True) + 1e-20
        topk_weights /= denominator
    return topk_weights * spec.scaling


def _select_softmax_topk(logits, k: int, shifted, dtype):
    """GptOssTopKRouter / GraniteMoeTopKRouter: top-k of the logits, softmax over the k chosen."""
    if shifted is None:
        top_v, top_i = torch.topk(logits, k, dim=-1)                      # (tokens, k), sorted
    else:   # steered / blocked logits, rounded back to the logits' dtype as if the router had produced them
        top_v, top_i = torch.topk(logits.float() + shifted.to(logits.device), k, dim=-1)
        top_v = top_v.to(logits.dtype)
    w = torch.nn.functional.softmax(top_v, dim=-1, dtype=top_v.dtype)
    return (w if dtype is None else w.to(dtype)), top_i


def weights_for(logits: torch.Tensor, index: torch.Tensor, spec: RouterSpec, operation: str = "force",
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """The weights the architecture gives the experts `index` (tokens, k) from `logits` (tokens, E).

    softmax over all E, gather, renormalise as the router does: for the router's own choice this
    is bitwise what it returned. Sigmoid routers: the chosen sigmoid scores (no selection bias),
    renormalised if norm_topk_prob, times routed_scaling_factor. softmax_topk: softmax over the
    chosen logits. `dtype`: the dtype the router returns its weights in (default: the rule's).
    """
    if spec.sparsemixer:
        raise spec.unsupported(f"{operation} without explicit weights",
                               "sparsemixer's weights depend on its own choice; pass weights= explicitly")
    index = index.to(logits.device, torch.long)
    if spec.scoring == "sigmoid":
        return _sigmoid_weights(logits.sigmoid(), index, spec)
    if spec.scoring == "softmax_topk":
        v = logits.gather(-1, index)
        w = torch.nn.functional.softmax(v, dim=-1, dtype=v.dtype)
        return w if dtype is None else w.to(dtype)
    probs = torch.nn.functional.softmax(logits.float(), dim=-1)
    v = probs.gather(-1, index)
    if spec.renormalise:
        _renorm(v)
    v = v.to(logits.dtype) if spec.cast_weights else v
    return v if dtype is None else v.to(dtype)


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
    if spec.scoring == "sigmoid":
        raise spec.unsupported(f"skip beta={beta}", "dynamic skipping compares each weight with the top-1 weight of a "
                               "softmax router; this router returns independent sigmoid scores, unsorted (rank 0 is not "
                               "the highest) and, with norm_topk_prob=False, not normalised, so the rule has no "
                               "defined meaning here. Use top_k= or ablate= instead")
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
