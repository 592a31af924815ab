"""Expert parallelism: imbalance, EPLB-style placement, all-to-all bytes."""

import numpy as np
import pytest

from moelab.serving import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, eplb_weight,
                            expert_load, gpu_loads, imbalance, imbalance_over_windows)


def test_expert_load_counts_every_choice_per_layer():
    ex = np.array([[[0, 1], [2, 3]], [[0, 2], [2, 1]]])  # (tokens, layers, k)
    assert expert_load(ex, 4).tolist() == [[2, 1, 1, 0], [0, 1, 2, 1]]
    assert eplb_weight(ex, 4).dtype == np.float64 and eplb_weight(ex, 4).shape == (2, 4)


def test_uniform_load_is_perfectly_balanced_and_one_hot_load_costs_g():
    load = np.full((1, 8), 10.0)
    assert imbalance(load, contiguous_placement(8, 4), 4).tolist() == [1.0]
    hot = np.zeros((1, 8)); hot[0, 3] = 5
    assert imbalance(hot, contiguous_placement(8, 4), 4).tolist() == [4.0]


def test_balanced_placement_never_worse_than_contiguous_and_replicas_split_a_hot_expert():
    rng = np.random.default_rng(0)
    for _ in range(30):
        load = rng.dirichlet(np.ones(8) * 0.3, size=3) * 1000
        cont = imbalance(load, contiguous_placement(8, 4), 4)
        bal = balanced_placement(load, 4, 12)
        assert (imbalance(load, bal, 4) <= cont + 1e-9).all()
        assert all(set(row) == set(range(8)) for row in bal)  # every expert placed
        assert gpu_loads(load, bal, 4).sum(1) == pytest.approx(load.sum(1))  # no work lost
    hot = np.array([[60.0, 20, 20, 20]])
    assert imbalance(hot, balanced_placement(hot, 2, 4), 2)[0] == pytest.approx(80 / 60)  # no spare slot: 60+20 | 20+20
    assert imbalance(hot, balanced_placement(hot, 2, 6), 2)[0] == pytest.approx(1.0)  # 60 split 3 ways: six 20s


def test_windows_show_imbalance_that_the_aggregate_hides():
    ex = np.concatenate([np.zeros((100, 1, 1), int), np.full((100, 1, 1), 7)])  # first half expert 0, then 7
    df = imbalance_over_windows(ex, 2, 100, num_experts=8)
    agg = imbalance(expert_load(ex, 8), contiguous_placement(8, 2), 2)[0]
    assert agg == 1.0 and df.contiguous.tolist() == [2.0, 2.0]


def test_dispatch_bytes_match_the_closed_form_for_uniform_routing():
    G, H = 4, 16
    ex = np.random.default_rng(1).integers(0, 8, (40_000, 1, 1))
    b = dispatch_bytes_per_token(ex, contiguous_placement(8, G), G, H, 2.0, num_experts=8)[0]
    assert b == pytest.approx(2 * H * 2.0 * (G - 1) / G, rel=0.02)
    assert dispatch_bytes_per_token(ex, contiguous_placement(8, 1), 1, H, num_experts=8)[0] == 0


def test_bad_device_counts_are_refused_with_the_value():
    for G in (0, -2, 3):
        with pytest.raises(ValueError, match=f"G={G}"):
            imbalance(np.ones((1, 8)), contiguous_placement(8, 4), G) if G != 3 else contiguous_placement(8, G)
