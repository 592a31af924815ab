"""Repeat rates (Mixtral Table 5): random baselines, identical routing, and which pairs count."""

from itertools import combinations

import numpy as np
import pytest

import moelab
from moelab.metrics import consecutive_pairs, next_token_ids, random_repeat_rates, repeat_rates


def random_topk(rng, T, L, E, k):
    return np.argsort(rng.random((T, L, E)), -1)[..., :k]              # uniform k-subsets, random order


def test_random_top2_of_8_repeats_at_the_random_rates():
    rng = np.random.default_rng(0)
    T, L = 40_000, 2
    df = repeat_rates(moelab.RoutingTrace.from_arrays(random_topk(rng, T, L, 8, 2), num_experts=8))
    n = T - 1
    for col, p in (("first", 1 / 8), ("any", 1 - (6 / 8) * (5 / 7))):
        sigma = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(df[col] - p) < 3 * sigma), (col, df[col].tolist(), p)
    assert df["first_random"].iloc[0] == 0.125
    assert df["any_random"].iloc[0] == pytest.approx(1 - 30 / 56)       # ≈ 0.464
    assert (df["pairs"] == n).all()


def test_any_random_counts_intersecting_pairs_of_k_subsets():
    for E, k in ((6, 2), (8, 3), (5, 1)):
        sets = list(combinations(range(E), k))
        hit = np.mean([bool(set(a) & set(b)) for a in sets for b in sets])
        assert random_repeat_rates(E, k) == (pytest.approx(1 / E), pytest.approx(hit))


def test_identical_consecutive_routing_repeats_always():
    ex = np.tile([[3, 5]], (10, 4, 1))
    df = repeat_rates(moelab.RoutingTrace.from_arrays(ex, num_experts=8, sequence=np.arange(10) // 5))
    assert (df["first"] == 1).all() and (df["any"] == 1).all() and (df["pairs"] == 8).all()


def test_second_choice_shared_counts_for_any_but_not_first():
    ex = np.array([[[0, 1]], [[1, 2]], [[3, 4]]])                      # t0,t1 share 1; t1,t2 nothing
    row = repeat_rates(moelab.RoutingTrace.from_arrays(ex, num_experts=8)).iloc[0]
    assert (row["first"], row["any"]) == (0.0, 0.5)


def test_pairs_never_cross_sequences():
    # within each sequence experts alternate (never repeat); across the boundary they would
    ex = np.array([0, 1, 0, 0, 1, 0])[:, None, None]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2, sequence=[0, 0, 0, 1, 1, 1])
    row = repeat_rates(t).iloc[0]
    assert (row["first"], row["pairs"]) == (0.0, 4)


def test_pairs_never_cross_a_gap_in_positions():
    ex = np.array([0, 1, 1, 0])[:, None, None]                         # the 1,1 pair straddles a gap
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2, sequence=[0, 0, 0, 0], position=[0, 1, 3, 4])
    assert consecutive_pairs(t)[0].tolist() == [0, 2]
    row = repeat_rates(t).iloc[0]
    assert (row["first"], row["pairs"]) == (0.0, 2)


def test_storage_order_does_not_matter():
    rng = np.random.default_rng(1)
    t = moelab.RoutingTrace.from_arrays(
        rng.integers(0, 4, (60, 3, 1)), num_experts=4, sequence=np.arange(60) // 20
    )
    shuffled = t.select(rng.permutation(60))
    assert repeat_rates(shuffled).equals(repeat_rates(t))


def test_by_domain_gives_one_block_per_domain_equal_to_that_domain_alone():
    rng = np.random.default_rng(2)
    seq = np.arange(200) // 20
    dom = np.where(seq % 2 == 0, "code", "prose")
    t = moelab.RoutingTrace.from_arrays(random_topk(rng, 200, 2, 8, 2), num_experts=8, sequence=seq, domain=dom)
    df = repeat_rates(t, by="domain")
    assert list(df.index.names) == ["domain", "layer"]
    for d in ("code", "prose"):
        alone = repeat_rates(t.select(dom == d))
        assert np.allclose(df.xs(d, level="domain")[["first", "any", "pairs"]], alone[["first", "any", "pairs"]])
    assert df["first"].unstack("domain").shape == (2, 2)               # layer x domain table


def test_baselines_follow_the_traces_e_and_k():
    t = moelab.RoutingTrace.from_arrays(np.tile(np.arange(8), (3, 1, 1)), num_experts=64)
    row = repeat_rates(t).iloc[0]
    assert row["first_random"] == 1 / 64
    assert row["any_random"] == pytest.approx(1 - np.prod([(56 - i) / (64 - i) for i in range(8)]))


def test_next_token_ids_stop_at_sequence_ends_and_gaps():
    t = moelab.RoutingTrace.from_arrays(
        np.zeros((5, 1, 1), int), num_experts=2, token_id=[10, 11, 12, 20, 21],
        sequence=[0, 0, 0, 1, 1], position=[0, 1, 3, 0, 1],
    )
    assert next_token_ids(t).tolist() == [11, -1, -1, 21, -1]
