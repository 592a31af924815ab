"""Selection scores: the per-expert numbers a router's top-k is taken on, bias included.

    >>> from moelab.arch import adapter_named
    >>> from moelab.arch.scores import selection_rule
    >>> from moelab.arch.tiny import tiny_config
    >>> rule = selection_rule(adapter_named("deepseek_v3"), tiny_config("deepseek_v3"))
    >>> rule.formula("e_score_correction_bias")
    'sigmoid(logits) + e_score_correction_bias'
    >>> rule.selection(k=2)
    'top-2 within the 1 best of 2 groups of experts (group score: sum of its 2 highest scores)'

`moelab.trace(model, scores=True)` records, per token and MoE layer, the (E,)
scores that the installed transformers' router runs its top-k on: the tensor
passed to `torch.topk` in the modeling file, *before* any group mask. Definition,
per architecture (`RULES` overrides what the adapter's `scoring` implies):

* softmax routers (Mixtral, Qwen, OLMoE, ...): softmax(logits) over all E
* sigmoid routers: sigmoid(logits); plus the selection bias where one is added
  for selection only (DeepSeek-V3 family: `e_score_correction_bias`; AFMoE and
  LFM2-MoE: `expert_bias` on the sparse block; Ernie 4.5: softmax +
  `moe_statics.e_score_correction_bias`)
* routers whose top-k runs on the raw logits (GPT-OSS, Granite MoE, Aria,
  Llama 4, Cohere2-MoE, PhiMoE's sparsemixer at inference): the logits; the
  weights are a function of the k chosen logits only (softmax_topk, sigmoid)
* Kolibri-1: logits + e_score_correction_bias (sigmoid comes after the choice)

The experts a model runs are then the top-k of the scores (as a set), within
the kept groups where the architecture limits groups (DeepSeek-V3 style: a
group's score is the sum of its 2 highest scores; DeepSeek-V2's
`group_limited_greedy`: its highest). Exception: PhiMoE in training mode samples
its experts (Gumbel), so only at inference is its choice the top-2 of the logits.

The bias is found generically: a float parameter or buffer whose name contains
"bias" and that holds E values, on the router (or a submodule of it that is not
a Linear) or on the router's parent block. Scores are float32, computed from the
router's own returned logits (LFM2-MoE: in the logits' dtype, as the model does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .base import Adapter, Router, UnsupportedModelError

GROUP_SCORES = {"top2_sum": "sum of its 2 highest scores", "max": "its highest score"}


@dataclass(frozen=True)
class SelectionRule:
    """How one architecture's selection scores are computed from its router logits (see the module docstring)."""

    fn: str                               # "softmax" | "sigmoid" | "logits" (identity)
    bias: bool = False                    # a per-expert bias added for selection only
    groups: tuple[int, int] | None = None  # (number of groups, groups kept per token)
    group_score: str = "top2_sum"         # how a group is scored: "top2_sum" | "max"
    in_logits_dtype: bool = False         # fn runs in the logits' dtype (else float32), as the model does
    note: str = ""                        # what else a reader should know (config fields, training mode)

    def formula(self, bias_name: str = "bias") -> str:
        base = "logits" if self.fn == "logits" else f"{self.fn}(logits)"
        return f"{base} + {bias_name}" if self.bias else base

    def selection(self, k: int) -> str:
        if self.groups is None:
            return f"top-{k}"
        n, kept = self.groups
        return (f"top-{k} within the {kept} best of {n} groups of experts "
                f"(group score: {GROUP_SCORES[self.group_score]})")


def _cfg(config, attr, default=None):
    v = getattr(config, attr, None)
    return default if v is None else v


def _deepseek_v2(a: Adapter, config) -> SelectionRule:
    limited = _cfg(config, "topk_method", "greedy") == "group_limited_greedy"
    return SelectionRule("softmax", groups=a.groups(config) if limited else None, group_score="max",
                         note=f"config.topk_method={_cfg(config, 'topk_method', 'greedy')!r}")


def _cohere2(a: Adapter, config) -> SelectionRule:
    fn = _cfg(config, "expert_selection_fn", "softmax")
    return SelectionRule("logits", note=f"top-k of the raw logits; config.expert_selection_fn={fn!r} is applied to "
                                        "the k chosen logits only (the weights)")


def _lfm2(a: Adapter, config) -> SelectionRule:
    return SelectionRule("sigmoid", bias=bool(_cfg(config, "use_expert_bias", False)), in_logits_dtype=True,
                         note=f"config.use_expert_bias={bool(_cfg(config, 'use_expert_bias', False))}")


_LOGITS_TOPK = "top-k of the raw logits; the weights are the softmax over the k chosen logits"

# per adapter name: the rule read off the installed modeling file, where the adapter's `scoring` is not enough
RULES = {
    "phimoe": lambda a, c: SelectionRule("logits", note="sparsemixer at inference picks the top-2 logits one by one; "
                                                        "in training mode it samples (Gumbel)"),
    "gpt_oss": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "granitemoe": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "granitemoeshared": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "granitemoehybrid": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "granitemoe_swa": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "aria": lambda a, c: SelectionRule("logits", note=_LOGITS_TOPK),
    "llama4": lambda a, c: SelectionRule("logits", note="top-k of the raw logits; the weights are their sigmoid"),
    "cohere2_moe": _cohere2,
    "kolibri1": lambda a, c: SelectionRule("logits", bias=True,
                                           note="the sigmoid is taken after the choice, on the k chosen logits"),
    "afmoe": lambda a, c: SelectionRule("sigmoid", bias=True),
    "lfm2_moe": _lfm2,
    "ernie4_5_moe": lambda a, c: SelectionRule("softmax", bias=True),
    "deepseek_v2": _deepseek_v2,
    "laguna": lambda a, c: SelectionRule("sigmoid", bias=True, note=(
        "logits as the router returns them: tanh-softcapped when config.moe_router_logit_softcapping > 0 "
        f"(here {_cfg(c, 'moe_router_logit_softcapping', 0.0)})")),
    "minimax_m3_vl": lambda a, c: SelectionRule("sigmoid", bias=True),
}

