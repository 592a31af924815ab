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
* routers whose score function is a config field (`config.scoring_func`, an
  elementwise transformers activation: Inkling2, DeepSeek-V4 with its default
  sqrtsoftplus): that activation of the logits, plus e_score_correction_bias
* DBRX: softmax(logits) computed in the logits' dtype, as DbrxFFN does

The experts a model runs are then the top-k of the scores (as a set), within
the kept groups where the architecture limits groups (DeepSeek-V3 style: a
group's score is the sum of its 2 highest scores; DeepSeek-V2's
`group_limited_greedy`: its highest). A.X-K2 with groups sets the experts outside
the kept groups to 0.0 (not -inf) before its top-k, so they can still be chosen
over a kept expert whose biased score is negative; `scores_group_limit` then
carries `"masked_score": 0.0`. Exceptions: PhiMoE in training mode samples its
experts (Gumbel), so only at inference is its choice the top-2 of the logits; and
DeepSeek-V4's hash-routed layers (`mlp_layer_types` "hash_moe") take their experts
from a fixed token-id table, `tid2eid[token_id]`, not from any score: their
recorded scores are scoring_func(logits) (no bias), which only weight the looked-up
experts, and `meta["scores_token_routed"]` names those layers and the table.

The bias is found generically: a float parameter or buffer whose name contains
"bias" and that holds E values, on the router (or a submodule of it that is not
a Linear) or on the router's parent block. Scores are float32, computed from the
router's own returned logits (LFM2-MoE: in the logits' dtype, as the model does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from .base import Adapter, Router, UnsupportedModelError

GROUP_SCORES = {"top2_sum": "sum of its 2 highest scores", "max": "its highest score"}


@dataclass(frozen=True)
class SelectionRule:
    """How one architecture's selection scores are computed from its router logits (see the module docstring)."""

    fn: str                               # "softmax" | "sigmoid" | "logits" (identity) | a transformers
                                          # activation name (ACT2FN, elementwise), e.g. "sqrtsoftplus"
    bias: bool = False                    # a per-expert bias added for selection only
    groups: tuple[int, int] | None = None  # (number of groups, groups kept per token)
    group_score: str = "top2_sum"         # how a group is scored: "top2_sum" | "max"
    masked_score: float | None = None     # what experts outside the kept groups score in the top-k
                                          # (None: they are excluded; A.X-K2: 0.0)
    in_logits_dtype: bool = False         # fn runs in the logits' dtype (else float32), as the model does
    by_token_id: str | None = None        # experts = this (vocab, k) table[token_id]; scores only weight them
    note: str = ""                        # what else a reader should know (config fields, training mode)

    def formula(self, bias_name: str = "bias") -> str:
        base = "logits" if self.fn == "logits" else f"{self.fn}(logits)"
        return f"{base} + {bias_name}" if self.bias else base

    def selection(self, k: int) -> str:
        if self.by_token_id:
            return (f"{self.by_token_id}[token_id]: {k} experts looked up by token id in a fixed table, "
                    "not chosen by score")
        if self.groups is None:
            return f"top-{k}"
        n, kept = self.groups
        out = (f"top-{k} within the {kept} best of {n} groups of experts "
               f"(group score: {GROUP_SCORES[self.group_score]})")
        if self.masked_score is not None:
            out += f"; experts outside them score {self.masked_score} in the top-k, so they can still be chosen"
        return out

    def group_limit(self) -> dict | None:
        """The group limit as the trace's metadata writes it (`scores_group_limit`)."""
        if self.groups is None:
            return None
        lim = {"groups": self.groups[0], "kept": self.groups[1], "group_score": self.group_score}
        if self.masked_score is not None:
            lim["masked_score"] = float(self.masked_score)
        return lim


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


def _axk2(a: Adapter, config) -> SelectionRule:
    groups = a.groups(config)   # A.X-K2-Light: n_group None (no groups); larger releases group DeepSeek-V3 style
    return SelectionRule("sigmoid", bias=True, groups=groups, masked_score=0.0 if groups else None,
                         note="AXK2TopkRouter.apply_group_scoring fills the experts outside the kept groups with "
                              "0.0 (not -inf) before the top-k" if groups else "")


