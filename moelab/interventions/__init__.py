"""Interventions on MoE routing: ablate, force, re-weight, re-k, skip, bias and replay.

    >>> import moelab
    >>> model, tok = moelab.load_model()                                     # doctest: +SKIP
    >>> with moelab.intervene(model, ablate={2: [5]}):                       # doctest: +SKIP
    ...     out = model(**tok("Il était une fois", return_tensors="pt"))
    >>> moelab.interventions.score(model, tok, domains=["code"], interventions={"top-1": dict(top_k=1)})  # doctest: +SKIP

ops.py     pure routing transforms on (logits, weights, index), testable without a model
plan.py    argument checks and per-layer plans (masks precomputed once per block)
hooks.py   the `intervene` context manager (forward hooks on the routers, prepend=True)
score.py   NLL / perplexity / agreement / KL per domain, implied active params & FLOPs, frontier
nexttoken.py  NLL / agreement / KL from final hidden states, the LM head in chunks (no stored logits)
sweep.py   the batched expert-ablation sweep (prefix reused, all experts of a layer as one stack)
studies.py the bias (steering) sweep and the precision replay study of notebook 07
"""

from .hooks import Intervention, intervene, router_spec
from .ops import VERIFIED, InterventionError, RouterSpec, UnsupportedIntervention
from .plan import Force
from .score import dense_baselines, frontier, implied_compute, score
from .studies import bias_sweep, replay_gap
from .sweep import ablation_sweep

__all__ = ["intervene", "Intervention", "Force", "InterventionError", "UnsupportedIntervention", "RouterSpec",
           "VERIFIED", "router_spec",
           "score", "frontier", "dense_baselines", "implied_compute", "ablation_sweep", "bias_sweep", "replay_gap"]
