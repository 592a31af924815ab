"""Per-layer expert load in the shapes expert-parallel load balancers (EPLB) take.

    >>> import numpy as np, moelab
    >>> from moelab.export import export_eplb_load
    >>> t = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[0, 2]], [[0, 1]]]), num_experts=4)
    >>> export_eplb_load(t).tolist()                                  # (layers, experts)
    [[3, 2, 1, 0]]
    >>> export_eplb_load(t, format="vllm", window_tokens=2).shape      # (window, layers, experts)
    (2, 1, 4)

Formats
-------
deepseek  `weight[layers, experts]`: tokens each logical expert processed, per MoE layer,
          the first argument of DeepSeek's `eplb.rebalance_experts(weight, num_replicas,
          num_groups, num_nodes, num_gpus)` (github.com/deepseek-ai/EPLB, README) and of
          vLLM's copy `vllm.distributed.eplb.rebalance_experts`.
vllm      `(window_size, num_moe_layers, num_experts)`: the layout of vLLM's
          `EplbModelState.expert_load_window` (vllm/distributed/eplb/eplb_state.py,
          "A sliding window of expert load"; one row per recorded step), here one row per
          `window_tokens` consecutive tokens; vLLM sums it over the window before
          rebalancing. With no redundant experts, physical = logical experts. vLLM keeps
          this tensor in memory and reads no load file, so `save_eplb_load` writes it for
          your own offline `rebalance_experts(load.sum(0), ...)` call.

The load counts every top-k assignment (an expert processes each token routed to
it), or first choices only with `first_only=True`. Works on a RoutingTrace or on a
trace path / `moelab.scan_trace(...)` (streamed, bounded memory).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["export_eplb_load", "save_eplb_load"]


def export_eplb_load(trace, *, format: str = "deepseek", window_tokens: int | None = None,
                     first_only: bool = False) -> np.ndarray:
    """Expert load as int64: (layers, experts) for "deepseek", (windows, layers, experts) for "vllm"."""
    from .metrics import expert_load

    if format == "deepseek":
        df = expert_load(trace, first_only)
        E = int(df.index.get_level_values("expert").max()) + 1
        return df["count"].to_numpy(np.int64).reshape(-1, E)
    if format == "vllm":
        if window_tokens is None or int(window_tokens) < 1:
            raise ValueError(f"format='vllm' needs window_tokens= a positive number of tokens per window row, "
                             f"e.g. 4096; got {window_tokens!r}")
        df = expert_load(trace, first_only, per_batch=int(window_tokens))
        W = df.index.get_level_values("batch").nunique()
        E = int(df.index.get_level_values("expert").max()) + 1
        return df["count"].to_numpy(np.int64).reshape(W, -1, E)
    raise ValueError(f"format={format!r} is not known: use 'deepseek' (layers, experts) or 'vllm' (window, layers, experts)")


def save_eplb_load(path, load: np.ndarray, *, layer_ids=None, format: str = "deepseek") -> None:
    """Write a load array: `.npy` (numpy) or `.json` ({"format", "shape", "layer_ids", "load"})."""
    path, load = Path(path), np.asarray(load)
    if path.suffix == ".npy":
        np.save(path, load)
    elif path.suffix == ".json":
        doc = {"format": format, "shape": list(load.shape),
               "layer_ids": None if layer_ids is None else [int(i) for i in layer_ids], "load": load.tolist()}
        path.write_text(json.dumps(doc))
    else:
        raise ValueError(f"{path}: write the load as .npy or .json")