def _scoring_func(a: Adapter, config) -> SelectionRule:
    """Inkling2 and DeepSeek-V4: ACT2FN[config.scoring_func](logits) + e_score_correction_bias, in the logits' dtype."""
    fn = _cfg(config, "scoring_func", "sigmoid")
    note = f"config.scoring_func={fn!r}"
    if a.name == "deepseek_v4":
        types = list(_cfg(config, "mlp_layer_types", []))
        hashed = [i for i, t in enumerate(types) if t == "hash_moe"]
        note += (f"; layers {hashed} (mlp_layer_types 'hash_moe') take their experts from tid2eid[token_id] and "
                 f"record {fn}(logits) without a bias" if hashed else "")
    return SelectionRule(fn, bias=True, in_logits_dtype=True, note=note)


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
    "lfm2_moe": _lfm2,
    "deepseek_v2": _deepseek_v2,
    "laguna": lambda a, c: SelectionRule("sigmoid", bias=True, note=(
        "logits as the router returns them: tanh-softcapped when config.moe_router_logit_softcapping > 0 "
        f"(here {_cfg(c, 'moe_router_logit_softcapping', 0.0)})")),
    "dbrx": lambda a, c: SelectionRule("softmax", in_logits_dtype=True, note=(
        "softmax in the logits' dtype (DbrxFFN.route_tokens_to_experts); in training mode the router's input is "
        "first multiplied by uniform jitter (config.moe_jitter_eps), which the recorded logits include")),
    "axk2": _axk2,
    "inkling": lambda a, c: SelectionRule("sigmoid", bias=True, note=(
        "logits of the routed experts only (the router also scores the shared experts, whose weights are "
        "normalised together with the k chosen)")),
    "inkling2": _scoring_func,
    "deepseek_v4": _scoring_func,
    # transformers 5.25 (ergo, minicpm5_moe, param2moe follow their adapter: sigmoid + bias, minicpm5_moe and
    # param2moe grouped DeepSeek-V3 style)
    "kolibri1_1": lambda a, c: SelectionRule("logits", bias=True,
                                             note="the sigmoid is taken after the choice, on the k chosen logits"),
}

# per adapter name: the buffer that marks a hash router (its experts are table[token_id], not chosen by score)
TOKEN_TABLES = {"deepseek_v4": "tid2eid"}

_FN = {"softmax": "softmax", "sigmoid": "sigmoid", "softmax_topk": "logits", "sparsemixer": "logits"}


def selection_rule(adapter: Adapter, config) -> SelectionRule:
    """The adapter's rule (RULES by name, else its `scoring`, `selection_bias` and group limit)."""
    if adapter.name in RULES:
        return RULES[adapter.name](adapter, config)
    if adapter.scoring not in _FN:
        raise UnsupportedModelError(
            f"scores=True: the {adapter.name!r} adapter's scoring is {adapter.scoring!r} and moelab.arch.scores has "
            "no rule for it; add one to RULES (read the router's forward in its modeling file)")
    return SelectionRule(_FN[adapter.scoring], bias=adapter.has_selection_bias(config), groups=adapter.groups(config))


def router_rule(adapter: Adapter, config, router: Router) -> SelectionRule:
    """The rule for one router: the adapter's, except on hash-routed layers (DeepSeek-V4's `tid2eid`)."""
    rule = selection_rule(adapter, config)
    table = TOKEN_TABLES.get(adapter.name)
    if table and table in router.module._buffers:   # hash routers have no selection bias and no top-k
        rule = replace(rule, bias=False, groups=None, masked_score=None, by_token_id=table)
    return rule


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


@lru_cache(maxsize=None)
def _activation(name: str):
    from transformers.activations import ACT2FN

    try:
        return ACT2FN[name]
    except KeyError:
        raise UnsupportedModelError(f"scores=True: the router's score function {name!r} is not a transformers "
                                    "activation (ACT2FN); add its rule to moelab/arch/scores.py") from None


