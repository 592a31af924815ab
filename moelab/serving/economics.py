"""
Serving economics: $/M tokens, blended input/output prices, break-even against an API, and the
decode speed an offloaded MoE reaches over its host link.

    >>> from moelab.serving import usd_per_million, blended_price
    >>> round(usd_per_million(95, 1.29), 2)                    # 95 tok/s on a $1.29/h A100
    3.77
    >>> [round(blended_price(0.40, 1.60, r), 3) for r in (4, 6)]   # Fireworks at 4:1 and 6:1 prompt:generation
    [0.64, 0.571]

    usd_per_million = usd_per_hour / (3600 x tokens_per_s) x 1e6
    blended         = (ratio x input_price + output_price) / (ratio + 1),  ratio = input tokens per output token
    self-hosted     = ceil(volume / capacity) GPUs x usd_per_hour x hours_per_month (+ fixed), where
                      capacity = tokens_per_s x 3600 x hours_per_month x utilisation  (dedicated GPUs)

`hours_per_month` defaults to 730, the mean month (365 x 24 / 12); pass 720 for a 30-day rental.

Quantised weights carry scales: integer dtypes (int8, int4) are counted with one fp16 scale per
`group_size` weights (default 128, the GPTQ/AWQ default), i.e. int4 = 0.5 + 2/128 = 0.515625 bytes
per weight; `group_size=None` counts the bare weights.

    >>> from moelab.serving.economics import quantised_bytes_per_param
    >>> quantised_bytes_per_param("int4"), quantised_bytes_per_param("int4", group_size=None)
    (0.515625, 0.5)

Offloaded decode (batch 1; Eliseev & Mazur 2023's setting), per token:

    t = bytes read from GPU memory / HBM bandwidth  +  experts missed x expert bytes / host-link bandwidth
    GPU reads: every non-expert weight + k experts per MoE layer;  misses per layer = k x (1 - hit rate)

with `overlap=True` giving max(...) instead of the sum (copies hidden behind compute, an upper bound).
Peak link and HBM figures make this an upper bound on speed; pass `link_efficiency` (measured
pinned copies reach ~0.8-0.9 of PCIe peak) to be realistic.
"""

from __future__ import annotations

import math

import numpy as np


def _positive(name, v):
    try:
        ok = float(v) > 0 and math.isfinite(float(v))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={v!r} must be a positive number")
    return float(v)


def _fraction(name, v):
    try:
        ok = 0 < float(v) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={v!r} must be a fraction in (0, 1] (e.g. 0.7 for 70 % busy)")
    return float(v)


def _non_negative(name, v):
    try:
        ok = float(v) >= 0 and math.isfinite(float(v))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={v!r} must be a finite number >= 0 ($ per month on top of the GPUs)")
    return float(v)


INTEGER_DTYPES = ("int8", "int4")


def quantised_bytes_per_param(dtype, group_size=128, scale_bytes=2.0) -> float:
    """Bytes per weight at `dtype`, with one `scale_bytes` scale per `group_size` weights for integer
    dtypes (int8, int4); float dtypes and `group_size=None` give the bare width (module docstring)."""
    from ..compute.memory import dtype_bytes

    b = float(dtype_bytes(dtype))
    if group_size is None or str(dtype).replace("torch.", "").lower() not in INTEGER_DTYPES:
        return b
    g = _positive("group_size", group_size)
    return b + _non_negative("scale_bytes", scale_bytes) / g


def usd_per_million(tokens_per_s, usd_per_hour) -> float:
    """$ per 1M tokens from a throughput (tokens/s) and an hourly price."""
    return _positive("usd_per_hour", usd_per_hour) / (3600.0 * _positive("tokens_per_s", tokens_per_s)) * 1e6


def tokens_per_hour(tokens_per_s) -> float:
    return 3600.0 * _positive("tokens_per_s", tokens_per_s)


