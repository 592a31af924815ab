"""`model_shape(config)`: a transformers config -> `ModelShape`, through the architecture's adapter.

    >>> from transformers import MixtralConfig
    >>> model_shape(MixtralConfig(num_hidden_layers=2)).layers
    2
    >>> as_config({"model_type": "mistral", "hidden_size": 64}).hidden_size
    64

The per-architecture readers live in `moelab.arch.shapes`; which one a model type uses is
its adapter's `shape` (`moelab.arch.registry`). There is no second registry.
"""

from __future__ import annotations

from .registry import ADAPTERS
from .shapes import DENSE_READERS, ModelShape, common_fields


class _Strict:
    """A config view on which a missing or None field raises AttributeError naming it (getattr defaults still work)."""

    def __init__(self, config):
        self.__dict__["_c"] = config

    def __getattr__(self, name):
        value = getattr(self.__dict__["_c"], name)
        if value is None:
            raise AttributeError(f"config field {name!r} is None", name=name)
        return value


class _Layer0:
    """A heterogeneous config seen with its per-layer fields taken from layer 0 (`per_layer_config` passes through)."""

    def __init__(self, config, values: dict):
        self.__dict__.update(_c=config, _v=values)

    def __getattr__(self, name):
        v = self.__dict__["_v"]
        return v[name] if name in v else getattr(self.__dict__["_c"], name)


def _readers() -> dict:
    out = dict(DENSE_READERS)
    for a in ADAPTERS:
        if a.shape is not None:
            out.update({mt: a.shape for mt in a.model_types})
    return out


SUPPORTED_MODEL_TYPES = tuple(_readers())


def as_config(config):
    """A transformers config object from a config object or a dict with a "model_type" key."""
    if isinstance(config, dict):
        if "model_type" not in config:
            raise ValueError(
                f"config dict has no 'model_type' key (keys: {sorted(config)[:8]}...); "
                f"add one of {SUPPORTED_MODEL_TYPES}, e.g. {{'model_type': 'mixtral', ...}}"
            )
        from transformers import AutoConfig

        d = dict(config)
        return AutoConfig.for_model(d.pop("model_type"), **d)
    return config


def model_shape(config) -> ModelShape:
    """Read a `ModelShape` from a transformers config (or a dict with "model_type")."""
    if isinstance(config, ModelShape):
        return config
    c = as_config(config)
    c = getattr(c, "get_text_config", lambda: c)()
    mt = getattr(c, "model_type", None)
    reader = _readers().get(mt)
    if reader is None:
        raise ValueError(
            f"model_type {mt!r} is not supported by moelab.compute; supported: {SUPPORTED_MODEL_TYPES}. "
            "Add a shape reader to moelab/arch/shapes.py and name it in the architecture's Adapter(shape=...), "
            "with a test against model.parameters()."
        )
    spec = getattr(c, "__dict__", {}).get("_heterogeneity_spec")
    if spec is not None and spec.per_layer_attributes:  # fields that differ between layers (dots3_note)
        if not getattr(reader, "per_layer", False):
            raise ValueError(f"{type(c).__name__} (model_type={mt!r}) sets {sorted(spec.per_layer_attributes)} per "
                             f"layer; the {reader.__name__} reader of moelab.compute reads one value for all layers. "
                             "Give it a homogeneous config, or teach the reader config.per_layer_config[i].")
        first = c.per_layer_config[0]  # the shape-wide fields take layer 0; the reader reads every layer's own
        c = _Layer0(c, {k: getattr(first, k) for k in spec.per_layer_attributes})
    try:
        return reader(_Strict(c), common_fields(c, mt))
    except AttributeError as e:
        field = getattr(e, "name", None) or str(e)
        raise ValueError(f"{type(c).__name__} (model_type={mt!r}) has no {field!r}, which moelab.compute reads to "
                         f"count parameters; set config.{field}.") from None
