"""
Compute accounting for MoE (and dense) transformers: parameters, FLOPs, memory, serving cost.

    >>> from moelab.compute import count_params, flops_per_token, mixtral_8x7b_config
    >>> cfg = mixtral_8x7b_config()
    >>> p = count_params(cfg)
    >>> f"{p.total / 1e9:.2f}B total, {p.active / 1e9:.2f}B active"
    '46.70B total, 12.88B active'

Everything works from a config alone (a transformers config object or a dict with
"model_type"); no weights are built. One concept per module:

    shape.py     ModelShape (compatibility: the readers live in moelab.arch, one per adapter)
    modern.py    DeepSeek-V3, GPT-OSS-120B, Llama-4-Scout, Qwen3-30B-A3B as code; modern_moes() table
    params.py    count_params: total / active parameters by component
    flops.py     forward_flops, flops_per_token, router_share (1 multiply-add = 2 FLOPs)
    memory.py    weight_bytes, kv_bytes_per_token, kv_cache_bytes, fits
    hardware.py  GPUS datasheet table, measure_host_bandwidth, this_machine
    routing.py   distinct experts per batch: closed form, Monte Carlo, from a routing trace
    roofline.py  decode roofline, $/1M tokens, published-number and memory-claim checks
    configs.py   mixtral_8x7b_config, mistral_7b_config, dense_equivalent

See docs/compute.md for the numbers.
"""

from .configs import MATCHES, dense_equivalent, mistral_7b_config, mixtral_8x7b_config
from .flops import FlopBreakdown, flops_per_token, forward_flops, router_share
from .hardware import GPUS, LINKS, Hardware, Link, get_hardware, get_link, measure_host_bandwidth, measure_host_matmul_flops, this_machine
from .memory import DTYPE_BYTES, FitReport, dtype_bytes, fits, kv_bytes_per_token, kv_cache_bytes, weight_bytes
from .modern import (PUBLISHED, deepseek_v3_config, published_active, gpt_oss_120b_config, llama4_scout_config, modern_moes,
                     qwen3_30b_a3b_config)
from .params import Count, ParamCount, attention_params, attention_weights, count_params, expert_params
from .roofline import (
    MIXTRAL_A100_VLLM,
    MemoryClaimCheck,
    PublishedResult,
    check_memory_claim,
    compare_published,
    cost_per_million_tokens,
    decode_roofline,
    weight_bytes_read,
)
from .routing import (
    distinct_experts_from_trace,
    distinct_experts_per_batch,
    expected_distinct_experts,
    simulate_distinct_experts,
)
from .shape import SUPPORTED_MODEL_TYPES, ModelShape, as_config, model_shape

__all__ = [name for name in dir() if not name.startswith("_") and name not in ("configs", "flops", "hardware", "memory", "modern", "params", "roofline", "routing", "shape")]