@torch.no_grad()
def compute_scores(logits: torch.Tensor, rule: SelectionRule, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(tokens, E) router logits -> (tokens, E) float32 selection scores."""
    x = logits if rule.in_logits_dtype else logits.float()
    if rule.fn == "softmax":
        x = torch.softmax(x, dim=-1)
    elif rule.fn == "sigmoid":
        x = torch.sigmoid(x)
    elif rule.fn != "logits":
        x = _activation(rule.fn)(x)
    if rule.bias:
        x = x + bias.reshape(-1).to(x.device)
    return x.float()


class SelectionScores:
    """What `moelab.trace(model, scores=True)` records: per router, its rule and bias; the scores and the metadata.

        >>> from moelab.arch import find_routers
        >>> from moelab.arch.capabilities import build_tiny
        >>> from moelab.arch.registry import adapter_named
        >>> m = build_tiny("deepseek_v4")
        >>> sel = SelectionScores(m, adapter_named("deepseek_v4"), m.config, find_routers(m), 8)
        >>> sel.meta(2)["scores_token_routed"]["layers"], sel.meta(2)["scores"]
        ([0], 'sqrtsoftplus(logits) + e_score_correction_bias')
    """

    def __init__(self, model: nn.Module, adapter: Adapter, config, routers: list[Router], num_experts: int):
        self.rules = [router_rule(adapter, config, r) for r in routers]
        self.biases = [find_selection_bias(model, r, num_experts) if rule.bias else None
                       for r, rule in zip(routers, self.rules)]
        self.routers = routers

    def compute(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Router slot i's (tokens, E) logits -> its float32 selection scores."""
        b = self.biases[i]
        return compute_scores(logits, self.rules[i], None if b is None else b.tensor())

    def meta(self, k: int) -> dict:
        """meta["scores*"]: the formula, how experts are chosen, group limit, bias path, note, token-routed layers."""
        scored = [i for i, r in enumerate(self.rules) if r.by_token_id is None]
        first = scored[0] if scored else 0
        rule, bias = self.rules[first], self.biases[first]
        hashed = [i for i, r in enumerate(self.rules) if r.by_token_id is not None]
        selection = rule.selection(k)
        token_routed = None
        if hashed:
            h = self.rules[hashed[0]]
            layers = [self.routers[i].layer for i in hashed]
            token_routed = {"layers": layers, "table": f"{self.routers[hashed[0]].path}.{h.by_token_id}",
                            "scores": h.formula()}
            if scored:
                selection = (f"{selection} on layers {[self.routers[i].layer for i in scored]}; layers {layers} "
                             f"take {h.selection(k)}")
        return dict(scores=rule.formula(bias.name if bias is not None else "bias"), scores_selection=selection,
                    scores_group_limit=rule.group_limit(), scores_bias=bias.path if bias is not None else None,
                    scores_note=rule.note or None, scores_token_routed=token_routed)


def experts_from_scores(trace) -> np.ndarray:
    """The expert sets (tokens, layers, k) that top-k of `trace.scores` selects, group limit applied, by score.

        >>> import numpy as np, moelab
        >>> sc = np.array([[[0.1, 0.7, 0.2, 0.5]]], np.float32)         # (tokens, layers, E)
        >>> t = moelab.RoutingTrace.from_arrays(np.array([[[1, 3]]]), num_experts=4, scores=sc)
        >>> experts_from_scores(t).tolist()
        [[[1, 3]]]

    Ranks are ordered by score (highest first). Group limits come from the
    trace's metadata (`scores_group_limit`), as `moelab.trace(..., scores=True)` writes it.
    Layers whose experts are looked up by token id (`meta["scores_token_routed"]`,
    DeepSeek-V4's hash layers) are not chosen by score: their entries are -1.
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
        s = np.where(np.repeat(keep, E // n, axis=-1), s, lim.get("masked_score", -np.inf))
    out = np.argsort(-s, axis=-1, kind="stable")[..., :trace.top_k]
    token_routed = (trace.meta or {}).get("scores_token_routed")
    if token_routed:
        out[:, np.isin(np.asarray(trace.layer_ids), token_routed["layers"])] = -1
    return out
