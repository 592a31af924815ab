"""One adapter per MoE architecture: where its routers are, how to read them, how it routes.

    >>> from moelab.arch import adapter_named
    >>> a = adapter_named("deepseek_v3")
    >>> a.scoring, a.name
    ('sigmoid', 'deepseek_v3')

Transformers 5.x builds every sparse MLP the same way: a router (`gate` or
`router`) returns `(logits, weights, index)` and an experts module is called as
`experts(hidden_states, top_k_index, top_k_weights)`. The canonical record is read
from the experts module's *inputs* (a forward pre-hook), so it is what the experts
actually consumed, even where a model edits the router's return before the experts
see it; the router's own forward hook supplies only the optional raw logits. Where the
router returns something else in the logits' place (Gemma 4 returns the softmax
probabilities), `logits_from` names the router's child module whose output *is* the raw
logits (`"proj"`), and that child's forward hook supplies them instead.
Architectures that route differently (Llama 4 scales the experts' input) set
`record="router"` and read the router's return instead.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

from torch import nn


class UnsupportedModelError(TypeError):
    """The model has no router that moelab knows how to trace."""


@dataclass(frozen=True)
class Adapter:
    """What moelab knows about one MoE architecture (see the module docstring)."""

    name: str                        # architecture family, e.g. "mixtral"
    model_types: tuple[str, ...]     # config.model_type values it covers
    router_classes: tuple[str, ...]  # class names of the router modules
    experts_attr: str                # config attribute holding E (routed experts)
    top_k_attr: str = "num_experts_per_tok"
    renormalised: str | bool = True  # bool, or the config attribute that says so
    scoring: str = "softmax"         # softmax | sigmoid | softmax_topk (softmax over the k chosen) | sparsemixer
    record: str = "experts"          # "experts": read the experts module's inputs; "router": its return
    logits_at: int = 0               # position of the raw logits in the router's returned tuple
    logits_from: str | None = None   # a child of the router whose output is the raw logits (gemma4: "proj")
    shared_attr: str | int | None = None  # config attribute: number (or width) of always-on shared experts; or a count
    shared_is_width: bool = False    # shared_attr holds a width (qwen2_moe): one shared expert if > 0
    scaling_attr: str | None = None  # config attribute of a factor the weights are multiplied by
    group_attrs: tuple[str, str] | None = None  # (number of groups, groups kept per token)
    selection_bias: bool | str = False  # a bias added to the scores for selection only (DeepSeek-V3);
    #                                     bool, or the config attribute that switches it on (lfm2_moe)
    shape: Callable | None = field(default=None, compare=False, repr=False)  # config -> ModelShape
    min_transformers: str = "5.0"    # first version with this architecture's 5.x router

    def __post_init__(self):
        if self.logits_from is not None and self.record != "experts":
            raise ValueError(f"Adapter {self.name!r}: logits_from={self.logits_from!r} needs record='experts' (with "
                             "record='router' the router's own return is read); drop one of the two")

    def logits_source(self, router: nn.Module, path: str) -> tuple[str, nn.Module]:
        """(path, module) whose forward output holds the raw logits: the router, or its `logits_from` child."""
        if self.logits_from is None:
            return path, router
        try:
            return f"{path}.{self.logits_from}", router.get_submodule(self.logits_from)
        except AttributeError:
            raise UnsupportedModelError(
                f"router at {path!r} ({type(router).__name__}) has no child {self.logits_from!r}, which the "
                f"{self.name!r} adapter reads the raw logits from; its children are "
                f"{[n for n, _ in router.named_children()]}. Update logits_from in moelab/arch/registry.py") from None

    def num_experts(self, config) -> int:
        for attr in (self.experts_attr, "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
            if isinstance(_get(config, attr), int):
                return int(_get(config, attr))
        return int(_need(config, self.experts_attr, self.name))

    def top_k(self, config) -> int:
        return int(_need(config, self.top_k_attr, self.name))

    def is_renormalised(self, config) -> bool:
        if isinstance(self.renormalised, bool):
            return self.renormalised
        return bool(_get(config, self.renormalised, False))

    def num_shared(self, config) -> int:
        """Shared experts per MoE layer: they run for every token and are never routed load."""
        if self.shared_attr is None:
            return 0
        if isinstance(self.shared_attr, int):
            return self.shared_attr
        v = getattr(config, self.shared_attr, 0) or 0
        return int(v > 0) if self.shared_is_width else int(v)

    def scaling(self, config) -> float:
        return float(getattr(config, self.scaling_attr, 1.0) or 1.0) if self.scaling_attr else 1.0

    def groups(self, config) -> tuple[int, int] | None:
        if self.group_attrs is None:
            return None
        n, kept = (getattr(config, a, None) for a in self.group_attrs)
        return (int(n), int(kept)) if n and kept and int(n) > 1 else None

    def has_selection_bias(self, config) -> bool:
        if isinstance(self.selection_bias, bool):
            return self.selection_bias
        return bool(_get(config, self.selection_bias, False))

    def routing_meta(self, config) -> dict:
        """How this architecture routes, for the trace's metadata."""
        return {"scoring": self.scoring, "renormalised": self.is_renormalised(config),
                "groups": self.groups(config), "shared_experts": self.num_shared(config),
                "routed_scaling": self.scaling(config), "selection_bias": self.has_selection_bias(config),
                "weights_multiply": "input" if self.record == "router" else "output"}