def blended_price(input_price, output_price, input_per_output) -> float:
    """$ per 1M tokens averaged over input and output tokens at `input_per_output` input tokens per output token."""
    a, b = _positive("input_price", input_price), _positive("output_price", output_price)
    r = float(input_per_output)
    if not r >= 0:
        raise ValueError(f"input_per_output={input_per_output!r} must be >= 0 (input tokens per output token)")
    return (r * a + b) / (r + 1)


def implied_ratio(input_price, output_price, blended) -> float:
    """The input:output ratio at which split prices average to `blended`."""
    a, b, c = (_positive(n, v) for n, v in (("input_price", input_price), ("output_price", output_price),
                                             ("blended", blended)))
    if not min(a, b) <= c <= max(a, b):
        raise ValueError(f"blended={blended!r} must lie between the two prices {a} and {b}")
    return (b - c) / (c - a) if c != a else math.inf


def self_hosted_monthly(volume, tokens_per_s, usd_per_hour, *, utilisation=1.0, hours_per_month=730.0,
                        fixed_monthly=0.0, dedicated=True) -> float:
    """$ per month to serve `volume` tokens: whole dedicated GPUs (default) or pay-per-hour-used."""
    tps, price = _positive("tokens_per_s", tokens_per_s), _positive("usd_per_hour", usd_per_hour)
    u = _fraction("utilisation", utilisation)
    hours_per_month = _positive("hours_per_month", hours_per_month)
    fixed_monthly = _non_negative("fixed_monthly", fixed_monthly)
    v = float(volume)
    if v < 0:
        raise ValueError(f"volume={volume!r} tokens per month must be >= 0")
    if dedicated:
        capacity = tps * 3600 * hours_per_month * u
        return max(1, math.ceil(v / capacity)) * price * hours_per_month + fixed_monthly
    return v / (tps * 3600 * u) * price + fixed_monthly


def break_even_table(volumes, api_price, tokens_per_s, usd_per_hour, *, utilisation=0.7, hours_per_month=730.0,
                     fixed_monthly=0.0, dedicated=True):
    """DataFrame per monthly volume: api_cost, self_hosted_cost, savings (api - self-hosted), gpus."""
    import pandas as pd

    api = _positive("api_price", api_price)
    rows = []
    for v in volumes:
        sh = self_hosted_monthly(v, tokens_per_s, usd_per_hour, utilisation=utilisation,
                                 hours_per_month=hours_per_month, fixed_monthly=fixed_monthly, dedicated=dedicated)
        cap = tokens_per_s * 3600 * hours_per_month * utilisation
        rows.append(dict(volume=float(v), api_cost=v / 1e6 * api, self_hosted_cost=sh,
                         savings=v / 1e6 * api - sh, gpus=max(1, math.ceil(v / cap)) if dedicated else np.nan))
    return pd.DataFrame(rows)


def break_even_volume(api_price, tokens_per_s, usd_per_hour, *, utilisation=0.7, hours_per_month=730.0,
                      fixed_monthly=0.0) -> float:
    """Smallest monthly volume at which dedicated self-hosting costs no more than the API; inf if never.

    With n GPUs (capacity `cap` tokens/month each, cost G/month each, fixed F) self-hosting wins on
    ((n-1) cap, n cap] from volume (n G + F) / api on; that needs n (cap x api - G) >= F, impossible
    whenever one GPU's month costs more than its capacity at API prices (cap x api <= G)."""
    a = _positive("api_price", api_price) / 1e6  # $ per token
    hours_per_month = _positive("hours_per_month", hours_per_month)
    fixed_monthly = _non_negative("fixed_monthly", fixed_monthly)
    G = _positive("usd_per_hour", usd_per_hour) * hours_per_month
    cap = _positive("tokens_per_s", tokens_per_s) * 3600 * hours_per_month * _fraction("utilisation", utilisation)
    margin = cap * a - G
    if margin <= 0:
        return math.inf
    n = max(1, math.ceil(fixed_monthly / margin)) if fixed_monthly > 0 else 1
    return max((n * G + fixed_monthly) / a, (n - 1) * cap)


