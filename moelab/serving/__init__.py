"""moelab.serving: what routing means for a deployment (placeholder; filled below)."""
from .offload import (POLICIES, CacheResult, hit_rate_table, predict_from_previous_layer, predict_previous_token,
                      simulate_cache)
