"""
Notebook 08's tables, built from the library's results (no arithmetic left to the notebook).

    >>> import numpy as np
    >>> from moelab.compute import mixtral_8x7b_config
    >>> from moelab.serving import hit_rate_table
    >>> from moelab.serving.report import bytes_moved_table, break_even_volumes
    >>> ex = np.random.default_rng(0).integers(0, 8, (2_000, 2, 1))          # (tokens, layers, k): iid uniform
    >>> b = bytes_moved_table(hit_rate_table(ex, [4], ["lru"]), mixtral_8x7b_config(), dtypes=["int4"])
    >>> round(float(b.experts_per_layer.iloc[0]), 1)                          # 1 - C/E misses per layer
    0.5
    >>> float(break_even_volumes({"95 tok/s": (95, 1.29)}, 1.50, [0.7]).iloc[0, 0])   # seed 000's setup never pays
    inf

    bytes_moved_table(hits, config)      host->GPU bytes per token per policy, cache size and weight dtype:
                                         `CacheResult.bytes_per_token` for a model with `config`'s MoE layers
    break_even_sweep(setups, api, us)    `break_even_table` for every setup and utilisation (long)
    break_even_volumes(setups, api, us)  `break_even_volume`, setups x utilisations
    break_even_utilisation(api, tps, $/h)  the utilisation below which self-hosting never pays
    cost_claim_factors(claims)           recomputed / claimed $/M for the cost claims of `claims_table()`
"""

from __future__ import annotations

import re

from .economics import break_even_table, break_even_volume, expert_bytes, usd_per_million

DTYPES = ("fp16", "int8", "int4")


def bytes_moved_table(hits, config, *, dtypes=DTYPES):
    """Host->GPU bytes per token for each (trace, policy, capacity) of a `hit_rate_table` and each dtype.

    `experts_loaded_per_token` (a CacheResult's, summed over the trace's L layers) / L is the
    per-layer rate; a model with `config`'s M MoE layers at that rate moves
    `M x rate x expert_bytes(config, dtype)` bytes per token, which is `CacheResult.bytes_per_token`
    when the trace has M layers (a 4-layer trace stands in for all M). Columns: trace (if any),
    policy, capacity, dtype, experts_per_layer, experts_per_token, expert_mb, mb_per_token."""
    import pandas as pd

    from ..compute.shape import model_shape

    M = model_shape(config).num_moe_layers
    keys = [c for c in ("trace", "policy", "capacity") if c in hits]
    rows = []
    for key, g in hits.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        per_layer = float(g.experts_loaded_per_token.iloc[0]) / g.layer.nunique()
        for dt in dtypes:
            eb = expert_bytes(config, dt)
            rows.append({**dict(zip(keys, key)), "dtype": dt, "experts_per_layer": per_layer,
                         "experts_per_token": per_layer * M, "expert_mb": eb / 1e6, "mb_per_token": per_layer * M * eb / 1e6})
    return pd.DataFrame(rows)


def break_even_sweep(setups: dict, api_price, utilisations, volumes, **kw):
    """`break_even_table` rows for every setup {name: (tokens_per_s, usd_per_hour)} and utilisation,
    with `setup` and `utilisation` columns."""
    import pandas as pd

    return pd.concat([break_even_table(volumes, api_price, tps, price, utilisation=u, **kw).assign(setup=name, utilisation=u)
                      for u in utilisations for name, (tps, price) in setups.items()], ignore_index=True)


def break_even_volumes(setups: dict, api_price, utilisations, **kw):
    """DataFrame setups x utilisations of `break_even_volume` (tokens per month; inf = never)."""
    import pandas as pd

    df = pd.DataFrame({u: {name: break_even_volume(api_price, tps, price, utilisation=u, **kw)
                           for name, (tps, price) in setups.items()} for u in utilisations})
    df.columns.name, df.index.name = "utilisation", "setup"
    return df


_CLAIMED = re.compile(r"=\s*~?\$(\d+(?:\.\d+)?)(?:/M| per M)")
_RECOMPUTED = re.compile(r"^\$(\d+(?:\.\d+)?)/M$")


def cost_claim_factors(claims):
    """The $/M cost claims of a `claims_table()` (claim "... = $X/M" or "= $X per M", recomputed "$Y/M"),
    with claimed, recomputed and factor = recomputed / claimed. Raises if there are none, so a
    reworded claims table fails here instead of printing a stale factor."""
    import pandas as pd

    rows = []
    for id_, r in claims.iterrows():
        c, y = _CLAIMED.search(str(r["claim"])), _RECOMPUTED.match(str(r["recomputed"]).strip())
        if c and y and float(c.group(1)) > 0:
            rows.append(dict(id=id_, claim=r["claim"], claimed=float(c.group(1)), recomputed=float(y.group(1))))
    if not rows:
        raise ValueError(f"no cost claim of the form '... = $X/M' with recomputed '$Y/M' among the {len(claims)} rows "
                         f"of the claims table (ids {list(claims.index)[:5]}...); update cost_claim_factors")
    df = pd.DataFrame(rows).set_index("id")
    df["factor"] = df.recomputed / df.claimed
    return df



def break_even_utilisation(api_price, tokens_per_s, usd_per_hour) -> float:
    """The utilisation below which dedicated GPUs never beat the API: $/M at full use / the API's $/M
    (> 1: never, at any utilisation). `break_even_volume` is finite just above it, inf below."""
    return usd_per_million(tokens_per_s, usd_per_hour) / float(api_price)
