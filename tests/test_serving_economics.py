"""Serving economics and the claims audit: known answers and refusals."""

import math

import numpy as np
import pytest

from moelab.compute import mixtral_8x7b_config
from moelab.serving import (blended_price, break_even_table, break_even_volume, claims_table, cost_table,
                            expert_bytes, implied_ratio, max_cache_size, offloaded_tokens_per_s, self_hosted_monthly,
                            usd_per_million)
from moelab.serving.economics import quantised_bytes_per_param

# Mixtral 8x7B in closed form (paper Table 1): hidden 4096, ffn 14336, 32 layers, 32 heads of 128,
# 8 KV heads, vocab 32000, 8 experts; untied embeddings and head.
H, F, L, V, E, KV = 4096, 14336, 32, 32000, 8, 8 * 128
EXPERT = 3 * H * F                                                   # one SwiGLU expert, one layer
NON_EXPERT = 2 * V * H + L * (2 * H * H + 2 * H * KV + H * E + 2 * H) + H  # embed, head, attention, router, norms
GIB24 = 24 * 2 ** 30


def test_95_tokens_per_second_at_1_29_an_hour_is_3_77_per_million():
    assert usd_per_million(95, 1.29) == pytest.approx(3.77, abs=0.005)


def test_fireworks_split_prices_average_about_60_cents():
    assert 0.57 < blended_price(0.40, 1.60, 6) < blended_price(0.40, 1.60, 4) < 0.65
    assert blended_price(0.40, 1.60, 0) == 1.60
    assert implied_ratio(0.40, 1.60, blended_price(0.40, 1.60, 5)) == pytest.approx(5)


def test_break_even_exists_only_when_a_gpu_month_beats_the_api():
    assert math.isinf(break_even_volume(1.50, 95, 1.29, utilisation=0.7))  # seed 000's A100 never wins
    v = break_even_volume(1.50, 2000, 1.29, utilisation=0.7)
    t = break_even_table([v * 0.99, v * 1.01], 1.50, 2000, 1.29, utilisation=0.7)
    assert t.savings.iloc[0] < 0 <= t.savings.iloc[1]


def test_prices_and_throughputs_must_be_positive_and_say_so():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"usd_per_hour={bad!r}"):
            usd_per_million(95, bad)
        with pytest.raises(ValueError, match=f"input_price={bad!r}"):
            blended_price(bad, 1.6, 4)
    import pandas as pd
    with pytest.raises(KeyError, match="usd_per_hour"):
        cost_table(pd.DataFrame({"tokens_per_s": [1.0]}))


def test_offloaded_speed_is_bounded_by_the_link_and_by_hbm():
    c = mixtral_8x7b_config()
    all_hit = offloaded_tokens_per_s(c, 1.0, "RTX-4090", "int4")
    none = offloaded_tokens_per_s(c, 0.0, "RTX-4090", "int4")
    # no hits: 32 layers x 2 experts x 90.8 MB (int4 + fp16 scale per 128) over 31.5 GB/s dominate
    eb = EXPERT * (0.5 + 2 / 128)
    pcie4 = 16e9 * 16 * 128 / 130 / 8  # 16 GT/s x 16 lanes, 128b/130b, bytes
    assert none == pytest.approx(1 / (32 * 2 * eb / pcie4 + 1 / all_hit), rel=1e-9)
    # all hits: GPU reads the non-expert weights (one embedding row) + 2 experts per layer over 1008 GB/s
    gpu = (NON_EXPERT - V * H + H + L * 2 * EXPERT) * (0.5 + 2 / 128)
    assert all_hit == pytest.approx(1008e9 / gpu, rel=1e-6)
    assert offloaded_tokens_per_s(c, 0.5, "RTX-4090", "int4", overlap=True) >= offloaded_tokens_per_s(c, 0.5, "RTX-4090", "int4")
    assert max_cache_size(c, "RTX-4090", "int8") == 3 and max_cache_size(c, "RTX-4090", "fp16") < 2


def test_utilisation_must_be_a_fraction_and_the_error_says_so():
    for bad in (1.5, 0, -0.2, float("nan"), "high"):
        for f in (lambda u: break_even_volume(1.50, 95, 1.29, utilisation=u),
                  lambda u: self_hosted_monthly(1e8, 95, 1.29, utilisation=u),
                  lambda u: break_even_table([1e8], 1.50, 95, 1.29, utilisation=u)):
            with pytest.raises(ValueError, match=r"utilisation=.*\(0, 1\]"):
                f(bad)
    assert math.isfinite(break_even_volume(1.50, 2000, 1.29, utilisation=1.0))


