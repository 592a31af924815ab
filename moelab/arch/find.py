"""Finding a model's routers and their experts modules, and choosing its adapter.

    >>> import moelab
    >>> from moelab.arch import find_routers
    >>> model, _ = moelab.load_model(tokenizer=False)
    >>> routers = find_routers(model)
    >>> [(r.name, r.layer) for r in routers][:2]
    [('layers.0.router', 0), ('layers.1.router', 1)]
    >>> routers[0].experts_path
    'model.layers.0.mlp.experts'

A router is a module of one of the adapter's router classes; its experts module is
the `experts` child of the same parent (the sparse MLP block). Layer ids are the
decoder-layer indices in the module path, so hybrid models (Jamba, Qwen3-Next,
GraniteMoeHybrid) keep their own numbering and dense / attention-only layers are skipped.
"""

from __future__ import annotations

from torch import nn

from .base import Adapter, Router, UnsupportedModelError, experts_sibling, layer_of
from .registry import ADAPTERS, UNSUPPORTED, supported_architectures


def model_config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no `.config`; pass a transformers model")
    return getattr(config, "get_text_config", lambda: config)()


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter whose router classes occur in `model`; a clear error naming what was looked for otherwise."""
    classes = {type(m).__name__ for m in model.modules()}
    found = [a for a in ADAPTERS if classes.intersection(a.router_classes)]
    config = getattr(model, "config", None)
    if found:  # router classes some model types share (sarvam_mla builds DeepSeek-V3's): the model type decides
        kinds = {getattr(config, "model_type", None),
                 getattr(getattr(config, "get_text_config", lambda: None)(), "model_type", None)}
        return next((a for a in found if kinds.intersection(a.model_types)), found[0])
    kind = getattr(config, "model_type", None) or type(model).__name__
    why = UNSUPPORTED.get(kind)
    if why:
        raise UnsupportedModelError(f"{type(model).__name__} (model_type={kind!r}) is an MoE architecture moelab does "
                                    f"not trace: {why}. See docs/capabilities.md.")
    raise UnsupportedModelError(
        f"{type(model).__name__} (model_type={kind!r}) has no MoE router that moelab can trace. "
        f"Supported architectures: {', '.join(supported_architectures())}. Looked for modules of the router classes "
        f"{', '.join(c for a in ADAPTERS for c in a.router_classes)} (each next to an `experts` module). A dense "
        "model has nothing to trace; for a new MoE architecture add an Adapter in moelab/arch/registry.py."
    )


def find_routers(model: nn.Module) -> list[Router]:
    """Every router of `model` in layer order, named `layers.{i}.router`, with its experts module."""
    adapter = adapter_for(model)
    routers = []
    for path, module in model.named_modules():
        if type(module).__name__ in adapter.router_classes:
            i = layer_of(path)
            ex_path, ex = experts_sibling(model, path)
            if ex is None and adapter.record == "experts":
                raise UnsupportedModelError(f"router at {path!r} has no `experts` module next to it; moelab reads "
                                            "the canonical record from the experts module's inputs")
            lg_path, lg = adapter.logits_source(module, path)
            routers.append(Router(f"layers.{i}.router", path, i, module, ex, ex_path,
                                  None if lg is module else lg, "" if lg is module else lg_path))
    routers.sort(key=lambda r: r.layer)
    layers = [r.layer for r in routers]
    if len(set(layers)) != len(layers):
        raise UnsupportedModelError(f"more than one router per decoder layer in {type(model).__name__}: {layers}")
    return routers