def _get(config, attr: str, default=None):
    """A config field, also from the `ffn_config` sub-config where DBRX keeps its MoE fields."""
    v = getattr(config, attr, None)
    if v is None:
        v = getattr(getattr(config, "ffn_config", None), attr, None)
    return default if v is None else v


def _need(config, attr: str, arch: str):
    v = _get(config, attr)
    if v is None:
        raise UnsupportedModelError(f"{type(config).__name__} has no {attr!r}, which the {arch!r} adapter reads "
                                    "for the number of experts / choices; pass the model's own config")
    return v


@dataclass
class Router:
    name: str          # "layers.{i}.router": the hook name used everywhere in moelab
    path: str          # the router module's own path, e.g. "model.layers.0.mlp.gate"
    layer: int         # decoder-layer index i (the model's own, also in hybrid models)
    module: nn.Module  # the router (returns the logits, unless logits_module is set)
    experts: nn.Module | None = None  # the experts module whose inputs are the canonical record
    experts_path: str = ""
    logits_module: nn.Module | None = None  # whose forward output holds the raw logits (None: the router)
    logits_path: str = ""

    @property
    def logits_hook_module(self) -> nn.Module:
        """The module whose forward hook reads the raw logits (the router, or its `Adapter.logits_from` child)."""
        return self.module if self.logits_module is None else self.logits_module


_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\.")  # decoder-layer lists (dbrx: blocks)


def layer_of(path: str) -> int:
    m = _LAYER_RE.search("." + path)
    if m is None:
        raise UnsupportedModelError(f"router at {path!r} is not inside a `layers.<i>` (or `blocks.<i>`) module list")
    return int(m.group(1))


def experts_sibling(model: nn.Module, path: str) -> tuple[str, nn.Module | None]:
    """The `experts` module next to the router at `path` (same parent), or ("", None)."""
    parent_path = path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    ex = getattr(parent, "experts", None)
    return (f"{parent_path}.experts" if parent_path else "experts", ex) if isinstance(ex, nn.Module) else ("", None)


def experts_arguments(experts: nn.Module) -> tuple[str, str]:
    """Names of the (index, weights) parameters of an experts module's forward."""
    params = list(inspect.signature(type(experts).forward).parameters)[1:]
    if len(params) < 3:
        raise UnsupportedModelError(f"{type(experts).__name__}.forward{tuple(params)} takes no (index, weights); "
                                    "set record='router' in its adapter")
    return params[1], params[2]
