"""Serving economics and the claims audit: known answers and refusals."""

import math

import numpy as np
import pytest

from moelab.compute import mixtral_8x7b_config
from moelab.serving import (blended_price, break_even_table, break_even_volume, claims_table, cost_table,
                            implied_ratio, max_cache_size, offloaded_tokens_per_s, usd_per_million)


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
    # no hits: 32 layers x 2 experts x 88 MB over 31.5 GB/s dominate
    assert none == pytest.approx(1 / (32 * 2 * 0.0881 / 31.5 + 1 / all_hit), rel=0.01)
    assert offloaded_tokens_per_s(c, 0.5, "RTX-4090", "int4", overlap=True) >= offloaded_tokens_per_s(c, 0.5, "RTX-4090", "int4")
    assert max_cache_size(c, "RTX-4090", "int8") == 3 and max_cache_size(c, "RTX-4090", "fp16") < 2


def test_claims_table_recomputes_the_issue_rows():
    d = claims_table()
    assert d.loc["000-cost-95", "recomputed"] == "$3.77/M" and d.loc["000-cost-95", "verdict"] == "wrong"
    assert "342,000" in d.loc["000-tokens-hour", "recomputed"]
    assert d.loc["003-two-copies", "verdict"] == "impossible" and "46.7 GB each" in d.loc["003-two-copies", "recomputed"]
    assert d.loc["003-8bit-40", "recomputed"] == "50%"
    assert "138 GB" in d.loc["001-llama-25", "recomputed"]
    assert d.loc["004-mmlu", "verdict"] == "disagrees with the paper"
    assert set(d.verdict) <= {"right", "wrong", "impossible", "plausible", "agrees with the paper",
                              "disagrees with the paper", "not checkable here"}
    assert (d.working.str.len() > 0).all()
