"""moelab.serving: what routing means for a deployment (placeholder; filled below)."""
from .offload import (POLICIES, CacheResult, hit_rate_table, predict_from_previous_layer, predict_previous_token,
                      simulate_cache)
from .parallel import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, eplb_weight, expert_load,
                       gpu_loads, imbalance, imbalance_over_windows)
from .synthetic import TABLE5, mixtral_like_trace, move_probabilities, table5_targets
from .economics import (blended_price, break_even_table, break_even_volume, cost_table, expert_bytes, implied_ratio,
                        max_cache_size, offloaded_tokens_per_s, self_hosted_monthly, tokens_per_hour, usd_per_million)
from .claims import claims_table
