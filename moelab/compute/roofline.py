"""
Serving cost model: a roofline of MoE decode, and checks of published serving numbers.

One decode step of a batch of B sequences, each with `context` tokens in its KV cache:

    bytes  = non-expert weights (attention, router, shared/dense MLPs, norms, lm_head), read once
           + B embedding rows
           + per MoE layer: D(B) x one expert's weights, D(B) = distinct experts the batch touches
             ("uniform": E(1-(1-k/E)^B), or measured from a routing trace, see routing.py)
           + KV cache: B x context x KV bytes per token
    flops  = B x matmul FLOPs of one decode token (flops.py)
    time   = max(bytes / (bandwidth x bandwidth_efficiency), flops / (peak x flops_efficiency))
    tokens/s = B / time;  $ per 1M output tokens = price_per_hour / (3600 x tokens/s) x 1e6

The efficiency factors are named parameters, default 1.0 (an upper bound on speed); nothing
else is tuned. `num_gpus` > 1 models ideal tensor parallelism (bandwidth and peak add up,
weights and KV cache are split). Activations, kernel launch and communication are ignored.

Mixtral 8x7B on one A100 80GB is reported (`MIXTRAL_A100_VLLM`) at FP16, but its FP16 weights
(93.4 GB) exceed the card (80 GiB = 85.9 GB); `check_memory_claim` works out which setups
could produce the reported memory use.
"""

from __future__ import annotations

from dataclasses import dataclass

from .flops import forward_flops
from .hardware import Hardware, get_hardware
from .memory import _default_kv_dtype, dtype_bytes, kv_bytes_per_token, kv_cache_bytes, weight_bytes
from .params import count_params, expert_params
from .routing import expected_distinct_experts
from .shape import model_shape


def _distinct(s, tokens: int, experts_touched) -> float:
    """Distinct experts per MoE layer for a step of `tokens` tokens."""
    if not s.is_moe:
        return 0.0
    if experts_touched == "uniform":
        return expected_distinct_experts(s.num_experts, s.top_k, tokens)
    if isinstance(experts_touched, dict):
        if tokens not in experts_touched:
            raise ValueError(
                f"experts_touched has no entry for batch {tokens} (has {sorted(experts_touched)}); "
                f"measure it: distinct_experts_per_batch(experts, batch_sizes=[..., {tokens}])"
            )
        import numpy as np

        return float(np.mean(experts_touched[tokens]))
    if isinstance(experts_touched, (int, float)):
        return float(experts_touched)
    raise ValueError(f"experts_touched={experts_touched!r}: use 'uniform', a number, or {{batch: distinct}}")


def weight_bytes_read(config, tokens: int = 1, dtype="bf16", experts_touched="uniform") -> float:
    """Bytes of weights one forward step over `tokens` tokens reads (each weight once per step).

    >>> from moelab.compute import mixtral_8x7b_config
    >>> round(weight_bytes_read(mixtral_8x7b_config(), 1, "fp16") / 1e9, 1)  # 2 of 8 experts
    25.5
    """
    s = model_shape(config)
    p = count_params(s)
    b = dtype_bytes(dtype)
    non_expert = p.total - p.embeddings.total - p.experts.total
    rows = p.embeddings.total if s.tied else min(tokens, s.vocab) * s.hidden  # tied: read as the head
    experts = s.num_moe_layers * _distinct(s, tokens, experts_touched) * expert_params(s)
    return (non_expert + rows + experts) * b


def decode_roofline(
    config,
    gpu="A100-80GB-SXM",
    batch_sizes=(1, 4, 8, 16, 32),
    context: int = 512,
    dtype="fp16",
    kv_dtype=None,
    experts_touched="uniform",
    bandwidth_efficiency: float = 1.0,
    flops_efficiency: float = 1.0,
    num_gpus: int = 1,
    price_per_hour: float | None = None,
):
    """Predicted decode tokens/s (and $/1M tokens) per batch size; a pandas DataFrame.

    >>> from moelab.compute import mixtral_8x7b_config
    >>> df = decode_roofline(mixtral_8x7b_config(), "A100-80GB-SXM", [1], context=0, dtype="fp16")
    >>> int(df.tokens_per_s[0])  # 2039e9 B/s / 25.5e9 B
    79
    """
    import pandas as pd

    from .memory import fits

    hw: Hardware = get_hardware(gpu)
    s = model_shape(config)
    kv_dtype = kv_dtype or _default_kv_dtype(dtype)
    bw = hw.bandwidth_gbs * 1e9 * bandwidth_efficiency * num_gpus
    peak = hw.peak_tflops * 1e12 * flops_efficiency * num_gpus
    rows = []
    for B in batch_sizes:
        wb = weight_bytes_read(s, B, dtype, experts_touched)
        kvb = kv_cache_bytes(s, B, context, kv_dtype)
        fl = forward_flops(s, batch=B, seq_len=1, past=context, logits="last").total
        t_mem, t_cmp = (wb + kvb) / bw, fl / peak
        t = max(t_mem, t_cmp)
        row = dict(
            batch=B, context=context, distinct_experts_per_layer=_distinct(s, B, experts_touched),
            weight_bytes=wb, kv_bytes=kvb, bytes=wb + kvb, flops=fl, t_memory_s=t_mem, t_compute_s=t_cmp,
            bound="memory" if t_mem >= t_cmp else "compute", tokens_per_s=B / t,
            arithmetic_intensity=fl / (wb + kvb),
            fits=fits(s, hw, dtype, B, context, kv_dtype, num_gpus).fits,
        )
        if price_per_hour is not None:
            row["usd_per_million_tokens"] = cost_per_million_tokens(B / t, price_per_hour)
        rows.append(row)
    return pd.DataFrame(rows)


