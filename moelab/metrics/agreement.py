"""Agreement: do two traces of the same tokens route them the same way?

    >>> import numpy as np, moelab
    >>> a = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), num_experts=4)
    >>> b = moelab.RoutingTrace.from_arrays(np.array([[[1, 0]], [[2, 0]]]), num_experts=4)
    >>> moelab.metrics.agreement(a, b)[["top1", "topk_overlap", "exact_set"]].values.tolist()
    [[0.5, 0.75, 0.5]]

Per MoE layer, over tokens t with top-k sets A_t (trace a) and B_t (trace b):

top1          P[first choice of a == first choice of b]
topk_overlap  mean_t |A_t ∩ B_t| / k
exact_set     P[A_t == B_t] (as sets: rank order ignored)

Uses: a quantised vs a full-precision model, two prompts formats, a model
before and after fine-tuning. `router_saturation` is OLMoE's (Muennighoff et
al. 2024, §5, "router saturation") use of the same numbers: the agreement of
each training checkpoint's routing with the final checkpoint's, on the same
tokens, for k = 1 (`top1`) and k = top_k (`topk`).

Traces must describe the same tokens in the same order (sequence, position
and token_id equal) with the same layers and E; otherwise TraceMismatchError
names what differs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace, TraceMismatchError
from ._common import streamable, apply_where, check_same_tokens, check_trace, overlap

__all__ = ["agreement", "router_saturation"]


def agree_counts(ea: np.ndarray, eb: np.ndarray, k: int, E: int) -> np.ndarray:
    """Per layer, (3, L) int: tokens with the same first choice, Σ |A ∩ B| and tokens with A == B,
    comparing the first k ranks of experts ea, eb (tokens, L, k'). Sums over disjoint token sets."""
    L = ea.shape[1]
    out = np.zeros((3, L), np.int64)
    for l in range(L):
        xa, xb = ea[:, l, :k], eb[:, l, :k]                       # (tokens, k)
        n = overlap(xa, xb, E)                                    # (tokens,) |A ∩ B|
        out[0, l] = np.count_nonzero(xa[:, 0] == xb[:, 0])
        out[1, l] = n.sum()
        out[2, l] = np.count_nonzero(n == k)
    return out


def agree_rates(counts: np.ndarray, T: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top1, topk_overlap, exact_set), each (L,), from agree_counts summed over T tokens; NaN when T = 0."""
    if T == 0:
        nan = np.full(counts.shape[1], np.nan)
        return nan, nan.copy(), nan.copy()
    return counts[0] / T, counts[1] / T / k, counts[2] / T


def _agree(a: RoutingTrace, b: RoutingTrace, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top1, topk_overlap, exact_set), each (layers,), comparing the first k ranks."""
    return agree_rates(agree_counts(a.experts, b.experts, k, a.num_experts), a.num_tokens, k)


@streamable
def agreement(a: RoutingTrace, b: RoutingTrace, *, where=None) -> pd.DataFrame:
    """Per layer: top1, topk_overlap and exact_set agreement of two traces of the same tokens.

        >>> t = RoutingTrace.from_arrays(np.array([[[0, 1]]]), num_experts=2)
        >>> agreement(t, t)["exact_set"].tolist()
        [1.0]

    Index `layer`; columns top1, topk_overlap, exact_set, tokens. `where`
    selects tokens (a mask over the tokens of both).
    """
    check_trace(a, "agreement"), check_trace(b, "agreement")
    check_same_tokens(a, b, ("a", "b"))
    a, b = apply_where(a, where), apply_where(b, where)
    top1, ov, exact = _agree(a, b, a.top_k)
    return pd.DataFrame(
        {"top1": top1, "topk_overlap": ov, "exact_set": exact, "tokens": a.num_tokens},
        index=pd.Index(a.layer_ids, name="layer"),
    )


@streamable
def router_saturation(traces_by_checkpoint: dict, final: RoutingTrace, k: int | None = None) -> pd.DataFrame:
    """OLMoE router saturation: agreement of each checkpoint's routing with the final one's.

        >>> f = RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), num_experts=4)
        >>> early = RoutingTrace.from_arrays(np.array([[[0, 2]], [[1, 3]]]), num_experts=4)
        >>> router_saturation({1000: early}, f)[["top1", "topk"]].values.tolist()
        [[0.5, 0.5]]

    Index (checkpoint, layer), checkpoints in the dict's order. Columns:
    `top1` (same first choice: OLMoE's "top-k=1" panel), `topk` (mean
    |A ∩ B| / k over the first k ranks, k = final.top_k unless given: the
    "top-k=8" panel), `k`. Raises TraceMismatchError, naming the checkpoint,
    when a checkpoint's trace is not of the same tokens as `final`.
    """
    check_trace(final, "router_saturation")
    if not isinstance(traces_by_checkpoint, dict) or not traces_by_checkpoint:
        raise TypeError(
            "router_saturation needs a non-empty dict {checkpoint step: RoutingTrace}; "
            f"got {type(traces_by_checkpoint).__name__}"
        )
    k = final.top_k if k is None else int(k)
    frames = []
    for step, t in traces_by_checkpoint.items():
        check_trace(t, "router_saturation")
        if not 1 <= k <= min(t.top_k, final.top_k):
            raise ValueError(f"k={k} must lie in [1, {min(t.top_k, final.top_k)}] (the traces' top_k)")
        try:
            check_same_tokens(t, final, (f"checkpoint {step!r}", "final"), same_k=False)
        except TraceMismatchError as e:
            raise TraceMismatchError(f"router_saturation: {e}") from None
        top1, ov, _ = _agree(t, final, k)
        frames.append(
            pd.DataFrame({"checkpoint": step, "layer": t.layer_ids, "top1": top1, "topk": ov, "k": k})
        )
    return pd.concat(frames, ignore_index=True).set_index(["checkpoint", "layer"])
