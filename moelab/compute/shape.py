"""Compatibility: the shape readers moved to `moelab.arch` (one registry for every architecture).

    >>> from moelab.compute.shape import model_shape, ModelShape
    >>> model_shape({"model_type": "mistral", "num_hidden_layers": 1}).layers
    1
"""

from ..arch.config_shape import SUPPORTED_MODEL_TYPES, as_config, model_shape
from ..arch.shapes import ModelShape

__all__ = ["SUPPORTED_MODEL_TYPES", "ModelShape", "as_config", "model_shape"]