def test_fixed_monthly_cost_cannot_be_negative():
    for bad in (-1.0, -1e6, float("inf")):
        with pytest.raises(ValueError, match=f"fixed_monthly={bad!r}.*>= 0"):
            break_even_volume(1.50, 2000, 1.29, fixed_monthly=bad)
        with pytest.raises(ValueError, match=f"fixed_monthly={bad!r}"):
            self_hosted_monthly(1e8, 95, 1.29, fixed_monthly=bad)
    with pytest.raises(ValueError, match="hours_per_month=0"):
        break_even_volume(1.50, 2000, 1.29, hours_per_month=0)


def test_break_even_volume_with_fixed_costs_matches_the_cheapest_whole_gpu_count():
    # brute force: the smallest volume on a fine grid where n GPUs + fixed cost <= API cost
    tps, price, api, u, h, fixed = 2000, 1.29, 1.50, 0.7, 720, 5000.0
    cap, G = tps * 3600 * h * u, price * h
    v = break_even_volume(api, tps, price, utilisation=u, hours_per_month=h, fixed_monthly=fixed)
    grid = np.linspace(1e6, 20 * cap, 200001)
    cost = np.ceil(grid / cap) * G + fixed
    first = grid[np.argmax(cost <= grid / 1e6 * api)]
    assert v == pytest.approx(first, rel=1e-3)


def test_a_30_day_rental_is_720_hours():
    assert self_hosted_monthly(1e7, 95, 1.29, utilisation=0.7, hours_per_month=24 * 30) == pytest.approx(1.29 * 720)
    assert self_hosted_monthly(1e7, 95, 1.29, utilisation=0.7) == pytest.approx(1.29 * 365 * 24 / 12)  # mean month


def test_int4_and_int8_carry_one_fp16_scale_per_group():
    assert quantised_bytes_per_param("int4") == 0.5 + 2 / 128
    assert quantised_bytes_per_param("int8", group_size=64) == 1 + 2 / 64
    assert quantised_bytes_per_param("int4", group_size=None) == 0.5
    assert quantised_bytes_per_param("fp16") == 2  # floats carry no scales
    c = mixtral_8x7b_config()
    assert expert_bytes(c, "int4") == EXPERT * (0.5 + 2 / 128)
    assert expert_bytes(c, "int4", group_size=None) == EXPERT * 0.5
    with pytest.raises(ValueError, match="group_size=0"):
        quantised_bytes_per_param("int4", group_size=0)


def test_max_cache_size_counts_scales_so_int4_mixtral_holds_7_experts_on_a_4090():
    c = mixtral_8x7b_config()

    def closed_form(q, reserve_gb=2.0):
        free = GIB24 - NON_EXPERT * q - reserve_gb * 1e9
        return max(0, min(E, int(free // (L * EXPERT * q))))

    for g in (32, 64, 128, 256, None):
        q = 0.5 + (2 / g if g else 0)
        for r in (0.0, 1.0, 2.0):
            assert max_cache_size(c, "RTX-4090", "int4", reserve_gb=r, group_size=g) == closed_form(q, r)
    assert max_cache_size(c, "RTX-4090", "int4") == 7  # all 8 only when the scales are ignored
    assert max_cache_size(c, "RTX-4090", "int4", group_size=None) == 8
    with pytest.raises(ValueError, match="reserve_gb=-1"):
        max_cache_size(c, "RTX-4090", "int4", reserve_gb=-1)


def test_claims_table_recomputes_the_issue_rows():
    d = claims_table()
    assert d.loc["000-cost-95", "recomputed"] == "$3.77/M" and d.loc["000-cost-95", "verdict"] == "wrong"
    assert "342,000" in d.loc["000-tokens-hour", "recomputed"]
    assert d.loc["003-two-copies", "verdict"] == "impossible" and "46.7 GB each" in d.loc["003-two-copies", "recomputed"]
    assert d.loc["003-8bit-40", "recomputed"] == "50%"
    assert "138 GB" in d.loc["001-llama-25", "recomputed"] and d.loc["001-llama-25", "verdict"] == "impossible"
    assert d.loc["001-llama-25-quantised", "verdict"] == "plausible"
    assert d.loc["004-mmlu", "verdict"] == "disagrees with the paper"
    assert set(d.verdict) <= {"right", "wrong", "impossible", "plausible", "agrees with the paper",
                              "disagrees with the paper", "not checkable here"}
    assert (d.working.str.len() > 0).all()
