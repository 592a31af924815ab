"""
Memory: weights at a given precision, KV cache, and what fits on a GPU.

    weights   = params x bytes/param   fp32 4, bf16/fp16 2, int8 1, int4 0.5
    KV cache  = 2 (K and V) x layers x kv_heads x head_dim x bytes   per token   (GQA aware; attention layers
                only, each with its own heads / window where they differ: hybrids, mimo_v2_flash)
    needed    = weights / num_gpus + batch x context x KV / num_gpus + reserve

int8/int4 are weight-only quantisation of every parameter; their scales/zero-points (about
+3% for int4 with group size 128 and fp16 scales) are left out -- pass `bytes_per_param`
to include them. The KV cache stays in 16 bits unless `kv_dtype` says otherwise.
With a sliding window the KV cache is a rolling buffer of `window` tokens (Mistral 7B paper,
arXiv:2310.06825 Sec. 2), so context is capped at the window.
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
    """KV-cache bytes one token adds (all layers, K and V).

    >>> from moelab.compute import mixtral_8x7b_config
    >>> kv_bytes_per_token(mixtral_8x7b_config(), "fp16")  # 2 * 32 * 8 * 128 * 2
    131072
    """
    s = model_shape(config)
    return sum(_kv_elements(m) for m in s.layer_mixers) * dtype_bytes(kv_dtype)


def _kv_elements(m) -> int:
    """K and V elements one token adds to one layer's cache: attention layers only (the recurrent / conv state of a
    hybrid layer is a fixed size per sequence, not per token, and is left out; so are layers that read another
    layer's K/V, kv_proj 0: gemma4 KV sharing)."""
    return m.kv_heads * (m.head_dim + m.vd) if m.kind == "attention" and m.kv_proj else 0


def kv_cache_bytes(config, batch: int = 1, context: int = 2048, kv_dtype="bf16") -> float:
    """KV-cache bytes for `batch` sequences of `context` tokens (each layer capped at its sliding window)."""
    s = model_shape(config)
    per_token = sum(_kv_elements(m) * (min(context, m.window) if m.window else context) for m in s.layer_mixers)
    return batch * per_token * dtype_bytes(kv_dtype)


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
    kv_tok = kv_bytes_per_token(config, kv_dtype) / num_gpus
    kv = kv_cache_bytes(config, batch, context, kv_dtype) / num_gpus
    cap = hw.memory_bytes
    free = cap - w - reserve_gb * 1e9
    s = model_shape(config)
    ctx_eff = min(context, s.sliding_window) if s.sliding_window else context
    max_batch = int(max(free, 0) // (kv_tok * ctx_eff)) if ctx_eff else 0
    max_context = int(max(free, 0) // (kv_tok * batch)) if batch else 0
    if s.sliding_window and max_context >= s.sliding_window:
        max_context = 2**31 - 1  # rolling buffer: any context fits once the window does
    needed = w + kv + reserve_gb * 1e9
    return FitReport(
        fits=needed <= cap, gpu=hw.name, num_gpus=num_gpus, dtype=str(dtype), batch=batch, context=context,
        weights_gb=w / 1e9, kv_cache_gb=kv / 1e9, reserve_gb=reserve_gb, needed_gb=needed / 1e9,
        capacity_gb=cap / 1e9, max_batch=max_batch, max_context=max_context,
    )