_FN = {"softmax": "softmax", "sigmoid": "sigmoid", "softmax_topk": "logits", "sparsemixer": "logits"}


def selection_rule(adapter: Adapter, config) -> SelectionRule:
    """The adapter's rule (RULES by name, else its `scoring`, `selection_bias` and group limit)."""
    if adapter.name in RULES:
        return RULES[adapter.name](adapter, config)
    if adapter.scoring not in _FN:
        raise UnsupportedModelError(
            f"scores=True: the {adapter.name!r} adapter's scoring is {adapter.scoring!r} and moelab.arch.scores has "
            "no rule for it; add one to RULES (read the router's forward in its modeling file)")
    return SelectionRule(_FN[adapter.scoring], bias=adapter.selection_bias, groups=adapter.groups(config))


def _bias_in(module: nn.Module, num_experts: int, *, recurse: bool):
    mods = module.named_modules() if recurse else [("", module)]
    for prefix, m in mods:
        if isinstance(m, nn.Linear):   # a Linear's bias is part of the logits, not a selection bias
            continue
        for name, t in [*m._parameters.items(), *m._buffers.items()]:
            if t is not None and "bias" in name and t.is_floating_point() and t.numel() == num_experts:
                yield (f"{prefix}.{name}" if prefix else name), m, name


@dataclass
class BiasRef:
    """Where a router's selection bias lives: read at each forward, so in-place updates are seen."""

    name: str          # the parameter's / buffer's own name, e.g. "e_score_correction_bias" (for the formula)
    path: str          # its full path in the model, e.g. "model.layers.1.mlp.gate.e_score_correction_bias"
    owner: nn.Module
    attr: str

    def tensor(self) -> torch.Tensor:
        t = self.owner._parameters.get(self.attr)
        return t if t is not None else self.owner._buffers[self.attr]


def find_selection_bias(model: nn.Module, router: Router, num_experts: int) -> BiasRef:
    """The (E,) selection bias of `router`: on the router (not inside a Linear), else on its parent block."""
    found = list(_bias_in(router.module, num_experts, recurse=True))
    parent_path = router.path.rpartition(".")[0]
    where = router.path
    if not found:
        parent = model.get_submodule(parent_path) if parent_path else model
        found = list(_bias_in(parent, num_experts, recurse=False))
        where = parent_path
    if not found:
        raise UnsupportedModelError(
            f"scores=True: the adapter says router {router.path!r} adds a selection bias, but neither it nor its "
            f"parent block {parent_path!r} holds a float parameter or buffer named '*bias*' with {num_experts} "
            "values. Update the rule in moelab/arch/scores.py for this architecture, or trace without scores=True.")
    if len(found) > 1:
        raise UnsupportedModelError(
            f"scores=True: {where!r} holds several candidate selection biases {[f[0] for f in found]}; "
            "name the right one in moelab/arch/scores.py")
    name, owner, attr = found[0]
    return BiasRef(attr, f"{where}.{name}" if where else name, owner, attr)


@torch.no_grad()
def compute_scores(logits: torch.Tensor, rule: SelectionRule, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(tokens, E) router logits -> (tokens, E) float32 selection scores."""
    x = logits if rule.in_logits_dtype else logits.float()
    if rule.fn == "softmax":
        x = torch.softmax(x, dim=-1)
    elif rule.fn == "sigmoid":
        x = torch.sigmoid(x)
    if rule.bias:
        x = x + bias.reshape(-1).to(x.device)
    return x.float()


def experts_from_scores(trace) -> np.ndarray:
    """The expert sets (tokens, layers, k) that top-k of `trace.scores` selects, group limit applied, by score.

        >>> import numpy as np, moelab
        >>> sc = np.array([[[0.1, 0.7, 0.2, 0.5]]], np.float32)         # (tokens, layers, E)
        >>> t = moelab.RoutingTrace.from_arrays(np.array([[[1, 3]]]), num_experts=4, scores=sc)
        >>> experts_from_scores(t).tolist()
        [[[1, 3]]]

    Ranks are ordered by score (highest first). Group limits come from the
    trace's metadata (`scores_group_limit`), as `moelab.trace(..., scores=True)` writes it.
    """
    if trace.scores is None:
        raise ValueError("this trace has no selection scores; record them with moelab.trace(model, scores=True) "
                         "(or pass scores= to RoutingTrace.from_arrays)")
    s = np.asarray(trace.scores, np.float32)
    lim = (trace.meta or {}).get("scores_group_limit")
    if lim:
        n, kept = int(lim["groups"]), int(lim["kept"])
        T, L, E = s.shape
        g = s.reshape(T, L, n, E // n)
        top = np.sort(g, axis=-1)[..., ::-1]
        gs = top[..., :2].sum(-1) if lim["group_score"] == "top2_sum" else top[..., 0]   # (T, L, n)
        keep = np.zeros_like(gs, bool)
        np.put_along_axis(keep, np.argsort(-gs, axis=-1, kind="stable")[..., :kept], True, axis=-1)
        s = np.where(np.repeat(keep, E // n, axis=-1), s, -np.inf)
    return np.argsort(-s, axis=-1, kind="stable")[..., :trace.top_k]
