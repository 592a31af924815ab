"""Expert parallelism: imbalance, EPLB-style placement, all-to-all bytes."""

import numpy as np
import pytest

from moelab.serving import (balanced_placement, contiguous_placement, dispatch_bytes_per_token, eplb_weight,
                            expert_load, gpu_loads, imbalance, imbalance_over_windows, window_loads)


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


def loop_placement(load, G, num_slots):
    """Reference EPLB-style placement, one layer at a time with Python lists."""
    out = []
    for w in np.asarray(load, float):
        E = len(w)
        reps = np.ones(E, int)
        for _ in range(num_slots - E):
            reps[np.argmax(w / reps)] += 1
        items = np.repeat(np.arange(E), reps)
        share = (w / reps)[items]
        per, gl, fill, slots = num_slots // G, np.zeros(G), np.zeros(G, int), [[] for _ in range(G)]
        for i in np.argsort(-share, kind="stable"):
            d = int(np.argmin(np.where(fill < per, gl, np.inf)))
            slots[d].append(items[i]); gl[d] += share[i]; fill[d] += 1
        out.append(np.concatenate([sorted(s) for s in slots]))
    return np.array(out)


def test_vectorised_placement_equals_the_per_layer_loop():
    rng = np.random.default_rng(3)
    load = rng.dirichlet(np.ones(8) * 0.5, size=40) * 1000
    for G, slots in ((2, 8), (4, 12), (4, 16), (8, 8)):
        assert (balanced_placement(load, G, slots) == loop_placement(load, G, slots)).all()


def test_window_loads_sum_to_the_loads_of_each_slice():
    ex = np.random.default_rng(4).integers(0, 8, (1000, 3, 2))
    wl = window_loads(ex, 300, 8)
    assert wl.shape == (4, 3, 8)
    for i in range(4):
        assert (wl[i] == expert_load(ex[i * 300:(i + 1) * 300], 8)).all()
    with pytest.raises(ValueError, match="window=0"):
        window_loads(ex, 0, 8)


def test_windows_refit_on_the_previous_window_use_its_placement():
    rng = np.random.default_rng(5)
    ex = rng.integers(0, 8, (900, 2, 2))
    df = imbalance_over_windows(ex, 4, 300, num_experts=8, num_slots=12)
    wl = window_loads(ex, 300, 8)
    assert df.balanced_previous[:2].tolist() == df.contiguous[:2].tolist()  # first window: contiguous
    expect = imbalance(wl[2], balanced_placement(wl[1], 4, 12), 4)
    assert df[df.window == 2].balanced_previous.to_numpy() == pytest.approx(expect)


def test_dispatch_bytes_equal_a_token_by_token_count_with_replicas():
    rng = np.random.default_rng(6)
    ex = np.stack([rng.choice(8, 2, replace=False, p=[.4, .2, .1, .1, .05, .05, .05, .05]) for _ in range(500)])[:, None]
    G, H, b = 4, 8, 2.0
    P = balanced_placement(expert_load(ex, 8), G, 12)
    per = 12 // G
    total = 0
    for t in range(len(ex)):
        home = t % G
        gpus = set()
        for e in ex[t, 0]:
            reps = [s // per for s in range(12) if P[0, s] == e]
            gpus.add(home if home in reps else reps[t % len(reps)])
        total += len(gpus - {home})
    got = dispatch_bytes_per_token(ex, P, G, H, b, num_experts=8)[0]
    assert got == pytest.approx(total / len(ex) * 2 * H * b)
