"""moelab: trace, store and analyse Mixture-of-Experts routing.

    >>> import moelab
    >>> model, tok = moelab.load_model()                      # the embedded small Mixtral
    >>> with moelab.trace(model) as tr:                       # hooks every MoE layer
    ...     _ = model(**tok("The quick brown fox", return_tensors="pt"))
    >>> tr.experts.shape                                      # (tokens, layers, k): BOS + 5 pieces
    (6, 4, 2)
    >>> len(moelab.metrics.balance(tr))                       # one row per layer
    4

The analysis layer (`RoutingTrace`, `load_trace`, `metrics`, `plots`,
`compute`) imports no model code; `trace`, `load_model` and the tokenizer
import torch and transformers on first use.
"""

from .routing_trace import RoutingTrace, TraceMismatchError
from .store import TraceFileError, load_trace

__version__ = "0.1.0"

_LAZY = {
    "trace": ("moelab.tracer", "trace"),
    "UnsupportedModelError": ("moelab.adapters", "UnsupportedModelError"),
    "TracingError": ("moelab.tracer", "TracingError"),
    "load_model": ("moelab.models", "load_model"),
    "load_tokenizer": ("moelab.data", "load_tokenizer"),
    "load_corpus": ("moelab.data", "load_corpus"),
    "trace_corpus": ("moelab.corpus", "trace_corpus"),
    "show": ("moelab.explorer", "show"),
    "scan_trace": ("moelab.scan", "scan_trace"),
    "TraceSource": ("moelab.scan", "TraceSource"),
    "from_vllm": ("moelab.engines", "from_vllm"),
    "from_sglang": ("moelab.engines", "from_sglang"),
    "import_routing": ("moelab.engines", "import_routing"),
    "export_eplb_load": ("moelab.export", "export_eplb_load"),
    "intervene": ("moelab.interventions", "intervene"),
    "Force": ("moelab.interventions", "Force"),
    "InterventionError": ("moelab.interventions", "InterventionError"),
    "notebook_params": ("moelab.params", "notebook_params"),
    "shard_path": ("moelab.shards", "shard_path"),
    "check_shards": ("moelab.shards", "check_shards"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name in ("metrics", "plots", "compute", "bench", "serving", "explorer", "corpus", "device", "codec",
                "interventions", "arch", "shards", "toy", "variants", "papers"):
        import importlib

        return importlib.import_module(f"moelab.{name}")
    raise AttributeError(f"module 'moelab' has no attribute {name!r}")


__all__ = [
    "RoutingTrace",
    "TraceMismatchError",
    "TraceFileError",
    "load_trace",
    "trace",
    "UnsupportedModelError",
    "TracingError",
    "load_model",
    "load_tokenizer",
    "load_corpus",
    "trace_corpus",
    "show",
    "scan_trace",
    "TraceSource",
    "from_vllm",
    "from_sglang",
    "import_routing",
    "export_eplb_load",
    "intervene",
    "Force",
    "InterventionError",
    "notebook_params",
    "shard_path",
    "check_shards",
    "__version__",
]
