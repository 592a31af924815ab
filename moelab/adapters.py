"""Which modules of a model are routers, and how to read their outputs.

This is the only module that knows architecture-specific names. In
transformers 5.x every supported router returns the triple

    router_logits  (tokens, E)   pre-softmax scores, in the model's dtype
    top_k_weights  (tokens, k)   the weights the experts' outputs are mixed with
    top_k_index    (tokens, k)   the chosen expert ids, rank 0 = highest weight

so an adapter only says where the routers are (their class), how many experts
and choices the config declares, and whether the weights are renormalised.

    >>> import moelab
    >>> from moelab.adapters import find_routers
    >>> model, _ = moelab.load_model(tokenizer=False)
    >>> routers = find_routers(model)
    >>> [(r.name, r.layer) for r in routers][:2]
    [('layers.0.router', 0), ('layers.1.router', 1)]

Adding an architecture = one `Adapter(...)` entry in `ADAPTERS` plus a test on a
tiny random config (see `BUILDERS` in tests/conftest.py and tests/test_tracer.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


class UnsupportedModelError(TypeError):
    """The model has no router that moelab knows how to trace."""


@dataclass(frozen=True)
class Adapter:
    name: str                        # architecture family, e.g. "mixtral"
    model_types: tuple[str, ...]     # config.model_type values it covers
    router_classes: tuple[str, ...]  # class names of the router modules
    experts_attr: str                # config attribute holding E
    top_k_attr: str = "num_experts_per_tok"
    renormalised: str | bool = True  # bool, or the config attribute that says so

    def num_experts(self, config) -> int:
        return int(getattr(config, self.experts_attr))

    def top_k(self, config) -> int:
        return int(getattr(config, self.top_k_attr))

    def is_renormalised(self, config) -> bool:
        if isinstance(self.renormalised, bool):
            return self.renormalised
        return bool(getattr(config, self.renormalised, False))


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("mixtral", ("mixtral",), ("MixtralTopKRouter",), "num_local_experts"),
    Adapter("qwen2_moe", ("qwen2_moe",), ("Qwen2MoeTopKRouter",), "num_experts", renormalised="norm_topk_prob"),
    Adapter("qwen3_moe", ("qwen3_moe",), ("Qwen3MoeTopKRouter",), "num_experts", renormalised="norm_topk_prob"),
    Adapter("olmoe", ("olmoe",), ("OlmoeTopKRouter",), "num_experts", renormalised="norm_topk_prob"),
    Adapter("phimoe", ("phimoe",), ("PhimoeTopKRouter",), "num_local_experts", renormalised=False),
)

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def supported_architectures() -> list[str]:
    return [a.name for a in ADAPTERS]


@dataclass
class Router:
    name: str          # "layers.{i}.router": the hook name used everywhere in moelab
    path: str          # the module's own path in the model, e.g. "model.layers.0.mlp.gate"
    layer: int         # decoder-layer index i
    module: nn.Module


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter whose router classes occur in `model`; a clear error if none does."""
    classes = {type(m).__name__ for m in model.modules()}
    for a in ADAPTERS:
        if classes.intersection(a.router_classes):
            return a
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None) or type(model).__name__
    raise UnsupportedModelError(
        f"{type(model).__name__} (model_type={kind!r}) has no MoE router that moelab can trace. "
        f"Supported architectures: {', '.join(supported_architectures())} (transformers 5.x router classes "
        f"{', '.join(c for a in ADAPTERS for c in a.router_classes)}). A dense model has nothing to trace; "
        "for a new MoE architecture add an Adapter entry in moelab/adapters.py."
    )


def find_routers(model: nn.Module) -> list[Router]:
    """Every router of `model` in layer order, named `layers.{i}.router`."""
    adapter = adapter_for(model)
    routers = []
    for path, module in model.named_modules():
        if type(module).__name__ in adapter.router_classes:
            m = _LAYER_RE.search("." + path)
            if m is None:
                raise UnsupportedModelError(f"router at {path!r} is not inside a `layers.<i>` module list")
            i = int(m.group(1))
            routers.append(Router(f"layers.{i}.router", path, i, module))
    routers.sort(key=lambda r: r.layer)
    layers = [r.layer for r in routers]
    if len(set(layers)) != len(layers):
        raise UnsupportedModelError(f"more than one router per decoder layer in {type(model).__name__}: {layers}")
    return routers


def model_config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no `.config`; pass a transformers model")
    return getattr(config, "get_text_config", lambda: config)()
