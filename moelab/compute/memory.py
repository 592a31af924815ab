"""
Memory: weights at a given precision, KV cache, and what fits on a GPU.

    weights   = params x bytes/param   fp32 4, bf16/fp16 2, int8 1, int4 0.5
    KV cache  = what transformers' cache holds, per layer per token (attention layers only, each with its own heads /
                window where they differ: hybrids, mimo_v2_flash):
                  GQA / MHA                 kv_heads x (head_dim + v_head_dim)         K and V
                  MLA (DeepSeek-V2/V3 ...)  kv_lora_rank + qk_rope_head_dim            the compressed latent and the
                                                                                       shared rope key, not per head
                  + sparse-attention        index_head_dim                             one indexer key (DSA: deepseek_v32,
                    indexer                                                            glm_moe_dsa, axk2, dots3_note;
                                                                                       minimax_m3's sparse layers)
                  deepseek_v4               head_dim (K = V, one tensor; 2 x head_dim on its sliding-only layers,
                                            whose plain sliding cache stores K and V apart) on the sliding part, plus
                                            (head_dim [+ index_head_dim on CSA layers]) per `rate` tokens compressed
    needed    = weights / num_gpus + batch x KV(context) / num_gpus + reserve

int8/int4 are weight-only quantisation of every parameter; their scales/zero-points (about
+3% for int4 with group size 128 and fp16 scales) are left out -- pass `bytes_per_param`
to include them. The KV cache stays in 16 bits unless `kv_dtype` says otherwise.
A layer with a sliding window W (or llama4's chunk) keeps the last W - 1 tokens between steps (transformers'
DynamicSlidingWindowLayer, the default cache; its StaticSlidingWindowLayer allocates W; the Mistral 7B paper,
arXiv:2310.06825 Sec. 2, describes a rolling buffer of W), so its cache stops growing at W - 1 tokens.
The recurrent / conv states of hybrid layers (and deepseek_v4's compressor buffers) are a fixed size per sequence,
not per token, and are left out.

MLA: transformers 5.24 caches the latent for every MLA family (deepseek_v2, deepseek_v3, deepseek_v32, glm4_moe_lite,
glm_moe_dsa, sarvam_mla, axk1, axk2, dots3_note, kimi_linear, bailing_hybrid: `cache.update(kv_nope, k_rot)` with
shapes [B, 1, S, kv_lora_rank] and [B, 1, S, qk_rope_head_dim]) and re-expands it through kv_b_proj every step, which
is also what MLA serving engines (vLLM, SGLang) cache (DeepSeek-V2 paper, arXiv:2405.04434 Sec. 2.1: (d_c + d_h^R) l
elements per token). So one count serves both views: DeepSeek-V3 caches 512 + 64 = 576 elements per layer per token,
70.3 KB per token over 61 layers in bf16, where expanded per-head K and V (128 heads x (192 + 128)) would be 71x
that (5.0 MB); tests/test_compute_families.py checks the count against the bytes a tiny model's cache holds.
Sizes are in bytes or GB (1e9); GPU capacities come from `hardware.py` (GiB, converted).

Mixtral 8x7B: 46.70B params -> 93.4 GB in fp16 (more than an 80 GiB = 85.9 GB A100),
46.7 GB in int8; KV cache 128 KiB per token in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import Hardware, get_hardware
from .params import count_params
from .shape import model_shape

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2,
    "int8": 1, "fp8": 1, "int4": 0.5,
}


def dtype_bytes(dtype) -> float:
    """Bytes per element of a dtype name (or a torch dtype, or a number passed through).

    >>> dtype_bytes("int4"), dtype_bytes("bf16")
    (0.5, 2)
    """
    if isinstance(dtype, (int, float)):
        return dtype
    name = str(dtype).replace("torch.", "").lower()
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPE_BYTES)} or a number of bytes")
    return DTYPE_BYTES[name]


def weight_bytes(config, dtype="bf16", bytes_per_param: float | None = None) -> float:
    """Bytes of all weights at `dtype` (or at an explicit `bytes_per_param`).

    >>> from moelab.compute import mixtral_8x7b_config
    >>> round(weight_bytes(mixtral_8x7b_config(), "fp16") / 1e9, 1)
    93.4
    """
    b = bytes_per_param if bytes_per_param is not None else dtype_bytes(dtype)
    return count_params(config).total * b


def kv_bytes_per_token(config, kv_dtype="bf16") -> float:
    """KV-cache bytes one token adds (all layers) before any sliding window fills: what transformers caches (module
    docstring); deepseek_v4's compressed entries count 1 / rate each.

    >>> from moelab.compute import mixtral_8x7b_config, deepseek_v3_config
    >>> kv_bytes_per_token(mixtral_8x7b_config(), "fp16")  # 2 * 32 * 8 * 128 * 2
    131072
    >>> kv_bytes_per_token(deepseek_v3_config(), "bf16")  # MLA latent: (512 + 64) * 61 * 2
    70272
    """
    s = model_shape(config)
    return sum(_kv_elements(m) for m in s.layer_mixers) * dtype_bytes(kv_dtype)


def _kv_elements(m) -> float:
    """Cache elements one token adds to one layer (module docstring): attention layers only (the recurrent / conv state
    of a hybrid layer is a fixed size per sequence, not per token, and is left out; so are layers that read another
    layer's K/V, kv_proj 0: gemma4 KV sharing)."""
    if m.kind != "attention" or not m.kv_proj:
        return 0
    if m.compress:  # deepseek_v4: K = V in one tensor, one compressed entry (+ one indexer key) per `rate` tokens
        rate, index_heads, index_dim = m.compress
        return _window_elements(m) + ((m.head_dim + (index_dim if index_heads else 0)) / rate if rate else 0)
    return _window_elements(m) + _indexer_elements(m)


def _window_elements(m) -> int:
    """Per-token elements of the part of a layer's cache that a sliding window caps (K and V, or the MLA latent)."""
    if m.mla:
        return m.mla[1] + m.mla[3]  # kv_lora_rank + qk_rope_head_dim, shared by the heads
    if m.compress and m.compress[0]:  # deepseek_v4's compressed layers keep K = V as one tensor; its sliding-only
        return m.kv_heads * m.head_dim  # layers (rate 0) use the plain sliding cache, which stores K and V apart
    return m.kv_heads * (m.head_dim + m.vd)


def _indexer_elements(m) -> int:
    """Per-token elements of a sparse-attention indexer's key cache (one head of index_dim: DSA's `indexer_keys`,
    minimax_m3's `idx_keys`), 0 without one."""
    return m.index_dim if m.index_heads else 0


def _layer_kv_elements(m, context: int) -> float:
    """Cache elements of one layer after `context` tokens of one sequence: a window keeps its last window - 1."""
    if m.kind != "attention" or not m.kv_proj:
        return 0
    kept = min(context, m.window - 1) if m.window else context
    if m.compress:
        rate, index_heads, index_dim = m.compress
        n = context // rate if rate else 0  # compressed entries emitted so far
        return _window_elements(m) * kept + (m.head_dim + (index_dim if index_heads else 0)) * n
    return _window_elements(m) * kept + _indexer_elements(m) * context


def kv_cache_bytes(config, batch: int = 1, context: int = 2048, kv_dtype="bf16") -> float:
    """KV-cache bytes for `batch` sequences of `context` tokens: what transformers' cache holds (each sliding layer
    keeps window - 1 tokens; module docstring).

    >>> from moelab.compute import gpt_oss_120b_config
    >>> kv_cache_bytes(gpt_oss_120b_config(), 1, 4096, "bf16") / 2 / (2 * 8 * 64)  # 18 full layers x 4096 + 18 x 127
    76014.0
    """
    s = model_shape(config)
    return batch * sum(_layer_kv_elements(m, context) for m in s.layer_mixers) * dtype_bytes(kv_dtype)


def _max_context(s, batch: int, free: float, kv_dtype, longest: int = 2**31 - 1) -> int:
    """Longest context whose KV cache for `batch` sequences is at most `free` bytes (`longest` when every layer's
    cache stops growing below that: all layers windowed). The cache grows with the context, so a bisection."""
    if kv_cache_bytes(s, batch, longest, kv_dtype) <= free:
        return longest
    lo, hi = 0, longest  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if kv_cache_bytes(s, batch, mid, kv_dtype) <= free else (lo, mid)
    return lo


def _default_kv_dtype(dtype) -> str:
    return "fp16" if dtype_bytes(dtype) < 2 else str(dtype)


@dataclass(frozen=True)
class FitReport:
    """What `fits` found; sizes in GB (1e9 bytes), per GPU."""

    fits: bool
    gpu: str
    num_gpus: int
    dtype: str
    batch: int
    context: int
    weights_gb: float  # per GPU
    kv_cache_gb: float  # per GPU, for batch x context
    reserve_gb: float
    needed_gb: float  # weights + KV + reserve, per GPU
    capacity_gb: float  # per GPU
    max_batch: int  # largest batch at this context that fits (0: weights alone do not fit)
    max_context: int  # longest context at this batch that fits

    def __str__(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"{self.dtype} on {self.num_gpus}x {self.gpu}: {verdict} -- weights {self.weights_gb:.1f} GB + "
            f"KV {self.kv_cache_gb:.1f} GB (batch {self.batch} x {self.context} tokens) + reserve "
            f"{self.reserve_gb:.1f} GB = {self.needed_gb:.1f} GB of {self.capacity_gb:.1f} GB per GPU; "
            f"max batch at this context {self.max_batch}, max context at this batch {self.max_context}"
        )


def fits(
    config,
    gpu="A100-80GB-SXM",
    dtype="fp16",
    batch: int = 1,
    context: int = 4096,
    kv_dtype=None,
    num_gpus: int = 1,
    reserve_gb: float = 0.0,
) -> FitReport:
    """Do the weights plus the KV cache of `batch` x `context` tokens fit on `num_gpus` GPUs?

    Weights and KV cache are split evenly across GPUs (tensor parallel). `reserve_gb` is
    per-GPU room for activations / CUDA context / allocator slack (default 0: a lower bound).

    >>> from moelab.compute import mixtral_8x7b_config
    >>> fits(mixtral_8x7b_config(), "A100-80GB-SXM", "fp16").fits
    False
    >>> fits(mixtral_8x7b_config(), "A100-80GB-SXM", "int8", batch=8, context=4096).fits
    True
    """
    hw: Hardware = get_hardware(gpu)
    kv_dtype = kv_dtype or _default_kv_dtype(dtype)
    w = weight_bytes(config, dtype) / num_gpus
    s = model_shape(config)
    kv = kv_cache_bytes(s, batch, context, kv_dtype) / num_gpus
    cap = hw.memory_bytes
    free = max(cap - w - reserve_gb * 1e9, 0)
    kv_seq = kv_cache_bytes(s, 1, context, kv_dtype) / num_gpus  # one sequence of `context` tokens
    max_batch = int(free // kv_seq) if kv_seq else 0
    max_context = _max_context(s, batch, free * num_gpus, kv_dtype) if batch else 0
    needed = w + kv + reserve_gb * 1e9
    return FitReport(
        fits=needed <= cap, gpu=hw.name, num_gpus=num_gpus, dtype=str(dtype), batch=batch, context=context,
        weights_gb=w / 1e9, kv_cache_gb=kv / 1e9, reserve_gb=reserve_gb, needed_gb=needed / 1e9,
        capacity_gb=cap / 1e9, max_batch=max_batch, max_context=max_context,
    )
