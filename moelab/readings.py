"""Plain-language readings of routing statistics, so that a notebook's text is true for any model.

    >>> import numpy as np, moelab
    >>> ex = np.stack([np.arange(8).repeat(50), np.zeros(400, int)], 1)[:, :, None]   # (tokens, layers, k)
    >>> balance_reading(moelab.RoutingTrace.from_arrays(ex, num_experts=8))["reading"].tolist()
    ['balanced', 'collapsed']

A notebook never types a model's numbers into its prose: it prints this table, whose `reading`
column is computed from the numbers next to it. The thresholds are issue 16's targets for a
Mixtral-like model (every expert gets at least 4 % of its layer's assignments and the CV of the
load is at most 0.35) and a collapse threshold (some expert gets under 1 %, a tenth of the
uniform 12.5 % share for 8 experts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .routing_trace import RoutingTrace

__all__ = ["BALANCED_MIN_SHARE", "BALANCED_MAX_CV", "COLLAPSED_MIN_SHARE", "balance_reading", "nearest_row"]

BALANCED_MIN_SHARE = 0.04    # every expert >= 4 % of the layer's assignments (issue 16)
BALANCED_MAX_CV = 0.35       # CV of the per-expert load <= 0.35 (issue 16)
COLLAPSED_MIN_SHARE = 0.01   # an expert below 1 % of the assignments is (nearly) unused


def balance_reading(trace: RoutingTrace) -> pd.DataFrame:
    """Per layer: the smallest and largest expert share of the top-k assignments, the CV of the load,
    the busiest expert, and a reading: 'balanced', 'uneven' or 'collapsed' (thresholds above).

    Shares are fractions of the layer's assignments (uniform = 1/E); CV is the population standard
    deviation of the per-expert counts over their mean, as `moelab.metrics.balance`.
    """
    if not isinstance(trace, RoutingTrace):
        raise TypeError(f"balance_reading() needs a RoutingTrace, got {type(trace).__name__}")
    if trace.num_tokens == 0:
        raise ValueError("balance_reading() got an empty trace (0 tokens); trace some text first")
    E = trace.num_experts
    rows = []
    for pos, layer in enumerate(trace.layer_ids):
        counts = np.bincount(trace.experts[:, pos, :].reshape(-1).astype(np.int64), minlength=E)[:E]
        share = counts / counts.sum()                                  # (E,)
        cv = float(counts.std() / counts.mean())
        lo, hi = float(share.min()), float(share.max())
        if lo < COLLAPSED_MIN_SHARE:
            reading = "collapsed"
        elif lo >= BALANCED_MIN_SHARE and cv <= BALANCED_MAX_CV:
            reading = "balanced"
        else:
            reading = "uneven"
        rows.append({"layer": layer, "min_share": lo, "max_share": hi, "busiest_expert": int(share.argmax()),
                     "cv": cv, "reading": reading})
    return pd.DataFrame(rows).set_index("layer")


def nearest_row(values: pd.Series, reference: pd.DataFrame) -> pd.Series:
    """For each entry of `values` (indexed like the rows to match, e.g. layers), the index label of the
    `reference` row whose value in the same column is closest.

        >>> ref = pd.DataFrame({"x": [0.0, 0.5, 1.0]}, index=["a", "b", "c"])
        >>> nearest_row(pd.Series([0.1, 0.8], name="x"), ref).tolist()
        ['a', 'c']

    `values.name` names the column of `reference` to compare with.
    """
    if values.name not in reference.columns:
        raise KeyError(f"nearest_row(): reference has no column {values.name!r}; columns: {list(reference.columns)}")
    col = reference[values.name].to_numpy(float)
    idx = [reference.index[int(np.nanargmin(np.abs(col - v)))] for v in values.to_numpy(float)]
    return pd.Series(idx, index=values.index, name=f"nearest {values.name}")
