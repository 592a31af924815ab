"""Interventions on MoE routing: ablate, force, re-weight, re-k, skip, bias and replay.

    >>> import moelab
    >>> model, tok = moelab.load_model()                                     # doctest: +SKIP
    >>> with moelab.intervene(model, ablate={2: [5]}):                       # doctest: +SKIP
    ...     out = model(**tok("Il était une fois", return_tensors="pt"))
    >>> moelab.interventions.score(model, tok, domains=["code"], interventions={"top-1": dict(top_k=1)})  # doctest: +SKIP

ops.py     pure routing transforms on (logits, weights, index), testable without a model
hooks.py   the `intervene` context manager (forward hooks on the routers, prepend=True)
score.py   NLL / perplexity / agreement / KL per domain, implied active params & FLOPs, frontier
sweep.py   the batched expert-ablation sweep (prefix hidden states reused)
"""

from .hooks import Force, Intervention, intervene
from .ops import InterventionError, RouterSpec, UnsupportedIntervention
from .score import dense_baselines, frontier, implied_compute, score
from .sweep import ablation_sweep, bias_sweep, replay_gap

__all__ = ["intervene", "Intervention", "Force", "InterventionError", "UnsupportedIntervention", "RouterSpec",
           "score", "frontier", "dense_baselines", "implied_compute", "ablation_sweep", "bias_sweep", "replay_gap"]
