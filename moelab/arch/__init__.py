"""moelab.arch: the one registry of per-architecture knowledge (routers, canonical record, shapes).

    >>> from moelab.arch import adapter_named, supported_architectures
    >>> "deepseek_v3" in supported_architectures(), adapter_named("gpt_oss").scoring
    (True, 'softmax_topk')

Modules: `base` (Adapter, Router), `registry` (ADAPTERS, UNSUPPORTED), `find` (adapter_for,
find_routers), `record` (reading experts' inputs and router returns), `shapes` and
`config_shape` (ModelShape for `moelab.compute`), `tiny` (tiny random configs for the
sweep), `capabilities` (the generated capability matrix).
"""

from .base import Adapter, Router, UnsupportedModelError
from .config_shape import SUPPORTED_MODEL_TYPES, as_config, model_shape
from .find import adapter_for, find_routers, model_config
from .record import RecordError
from .registry import ADAPTERS, UNSUPPORTED, adapter_named, supported_architectures
from .shapes import ModelShape

__all__ = ["ADAPTERS", "Adapter", "ModelShape", "RecordError", "Router", "SUPPORTED_MODEL_TYPES", "UNSUPPORTED",
           "UnsupportedModelError", "adapter_for", "adapter_named", "as_config", "find_routers", "model_config",
           "model_shape", "supported_architectures"]