def cost_table(df, *, tokens_per_s="tokens_per_s", usd_per_hour="usd_per_hour"):
    """Add `usd_per_million` to a DataFrame with throughput and price columns (names configurable)."""
    missing = [c for c in (tokens_per_s, usd_per_hour) if c not in df.columns]
    if missing:
        raise KeyError(f"cost_table needs columns {missing}; the frame has {list(df.columns)}")
    out = df.copy()
    out["usd_per_million"] = [usd_per_million(t, p) for t, p in zip(df[tokens_per_s], df[usd_per_hour])]
    return out


# ----------------------------------------------------------------------------------- offloading
def expert_bytes(config, dtype="fp16", *, group_size=128) -> float:
    """Bytes of one expert's weights (one layer) at `dtype`, int8/int4 with their group-wise fp16
    scales (`quantised_bytes_per_param`; `group_size=None` for the bare weights)."""
    from ..compute.params import expert_params
    from ..compute.shape import model_shape

    return expert_params(model_shape(config)) * quantised_bytes_per_param(dtype, group_size)


def max_cache_size(config, gpu="RTX-4090", dtype="int4", *, reserve_gb=2.0, group_size=128) -> int:
    """Largest per-layer cache size C whose weights fit the GPU: non-expert weights + layers x C experts
    + `reserve_gb` (KV cache, activations, CUDA context). 0 if even C = 0 does not fit.

    Integer dtypes count one fp16 scale per `group_size` weights (module docstring): Mixtral 8x7B at
    int4 on an RTX 4090 (24 GiB) with 2 GB reserved then holds C = 7 of 8 experts per layer; the bare
    int4 weights (`group_size=None`) would claim all 8.

    >>> from moelab.compute import mixtral_8x7b_config
    >>> mx = mixtral_8x7b_config()
    >>> max_cache_size(mx, "RTX-4090", "int4"), max_cache_size(mx, "RTX-4090", "int4", group_size=None)
    (7, 8)
    """
    from ..compute.hardware import get_hardware
    from ..compute.params import count_params
    from ..compute.shape import model_shape

    s = model_shape(config)
    p = count_params(s)
    non_expert = (p.total - p.experts.total) * quantised_bytes_per_param(dtype, group_size)
    free = get_hardware(gpu).memory_bytes - non_expert - _non_negative("reserve_gb", reserve_gb) * 1e9
    c = int(free // (s.num_moe_layers * expert_bytes(s, dtype, group_size=group_size))) if free > 0 else 0
    return max(0, min(c, s.num_experts))


def offloaded_tokens_per_s(config, hit_rate, gpu="RTX-4090", dtype="int4", *, link=None, link_efficiency=1.0,
                           overlap=False, prefetch_loads_per_layer=0.0, group_size=128) -> float:
    """Decode tokens/s at batch 1 with experts streamed over the host link (module docstring).

    hit_rate: scalar or per-MoE-layer array (e.g. `simulate_cache(...).hit_rate`). Integer dtypes
    read and move their group-wise scales too (`group_size`, as in `max_cache_size`)."""
    from ..compute.hardware import get_hardware, get_link
    from ..compute.params import count_params
    from ..compute.shape import model_shape

    s = model_shape(config)
    hw = get_hardware(gpu)
    ln = get_link(link if link is not None else hw)
    h = np.broadcast_to(np.asarray(hit_rate, float), (s.num_moe_layers,))
    if ((h < 0) | (h > 1)).any():
        raise ValueError(f"hit_rate={hit_rate!r} must lie in [0, 1]")
    p = count_params(s)
    b = quantised_bytes_per_param(dtype, group_size)
    eb = expert_bytes(s, dtype, group_size=group_size)
    gpu_bytes = (p.total - p.embeddings.total - p.experts.total + s.hidden) * b + s.num_moe_layers * s.top_k * eb
    moved = (s.top_k * (1 - h).sum() + s.num_moe_layers * float(prefetch_loads_per_layer)) * eb
    t_gpu = gpu_bytes / (hw.bandwidth_gbs * 1e9)
    t_link = moved / (ln.gbs_per_direction * 1e9 * _positive("link_efficiency", link_efficiency))
    return float(1.0 / (max(t_gpu, t_link) if overlap else t_gpu + t_link))
