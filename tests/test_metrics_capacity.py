"""Capacity-factor drops: hand examples, a brute-force simulator, and the limiting cases."""

import math

import numpy as np
import pytest

import moelab
from moelab.metrics import capacity, capacity_drops


def simulate(experts_l: np.ndarray, cf: float, batch: int, E: int):
    """Reference: serve assignments one by one (rank 0 of every token, then rank 1, ...)."""
    T, k = experts_l.shape
    dropped = dropped_first = 0
    for start in range(0, T, batch):
        chunk = experts_l[start : start + batch]
        C = math.ceil(cf * k * len(chunk) / E)
        load = [0] * E
        for r in range(k):
            for e in chunk[:, r]:
                if load[e] < C:
                    load[e] += 1
                else:
                    dropped += 1
                    dropped_first += r == 0
    return dropped / (T * k), dropped_first / T


def test_capacity_is_the_ceiling_of_cf_k_t_over_e():
    assert capacity(1.0, 4096, 2, 8) == 1024
    assert capacity(1.25, 100, 2, 8) == 32                              # 31.25 -> 32
    assert capacity(1.1, 1000, 1, 10) == 110                            # no float round-up to 111


def test_hand_example_drops_the_overflow_of_one_expert():
    ex = np.array([0, 0, 0, 1])[:, None, None]                          # C = ceil(1*1*4/2) = 2
    row = capacity_drops(moelab.RoutingTrace.from_arrays(ex, num_experts=2), [1.0], [4]).iloc[0]
    assert (row["capacity"], row["dropped"], row["dropped_first"]) == (2, 0.25, 0.25)


def test_first_choices_are_served_before_second_choices():
    # C = 2; expert 0 gets 2 first + 1 second choice, expert 1 gets 1 first + 2 second
    ex = np.array([[0, 1], [0, 1], [1, 0], [2, 3]])[:, None, :]
    row = capacity_drops(moelab.RoutingTrace.from_arrays(ex, num_experts=4), [1.0], [4]).iloc[0]
    assert row["dropped"] == 2 / 8
    assert row["dropped_first"] == 0.0                                  # only second choices lose


@pytest.mark.parametrize("batch", [7, 16, 50])
def test_matches_a_brute_force_simulation_including_a_short_last_batch(batch):
    rng = np.random.default_rng(batch)
    p = rng.dirichlet(np.ones(6) * 0.7)
    ex = np.stack([rng.choice(6, 2, replace=False, p=p) for _ in range(103)])[:, None, :]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=6)
    df = capacity_drops(t, [0.5, 1.0, 1.5], [batch])
    for cf in (0.5, 1.0, 1.5):
        row = df.xs(cf, level="capacity_factor").iloc[0]
        assert (row["dropped"], row["dropped_first"]) == pytest.approx(simulate(ex[:, 0], cf, batch, 6))


def test_capacity_factor_of_e_over_k_never_drops():
    rng = np.random.default_rng(0)
    ex = np.zeros((500, 2, 2), int)
    ex[..., 0] = 3
    ex[..., 1] = rng.integers(4, 8, (500, 2))                           # maximally unbalanced
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=8, sequence=np.arange(500) // 100)
    df = capacity_drops(t, [8 / 2, 5.0], [1, 64, 500, "sequence"])
    assert (df["dropped"] == 0).all()


def test_all_tokens_to_one_expert_drops_one_minus_cf_k_over_e():
    ex = np.zeros((64, 1, 1), int)                                      # k = 1, E = 8
    df = capacity_drops(moelab.RoutingTrace.from_arrays(ex, num_experts=8), [1.0, 2.0], [64])
    assert df["dropped"].tolist() == [1 - 1 / 8, 1 - 2 / 8]
    ex2 = np.tile([0, 1], (64, 1))[:, None, :]                          # k = 2: experts 0 and 1 always
    row = capacity_drops(moelab.RoutingTrace.from_arrays(ex2, num_experts=8), [1.0], [64]).iloc[0]
    assert (row["dropped"], row["dropped_first"]) == (0.75, 0.75)


def test_sequence_batches_use_each_sequence_length():
    ex = np.array([0, 0, 0, 0, 1, 1])[:, None, None]                    # seq 0: 4x expert 0; seq 1: 2x expert 1
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2, sequence=[0, 0, 0, 0, 1, 1])
    row = capacity_drops(t, [1.0], ["sequence"]).iloc[0]
    # C = 2 for seq 0 (drops 2), C = 1 for seq 1 (drops 1)
    assert row["dropped"] == 3 / 6 and row["batches"] == 2


def test_index_and_errors():
    t = moelab.RoutingTrace.from_arrays(np.zeros((4, 2, 1), int), num_experts=2, layer_ids=[0, 5])
    df = capacity_drops(t, [1.0, 2.0], [2, 4])
    assert list(df.index.names) == ["layer", "capacity_factor", "batch_size"] and len(df) == 8
    with pytest.raises(ValueError, match="capacity factor -1.0"):
        capacity_drops(t, [-1.0], [4])
    with pytest.raises(ValueError, match="'document'"):
        capacity_drops(t, [1.0], ["document"])