def cost_per_million_tokens(tokens_per_s: float, price_per_hour: float) -> float:
    """$ per 1M output tokens at a throughput and an hourly price.

    >>> round(cost_per_million_tokens(218, 1.29), 2)
    1.64
    """
    return price_per_hour / (3600.0 * tokens_per_s) * 1e6


# ---------------------------------------------------------------------------------------
# published reference


@dataclass(frozen=True)
class PublishedResult:
    """A published serving measurement, with its source text, to check the model against."""

    name: str
    source: str
    quote: str
    gpu: str  # key of GPUS
    num_gpus: int
    dtype: str
    batch_sizes: tuple[int, ...]
    tokens_per_s: tuple[float, ...]  # output tokens/s, whole batch
    price_per_hour: float
    reported_vram_gb: tuple[float, float]  # (low, high) "VRAM used"


MIXTRAL_A100_VLLM = PublishedResult(
    name="Mixtral 8x7B, vLLM, 1x A100 80GB, FP16",
    source="January 2024 blog post benchmarking Mixtral 8x7B inference with vLLM on one A100 80GB "
    "(numbers as quoted in seed 000; prompt/output lengths not given)",
    quote="about 42, 95, 156, 201, 218 output tokens/s at batch 1, 4, 8, 16, 32; A100 at $1.29/h; "
    "87-91 GB VRAM used",
    gpu="A100-80GB-SXM",
    num_gpus=1,
    dtype="fp16",
    batch_sizes=(1, 4, 8, 16, 32),
    tokens_per_s=(42, 95, 156, 201, 218),
    price_per_hour=1.29,
    reported_vram_gb=(87, 91),
)


def compare_published(config=None, ref: PublishedResult = MIXTRAL_A100_VLLM, context: int = 512, **roofline_kw):
    """Roofline prediction next to a published result, per batch size (DataFrame).

    context: tokens in the KV cache during decode (the source does not say; 512 assumed).
    `reported / predicted` is the fraction of the roofline the published run reached.
    """
    from .configs import mixtral_8x7b_config

    config = config if config is not None else mixtral_8x7b_config()
    roofline_kw.setdefault("dtype", ref.dtype)
    roofline_kw.setdefault("num_gpus", ref.num_gpus)
    df = decode_roofline(
        config, ref.gpu, ref.batch_sizes, context=context, price_per_hour=ref.price_per_hour, **roofline_kw
    )
    out = df[["batch", "distinct_experts_per_layer", "bound", "fits"]].copy()
    out["reported_tokens_per_s"] = list(ref.tokens_per_s)
    out["predicted_tokens_per_s"] = df.tokens_per_s
    out["reported_over_predicted"] = out.reported_tokens_per_s / out.predicted_tokens_per_s
    out["reported_usd_per_million"] = [cost_per_million_tokens(t, ref.price_per_hour) for t in ref.tokens_per_s]
    out["predicted_usd_per_million"] = df.usd_per_million_tokens
    return out


@dataclass(frozen=True)
class MemoryClaimCheck:
    """Verdict of `check_memory_claim`; `scenarios` is a DataFrame with one row per setup."""

    possible: bool  # the claimed setup (dtype on num_gpus x gpu, no offload) can hold the weights
    verdict: str
    scenarios: object  # pandas DataFrame

    def __str__(self) -> str:
        return self.verdict


