"""The names and dtypes a routing trace is made of, shared by `RoutingTrace` and the Parquet store.

    >>> from moelab.trace_schema import expert_dtype
    >>> expert_dtype(8), expert_dtype(256), expert_dtype(512)
    (dtype('uint8'), dtype('uint8'), dtype('uint16'))

A leaf module (numpy only), so `moelab.routing_trace`, `moelab.trace_write` and
`moelab.store` import it without importing each other in a circle.
"""

from __future__ import annotations

import numpy as np

TOKEN_FIELDS = ("sequence", "position", "token_id", "step")
FORMAT_VERSION = 3              # 3: may hold selection `scores`; 2: weights encoded by moelab.codec (1: float16)
SCORES_VERSION = 3              # files written with scores say 3 (older moelab refuses them); others still say 2
META_KEY = b"moelab"
MAX_EXPERTS = 65536             # uint16 ids


class TraceMismatchError(ValueError):
    """Two traces (or a trace and an array) do not describe the same tokens or shapes."""


def expert_dtype(num_experts: int) -> np.dtype:
    """Compact dtype for expert ids 0..num_experts-1: uint8 up to 256 experts, else uint16 (up to 65536)."""
    if num_experts > MAX_EXPERTS:
        raise TraceMismatchError(f"num_experts={num_experts} exceeds the {MAX_EXPERTS} expert ids a trace stores")
    return np.dtype(np.uint8) if num_experts <= 256 else np.dtype(np.uint16)
