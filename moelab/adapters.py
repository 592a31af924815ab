"""Compatibility: per-architecture knowledge lives in `moelab.arch` (one registry).

    >>> from moelab.adapters import adapter_for, find_routers, ADAPTERS
    >>> ADAPTERS[0].name
    'mixtral'
"""

from .arch import ADAPTERS, Adapter, Router, UnsupportedModelError, adapter_for, find_routers, model_config
from .arch.registry import supported_architectures

__all__ = ["ADAPTERS", "Adapter", "Router", "UnsupportedModelError", "adapter_for", "find_routers", "model_config",
           "supported_architectures"]
