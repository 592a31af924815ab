"""Notebook 08's tables (moelab.serving.report), checked against the library calls they stand for."""

import math

import numpy as np
import pandas as pd
import pytest

from moelab.compute import mixtral_8x7b_config
from moelab.serving import (break_even_table, break_even_volume, claims_table, expert_bytes, hit_rate_table,
                            simulate_cache, usd_per_million)
from moelab.serving.report import (break_even_sweep, break_even_utilisation, break_even_volumes, bytes_moved_table,
                                   cost_claim_factors)


def test_bytes_moved_per_token_is_the_cache_results_bytes_per_token_for_a_trace_as_deep_as_the_model():
    mx = mixtral_8x7b_config()
    ex = np.random.default_rng(0).integers(0, 8, (3_000, 32, 2))  # 32 layers, like Mixtral
    moved = bytes_moved_table(hit_rate_table(ex, [2, 5], ["lru", "belady"], label="iid"), mx)
    assert len(moved) == 2 * 2 * 3 and set(moved.dtype) == {"fp16", "int8", "int4"}
    for (pol, C, dt), mb in moved.set_index(["policy", "capacity", "dtype"]).mb_per_token.items():
        ref = simulate_cache(ex, C, pol, num_experts=8).bytes_per_token(expert_bytes(mx, dt)) / 1e6
        assert mb == pytest.approx(ref, rel=1e-12), (pol, C, dt)


def test_a_shallow_trace_stands_in_for_every_moe_layer_at_its_per_layer_rate():
    mx = mixtral_8x7b_config()
    ex = np.random.default_rng(1).integers(0, 8, (2_000, 4, 2))
    moved = bytes_moved_table(hit_rate_table(ex, [4], ["lru"]), mx, dtypes=["int4"]).iloc[0]
    r = simulate_cache(ex, 4, "lru", num_experts=8)
    assert moved.experts_per_layer == pytest.approx(r.loads.mean() / r.tokens)
    assert moved.mb_per_token == pytest.approx(r.bytes_per_token(expert_bytes(mx, "int4")) * 32 / 4 / 1e6)


def test_break_even_sweep_and_volumes_are_the_economics_functions_at_each_utilisation():
    setups = {"slow": (95, 1.29), "fast": (2000, 1.29)}
    vols = [1e8, 1e9, 1e10]
    sweep = break_even_sweep(setups, 1.50, [0.3, 0.9], vols)
    assert len(sweep) == 2 * 2 * 3
    got = sweep[(sweep.setup == "fast") & (sweep.utilisation == 0.3)].reset_index(drop=True)
    ref = break_even_table(vols, 1.50, 2000, 1.29, utilisation=0.3)
    pd.testing.assert_frame_equal(got[ref.columns], ref)
    bev = break_even_volumes(setups, 1.50, [0.3, 0.9])
    assert bev.shape == (2, 2) and math.isinf(bev.loc["slow", 0.9])
    assert bev.loc["fast", 0.3] == break_even_volume(1.50, 2000, 1.29, utilisation=0.3)


def test_below_the_break_even_utilisation_self_hosting_never_pays_and_just_above_it_does():
    u = break_even_utilisation(1.50, 2000, 1.29)
    assert u == pytest.approx(usd_per_million(2000, 1.29) / 1.50)
    assert math.isinf(break_even_volume(1.50, 2000, 1.29, utilisation=u * 0.99))
    assert math.isfinite(break_even_volume(1.50, 2000, 1.29, utilisation=u * 1.01))
    assert break_even_utilisation(1.50, 95, 1.29) > 1  # the seed-000 setup: never, at any utilisation


def test_cost_claim_factors_divide_the_recomputed_price_by_the_claimed_one():
    claims = pd.DataFrame({"claim": ["95 tok/s at $1.29/h = $0.16 per M tokens", "X at 55 tok/s = ~$0.18/M", "MMLU 70%"],
                           "recomputed": ["$3.77/M", "$7.58/M", "70.6%"]}, index=["a", "b", "c"])
    f = cost_claim_factors(claims)
    assert list(f.index) == ["a", "b"] and f.factor.tolist() == pytest.approx([3.77 / 0.16, 7.58 / 0.18])
    with pytest.raises(ValueError, match="no cost claim"):
        cost_claim_factors(claims.loc[["c"]])


def test_every_cost_claim_of_the_audit_is_read_and_is_too_low():
    f = cost_claim_factors(claims_table())
    assert len(f) >= 2 and (f.factor > 1).all()
