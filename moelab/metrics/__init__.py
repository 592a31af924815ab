"""moelab.metrics: routing statistics of a RoutingTrace, as pandas DataFrames.

    >>> import numpy as np, moelab
    >>> ex = np.random.default_rng(0).integers(0, 8, size=(100, 4, 1))   # (tokens, layers, k)
    >>> t = moelab.RoutingTrace.from_arrays(ex, num_experts=8)
    >>> moelab.metrics.balance(t).index.name
    'layer'

One concept per module (definitions and paper references in each docstring,
and in docs/metrics.md):

balance         expert_load, balance, hf_aux_loss        load, CV, MaxVio, entropy, aux losses
capacity        capacity_drops, capacity                 GShard/Switch capacity-factor drops
locality        repeat_rates, next_token_ids, consecutive_pairs   Mixtral Table 5
specialization  domain_distribution, domain_specialization, vocab_specialization
                                                         Mixtral Fig. 7, OLMoE §5
coactivation    coactivation, layer_transitions          OLMoE §5 co-activation
agreement       agreement, router_saturation             trace vs trace, OLMoE saturation

Every metric takes the trace as its first argument and `where=` (a boolean
per-token mask) to restrict the tokens; grouped results take `by=` a per-token
column name and put it first in the index. Pure numpy/pandas: no torch.
"""

from .agreement import agreement, router_saturation
from .balance import balance, expert_load, hf_aux_loss
from .capacity import capacity, capacity_drops
from .coactivation import coactivation, layer_transitions
from .locality import consecutive_pairs, next_token_ids, random_repeat_rates, repeat_rates
from .specialization import domain_distribution, domain_specialization, vocab_specialization
from . import _common, stream  # noqa: E402,I001  (last: stream builds on the modules above)

_common.STREAM = stream.dispatch   # the streamed path of every metric, without an import circle

__all__ = [
    "expert_load",
    "balance",
    "hf_aux_loss",
    "capacity",
    "capacity_drops",
    "repeat_rates",
    "random_repeat_rates",
    "next_token_ids",
    "consecutive_pairs",
    "domain_distribution",
    "domain_specialization",
    "vocab_specialization",
    "coactivation",
    "layer_transitions",
    "agreement",
    "router_saturation",
]
from .baselines import *  # noqa: F401,F403  load-aware baselines (metrics.margins, metrics.olmoe: import by path)
