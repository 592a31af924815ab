"""The Mixtral-like synthetic router reproduces Table 5 and a near-uniform load (OLMoE §5.3's measurement of Mixtral)."""

import numpy as np
import pytest

import moelab
from moelab.serving import TABLE5, expert_load, mixtral_like_trace, move_probabilities, table5_targets


def test_targets_are_table5_at_the_published_layers():
    f, a = table5_targets(32, domains=["Github"])
    assert [round(x, 3) for x in f[[0, 15, 31]]] == [0.149, 0.281, 0.197]
    assert [round(x, 3) for x in a[[0, 15, 31]]] == [0.499, 0.669, 0.492]
    with pytest.raises(ValueError, match="Pile-CC"):
        table5_targets(domains=["Pile-CC"])


def test_move_probabilities_are_a_distribution_for_every_table5_cell():
    for v in TABLE5.values():
        p = move_probabilities(np.array(v[:3]) / 100, np.array(v[3:]) / 100)
        assert (p >= 0).all() and np.allclose(p.sum(-1), 1)


def test_calibration_reproduces_table5_repeat_rates_per_layer():
    tr = mixtral_like_trace(60_000, layers=32, seq_len=500, seed=3)
    rr = moelab.metrics.repeat_rates(tr)
    f, a = table5_targets(32)
    assert np.abs(rr["first"].to_numpy() - f).max() < 0.012  # ~4 binomial s.e. at 60k pairs
    assert np.abs(rr["any"].to_numpy() - a).max() < 0.015


def test_a_single_domain_and_custom_rates_are_reproduced_too():
    tr = mixtral_like_trace(40_000, layers=2, seq_len=400, first=[0.125, 0.4], any_=[0.30, 0.8], seed=4)
    rr = moelab.metrics.repeat_rates(tr)
    assert rr["first"].to_numpy() == pytest.approx([0.125, 0.4], abs=0.012)
    assert rr["any"].to_numpy() == pytest.approx([0.30, 0.8], abs=0.012)


def test_load_is_near_uniform_as_measured_for_mixtral():
    tr = mixtral_like_trace(60_000, layers=32, seq_len=500, seed=5)
    ld = expert_load(tr)
    assert (ld.max(1) / ld.mean(1)).max() < 1.05
    assert tr.experts.shape == (60_000, 32, 2) and (tr.experts[..., 0] != tr.experts[..., 1]).all()


@pytest.mark.parametrize("E", [4, 8, 16])
def test_every_move_maps_the_uniform_pair_distribution_to_itself(E):
    from moelab.serving.synthetic import _transition_table

    tab, off, _ = _transition_table(E)
    valid = np.array([f * E + s for f in range(E) for s in range(E) if f != s])
    for m in range(4):  # copy, shift, fresh, disjoint: counts over (uniform state, uniform outcome)
        nxt = tab[valid][:, off[m]:off[m + 1]].reshape(-1)
        counts = np.bincount(nxt, minlength=E * E)[valid]
        assert counts.min() == counts.max() and set(np.unique(nxt)) <= set(valid)


def test_copy_only_routing_repeats_each_sequences_first_pair():
    tr = mixtral_like_trace(300, layers=2, seq_len=100, first=1.0, any_=1.0, seed=1)
    ex = tr.experts.reshape(3, 100, 2, 2)
    assert (ex == ex[:, :1]).all()


def test_bad_sizes_are_refused_with_the_value():
    with pytest.raises(ValueError, match="num_experts=20"):
        mixtral_like_trace(100, num_experts=20)
    with pytest.raises(ValueError, match="tokens=0"):
        mixtral_like_trace(0)