def check_memory_claim(
    config=None,
    dtype="fp16",
    gpu="A100-80GB-SXM",
    reported_gb=(87, 91),
    num_gpus: int = 1,
    kv_dtype=None,
    alternatives=("fp16", "int8", "int4"),
    gpu_counts=(1, 2),
) -> MemoryClaimCheck:
    """Is a reported memory use possible for `config` at `dtype` on `num_gpus` x `gpu`? If not, which setups fit it?

    Every combination of weight dtype (`alternatives`) x GPU count (`gpu_counts`) x
    {weights on GPU, CPU offload} x {reported unit GB, GiB} is checked: it is *consistent*
    when the reported number lies between the memory the weights need on the GPU(s) and
    the GPUs' total capacity (the KV cache, activations and allocator slack fill the gap).
    With offload, VRAM can hold anything up to capacity. `implied_kv_tokens` is the KV
    cache the gap would hold.

    >>> from moelab.compute import mixtral_8x7b_config
    >>> check_memory_claim(mixtral_8x7b_config(), "fp16", "A100-80GB-SXM", (87, 91)).possible
    False
    """
    import pandas as pd

    from .configs import mixtral_8x7b_config

    config = config if config is not None else mixtral_8x7b_config()
    hw = get_hardware(gpu)
    lo, hi = (reported_gb, reported_gb) if isinstance(reported_gb, (int, float)) else reported_gb
    rows = []
    for wd in dict.fromkeys((str(dtype),) + tuple(alternatives)):
        kvt = kv_bytes_per_token(config, kv_dtype or _default_kv_dtype(wd))
        w = weight_bytes(config, wd)
        for n in dict.fromkeys((num_gpus,) + tuple(gpu_counts)):
            cap = n * hw.memory_bytes
            for offload in (False, True) if w > cap else (False,):  # offload only when needed
                for unit, scale in (("GB", 1e9), ("GiB", 2**30)):
                    r_lo, r_hi = lo * scale, hi * scale
                    floor = 0.0 if offload else w  # bytes the GPU(s) must hold at least
                    weights_fit = offload or w <= cap
                    consistent = weights_fit and r_hi >= floor and r_lo <= cap
                    kv_lo = max(r_lo - floor, 0) / kvt if consistent and not offload else float("nan")
                    kv_hi = max(min(r_hi, cap) - floor, 0) / kvt if consistent and not offload else float("nan")
                    rows.append(dict(
                        weights=wd, num_gpus=n, offload=offload, reported_unit=unit,
                        weights_gb=w / 1e9, capacity_gb=cap / 1e9, reported_low_gb=r_lo / 1e9,
                        reported_high_gb=r_hi / 1e9, weights_fit=weights_fit, consistent=consistent,
                        implied_kv_tokens_low=kv_lo, implied_kv_tokens_high=kv_hi,
                    ))
    df = pd.DataFrame(rows)
    w_claim = weight_bytes(config, dtype)
    cap_claim = num_gpus * hw.memory_bytes
    possible = w_claim <= cap_claim
    claim = f"{dtype} weights on {num_gpus}x {hw.name}"
    lines = [
        f"Claim: {claim}, {lo:g}-{hi:g} GB used. Weights need {w_claim / 1e9:.1f} GB "
        f"({w_claim / 2**30:.1f} GiB); capacity {cap_claim / 1e9:.1f} GB ({cap_claim / 2**30:.0f} GiB): "
        + ("the weights fit." if possible else "IMPOSSIBLE, the weights alone do not fit.")
    ]
    if lo * 1e9 > cap_claim:
        lines.append(
            f"The reported use ({lo:g} GB = {lo * 1e9 / 2**30:.1f} GiB at the low end) exceeds the "
            f"capacity of {num_gpus} GPU(s) in either unit, whatever the precision."
        )
    single = df[(df.num_gpus == 1) & ~df.offload & df.weights_fit & (df.reported_unit == "GB")]
    if len(single) and not single.consistent.any():
        r = single.sort_values("weights_gb").iloc[-1]  # the largest weights that still fit
        lines.append(
            f"Nearest single-GPU setup: {r.weights} weights ({r.weights_gb:.1f} GB) + a KV cache filling the card "
            f"reaches at most {r.capacity_gb:.1f} GB, {lo - r.capacity_gb:.1f} GB short of the reported {lo:g} GB."
        )
    w_gib = w_claim / 2**30
    if lo - 0.5 <= w_gib <= hi:
        lines.append(
            f"Note: the {dtype} weights are {w_gib:.1f} GiB, inside the reported {lo:g}-{hi:g}: the number may be the "
            f"weight size in GiB (plus a little KV cache) rather than a measurement on one GPU."
        )
    ok = df[df.consistent]
    if len(ok):
        lines.append("Setups consistent with the reported number (unit the report would be in):")
        for (wd, n, off), g in ok.groupby(["weights", "num_gpus", "offload"], sort=False):
            r = g.iloc[0]
            where = "part of the weights offloaded to CPU RAM" if off else "weights + KV cache split across the GPUs"
            units = "/".join(g.reported_unit)
            kv = "" if off else (
                f"; the rest is room for {g.implied_kv_tokens_low.min():,.0f}-{g.implied_kv_tokens_high.max():,.0f} "
                "KV-cache tokens"
            )
            lines.append(f"  - {wd} weights ({r.weights_gb:.1f} GB) on {n} GPU(s), {where} [{units}]{kv}")
    else:
        lines.append("No checked setup is consistent with the reported number.")
    return MemoryClaimCheck(possible=possible, verdict="\n".join(lines), scenarios=df)
