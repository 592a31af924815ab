"""Co-activation (OLMoE) and layer-to-layer transitions, against brute-force counting."""

import numpy as np
import pytest

import moelab
from moelab.metrics import coactivation, layer_transitions


def rand_trace(seed=0, T=200, L=3, E=6, k=3):
    rng = np.random.default_rng(seed)
    ex = np.argsort(rng.random((T, L, E)) + np.linspace(0, 0.5, E), -1)[..., :k]
    return moelab.RoutingTrace.from_arrays(ex, num_experts=E, layer_ids=np.arange(L) * 2)


def test_coactivation_is_p_j_given_i_over_all_pairs_of_the_topk_set():
    t = rand_trace()
    df = coactivation(t)
    for l, layer in enumerate(t.layer_ids):
        sets = [set(row) for row in t.experts[:, l, :].tolist()]
        for i in range(6):
            with_i = [s for s in sets if i in s]
            for j in range(6):
                assert df.loc[(layer, i), j] == pytest.approx(sum(j in s for s in with_i) / len(with_i))


def test_coactivation_counts_are_symmetric_with_n_i_on_the_diagonal():
    t = rand_trace(1)
    counts = coactivation(t, normalize=False).loc[0].to_numpy()
    assert (counts == counts.T).all()
    assert np.diag(counts).tolist() == np.bincount(t.experts[:, 0, :].ravel(), minlength=6).tolist()
    assert (np.diag(coactivation(t).loc[0].to_numpy()) == 1).all()


def test_unused_expert_gives_nan_rows_not_errors():
    t = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]]]), num_experts=3)
    m = coactivation(t).loc[0].to_numpy()
    assert np.isnan(m[2]).all() and m[0, 1] == 1.0


def test_layer_transitions_count_first_choices_of_adjacent_layers():
    t = rand_trace(2, k=2)
    counts = layer_transitions(t, normalize=False)
    assert sorted(set(counts.index.get_level_values("layer"))) == [0, 2]   # L-1 source layers
    for l in range(2):
        ref = np.zeros((6, 6), int)
        for a, b in zip(t.experts[:, l, 0], t.experts[:, l + 1, 0]):
            ref[a, b] += 1
        assert (counts.loc[t.layer_ids[l]].to_numpy() == ref).all()
    probs = layer_transitions(t).loc[0].to_numpy()
    used = ~np.isnan(probs).any(1)
    assert np.allclose(probs[used].sum(1), 1.0)
