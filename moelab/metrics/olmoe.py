"""OLMoE-style scalar summaries (Muennighoff et al. 2024, §5), each next to its load-aware chance level.

    >>> import numpy as np, moelab
    >>> ex = np.array([[[0, 1]], [[0, 1]], [[2, 3]], [[2, 3]]])    # (tokens, layers, k)
    >>> strongest_pairs(moelab.RoutingTrace.from_arrays(ex, num_experts=4))[["pair", "p"]].values.tolist()
    [['0→1', 1.0]]

strongest_pairs           per layer, the co-activation pair i→j with the largest P(j | i), how
                          many experts have a partner above 50 %, and the pair's lift
top_domain_experts        per (domain, layer), the expert with the largest domain
                          specialization, with that expert's overall load and the lift
vocab_scalar              OLMoE's vocabulary specialization scalar, mean_x max_E N(x, E)/N(x)
                          (first choice, ids seen >= min_count times), next to its chance level
transition_concentration  P(next first choice = the most likely one | this one), per layer,
                          next to the same under independent layers (max_j P(j))
saturation_summary        router saturation averaged over layers per checkpoint, with the
                          share of training each checkpoint has seen
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..routing_trace import RoutingTrace
from ._common import apply_where, check_trace
from .baselines import coactivation_lift, specialization_vs_load, transition_baseline, vocab_chance
from .coactivation import coactivation, layer_transitions
from .specialization import vocab_specialization

__all__ = ["strongest_pairs", "top_domain_experts", "vocab_scalar", "transition_concentration",
           "saturation_summary"]


def strongest_pairs(trace: RoutingTrace, *, where=None) -> pd.DataFrame:
    """Per layer: pair (i→j), p = P(j|i), lift = p / P(j), experts_above_half, uniform = 1/(E−1)."""
    trace = apply_where(check_trace(trace, "strongest_pairs"), where)
    co, lift = coactivation(trace), coactivation_lift(trace)
    rows = []
    for layer in trace.layer_ids:
        m = co.loc[layer].to_numpy(float).copy()
        np.fill_diagonal(m, np.nan)
        if np.isnan(m).all():
            continue
        i, j = np.unravel_index(np.nanargmax(m), m.shape)
        rows.append({"layer": int(layer), "pair": f"{i}→{j}", "p": m[i, j], "lift": lift.loc[layer].iloc[i, j],
                     "experts_above_half": int((np.nanmax(np.nan_to_num(m, nan=-1), 1) > 0.5).sum()),
                     "uniform": 1 / (trace.num_experts - 1)})
    return pd.DataFrame(rows).set_index("layer")


def top_domain_experts(trace: RoutingTrace, by: str = "domain", layers=None, *, where=None) -> pd.DataFrame:
    """Per (domain, layer): expert with the largest specialization, that specialization, its load, lift."""
    s = specialization_vs_load(trace, by=by, layers=layers, where=where).dropna(subset=["specialization"])
    best = s.loc[s.groupby(level=[0, 1])["specialization"].idxmax()]
    out = best[["specialization", "load", "lift"]].reset_index("expert")
    return out[["expert", "specialization", "load", "lift"]]


def vocab_scalar(trace: RoutingTrace, by: str = "token_id", *, min_count: int = 5, where=None) -> pd.DataFrame:
    """A max-share summary of OLMoE's Equation 8 (§5.4), per layer: `observed` mean over ids of max_E N(x, E)/N(x) (first choice), `chance`
    (the same for routing independent of the token, at the layer's load: `vocab_chance`), `uniform` 1/E."""
    trace = apply_where(check_trace(trace, "vocab_scalar"), where)
    d = vocab_specialization(trace, by=by, first_only=True, min_count=min_count, detail=True)
    obs = d.groupby(["layer", by])["specialization"].max().groupby("layer").mean()
    chance = vocab_chance(trace, by=by, min_count=min_count)
    return pd.DataFrame({"observed": obs.reindex(chance.index), "chance": chance, "uniform": 1 / trace.num_experts})


def transition_concentration(trace: RoutingTrace, *, where=None) -> pd.DataFrame:
    """Per source layer: `observed` Σ_i max_j N(i→j) / N, `independent` max_j P(j at l+1), `uniform` 1/E."""
    trace = apply_where(check_trace(trace, "transition_concentration"), where)
    counts = layer_transitions(trace, normalize=False)
    base = transition_baseline(trace)
    rows = {}
    for layer in counts.index.get_level_values("layer").unique():
        c = counts.loc[layer].to_numpy(float)
        rows[int(layer)] = {"observed": c.max(1).sum() / c.sum(), "independent": base.loc[layer].to_numpy().max(),
                            "uniform": 1 / trace.num_experts}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("from layer")


def saturation_summary(saturation: pd.DataFrame, checkpoints=None, final_step=None) -> pd.DataFrame:
    """`router_saturation` output averaged over layers per checkpoint, with `share` of training.

        >>> sat = pd.DataFrame({"checkpoint": [10, 10, 50, 50], "layer": [0, 1, 0, 1],
        ...                     "top1": [.2, .4, .8, .6], "topk": [.3, .5, .9, .7]}).set_index(["checkpoint", "layer"])
        >>> saturation_summary(sat, final_step=100).round(2).values.tolist()
        [[0.1, 0.3, 0.4], [0.5, 0.7, 0.8]]

    `checkpoints` (moelab.models.checkpoints(): dicts with step and tokens_seen, final last)
    adds `tokens_seen` and sets the final step; else give `final_step`. Plot top1/topk against
    `share` (not the checkpoint index), with the final checkpoint at share 1.
    """
    s = saturation.groupby(level="checkpoint", sort=False)[["top1", "topk"]].mean()
    if checkpoints is not None:
        final_step = checkpoints[-1]["step"]
        seen = {c["step"]: c.get("tokens_seen") for c in checkpoints}
        s.insert(0, "tokens_seen", [seen.get(step) for step in s.index])
    if final_step is None:
        raise ValueError("saturation_summary needs checkpoints=moelab.models.checkpoints() or final_step=<step>")
    s.insert(0, "share", np.asarray(s.index, float) / float(final_step))
    return s
