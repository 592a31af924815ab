"""Router margins: how close a token's k-th and (k+1)-th expert were, and where routing flips.

    >>> import numpy as np
    >>> logits = np.array([[[3.0, 2.0, 1.9, 0.0]]])                # (tokens, layers, E)
    >>> router_margins(logits, k=2).round(2).tolist()              # 2nd vs 3rd logit
    [[0.1]]

A token's top-k set can only change (under rounding, a quantised model, a small
intervention) when its k-th and (k+1)-th logits are close. `flip_margins` compares the
reference's margins at the token-layers whose top-k set differs in another trace of the
same tokens (notebook 06: bf16 / fp16 vs fp32) with the margins of all token-layers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace, TraceMismatchError
from ._common import check_same_tokens, check_trace

__all__ = ["router_margins", "flipped", "flip_margins"]


def router_margins(logits, k: int) -> np.ndarray:
    """logit(k-th) − logit((k+1)-th) per token and layer, (tokens, layers), from logits (tokens, layers, E)."""
    lg = np.asarray(logits, dtype=np.float64)
    if lg.ndim != 3 or not 1 <= int(k) < lg.shape[-1]:
        raise ValueError(f"router_margins needs logits (tokens, layers, E) and 1 <= k < E; got shape {lg.shape}, k={k}")
    top = -np.partition(-lg, int(k), axis=-1)[..., : int(k) + 1]           # the k+1 largest, unordered
    top = np.sort(top, axis=-1)                                            # ascending: [..., 0] is the (k+1)-th
    return top[..., 1] - top[..., 0]


def flipped(a: RoutingTrace, b: RoutingTrace) -> np.ndarray:
    """(tokens, layers) bool: the top-k set (order ignored) differs between two traces of the same tokens."""
    check_same_tokens(a, b)
    return (np.sort(a.experts, -1) != np.sort(b.experts, -1)).any(-1)


def flip_margins(reference: RoutingTrace, others, *, quantile: float = 0.9) -> pd.DataFrame:
    """Margins of the reference at flipped vs all token-layers, per (comparison, layer).

        >>> ref = RoutingTrace.from_arrays(np.array([[[0, 1]], [[0, 1]]]), num_experts=3,
        ...                                logits=np.array([[[2.0, 1.0, 0.9]], [[2.0, 1.0, -1.0]]]))
        >>> other = RoutingTrace.from_arrays(np.array([[[0, 2]], [[0, 1]]]), num_experts=3)
        >>> flip_margins(ref, {"b": other})[["flipped", "median_flipped", "median_all"]].round(2).values.tolist()
        [[1.0, 0.1, 1.05]]

    `reference` must carry router logits (trace with logits=True); `others` is one trace or
    {name: trace}. Columns: tokens, flipped (token-layers whose top-k set differs),
    median_flipped, median_all, q_flipped (the `quantile` of the flipped margins: e.g. 90 %
    of flips happen below it), share_below_q (the share of all token-layers with a margin
    that small: how rare near-ties are).
    """
    check_trace(reference, "flip_margins")
    if reference.logits is None:
        raise TraceMismatchError("flip_margins needs the reference's router logits: trace it with logits=True")
    if isinstance(others, RoutingTrace):
        others = {"other": others}
    margin = router_margins(reference.logits, reference.top_k)             # (tokens, layers)
    rows = []
    for name, t in others.items():
        f = flipped(t, reference)
        for pos, layer in enumerate(reference.layer_ids):
            m, fm = margin[:, pos], margin[f[:, pos], pos]
            q = float(np.quantile(fm, quantile)) if len(fm) else np.nan
            rows.append({"comparison": name, "layer": int(layer), "tokens": len(m), "flipped": int(len(fm)),
                         "median_flipped": float(np.median(fm)) if len(fm) else np.nan,
                         "median_all": float(np.median(m)), "q_flipped": q,
                         "share_below_q": float(np.mean(m <= q)) if len(fm) else 0.0})
    return pd.DataFrame(rows).set_index(["comparison", "layer"])
