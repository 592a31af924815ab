"""
moelab.serving: what a routing trace means for a deployment. Pure numpy over a RoutingTrace (or an
experts array (tokens, layers, k)) and a config; no model needed.

    >>> import numpy as np
    >>> from moelab.serving import simulate_cache, usd_per_million
    >>> ex = np.random.default_rng(0).integers(0, 8, (40_000, 1, 1))
    >>> round(float(simulate_cache(ex, 2, "lru", num_experts=8).hit_rate[0]), 1)    # C/E = 0.25
    0.2
    >>> round(usd_per_million(95, 1.29), 2)
    3.77

offload     simulate_cache (lru, lfu, belady, prefetch), predict_previous_token,
            predict_from_previous_layer, hit_rate_table              Eliseev & Mazur 2023
engine      Stream: the exact bit-mask simulator behind simulate_cache (layers x chunks in lock-step)
lookahead   record_lookahead, Lookahead: layer l+1's router on layer l's hidden state (needs a model)
parallel    expert_load, window_loads, eplb_weight, contiguous_placement, balanced_placement
            (EPLB-style), gpu_loads, imbalance, imbalance_over_windows, dispatch_bytes_per_token
synthetic   mixtral_like_trace, TABLE5, table5_targets, move_probabilities   Mixtral §5, Table 5
economics   usd_per_million, blended_price, break_even_table, break_even_volume,
            offloaded_tokens_per_s, max_cache_size, expert_bytes
claims      claims_table: the source articles' numbers, recomputed
report      bytes_moved_table, break_even_sweep, break_even_volumes, break_even_utilisation,
            cost_claim_factors: notebook 08's tables, from the functions above
plots       (import moelab.serving.plots) the figures of notebook 08

Definitions and sources: docs/serving.md.
"""
from .offload import (POLICIES, CacheResult, hit_rate_table, predict_from_previous_layer, predict_previous_token,
                      simulate_cache)
from .parallel import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, eplb_weight, expert_load,
                       gpu_loads, imbalance, imbalance_over_windows, window_loads)
from .lookahead import Lookahead, record_lookahead
from .synthetic import TABLE5, mixtral_like_trace, move_probabilities, table5_targets
from .economics import (blended_price, break_even_table, break_even_volume, cost_table, expert_bytes, implied_ratio,
                        max_cache_size, offloaded_tokens_per_s, self_hosted_monthly, tokens_per_hour, usd_per_million)
from .claims import claims_table

__all__ = [n for n in dir() if not n.startswith("_") and n not in ("offload", "parallel", "synthetic", "economics", "claims",
                                                                   "engine", "lookahead")]
