"""Load-aware baselines: each checked on a known answer (closed form, enumeration or brute force)."""

from itertools import permutations, product

import numpy as np
import pytest

import moelab
from moelab.metrics import baselines as bl
from moelab.metrics import coactivation, layer_transitions, repeat_rates
from moelab.metrics._common import default_layers


def plackett_luce(rng, p, size, k=2):
    """Independent top-k draws without replacement from loads p: (size, k)."""
    g = np.log(p)[None, :] - np.log(-np.log(rng.random((size, len(p)))))      # Gumbel-top-k
    return np.argsort(-g, 1)[:, :k]


def trace_of(ex, **cols):
    return moelab.RoutingTrace.from_arrays(np.asarray(ex), num_experts=cols.pop("E"), **cols)


def test_independent_routing_repeats_at_sum_of_squared_loads():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    T = 40_000
    ex = plackett_luce(rng, p, T)[:, None, :]                                    # (tokens, 1 layer, k)
    t = trace_of(ex, E=8, sequence=np.arange(T) // 100, position=np.arange(T) % 100)
    obs = repeat_rates(t).iloc[0]
    first, anyk = bl.independent_repeat_rates(p, 2)
    assert first == pytest.approx((p ** 2).sum())
    se = np.sqrt(anyk * (1 - anyk) / obs["pairs"])
    assert abs(obs["first"] - first) < 4 * np.sqrt(first * (1 - first) / obs["pairs"])
    assert abs(obs["any"] - anyk) < 4 * se
    base = bl.repeat_rate_baselines(t).iloc[0]                                   # from the trace itself
    assert abs(base["first_shuffled"] - first) < 0.01 and abs(base["any_shuffled"] - anyk) < 0.01
    assert abs(base["first_excess"]) < 4 * se                                    # no locality to find


def test_uniform_independent_rates_equal_the_random_baseline():
    assert bl.independent_repeat_rates(np.full(8, 1 / 8), 2) == pytest.approx(
        moelab.metrics.random_repeat_rates(8, 2))


def test_shuffled_baseline_is_the_exact_mean_over_all_within_domain_permutations():
    rng = np.random.default_rng(1)
    ex = np.stack([plackett_luce(rng, np.full(4, 0.25), 7) for _ in range(2)], 1)    # (7 tokens, 2 layers, 2)
    dom = np.array(["a", "a", "b", "b", "a", "b", "a"])                         # pairs cross domains too
    seq, pos = np.array([0, 0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 0, 1, 2])
    got = bl.repeat_rate_baselines(trace_of(ex, E=4, sequence=seq, position=pos, domain=dom), by="domain")
    ia, ib = np.flatnonzero(dom == "a"), np.flatnonzero(dom == "b")
    pairs = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]                           # consecutive positions
    sums = {d: np.zeros((2, 2)) for d in "ab"}                                   # (first/any, layer)
    n = 0
    for pa, pb in product(permutations(ia), permutations(ib)):
        perm = np.arange(7)
        perm[ia], perm[ib] = pa, pb
        e = ex[perm]
        for i, j in pairs:                                                       # brute force: each pair
            same = e[i, :, 0] == e[j, :, 0]
            share = np.array([len(set(e[i, l]) & set(e[j, l])) > 0 for l in range(2)])
            sums[dom[i]] += np.stack([same, share]) / sum(dom[a] == dom[i] for a, _ in pairs)
        n += 1
    for d in "ab":
        np.testing.assert_allclose(got.loc[d, ["first_shuffled", "any_shuffled"]].to_numpy().T, sums[d] / n, atol=1e-12)


def test_independent_plugin_is_sum_of_squares_of_the_groups_loads():
    ex = np.array([0, 0, 0, 1, 2, 2])[:, None, None]
    got = bl.repeat_rate_baselines(trace_of(ex, E=3)).iloc[0]
    assert got["first_independent"] == pytest.approx((9 + 1 + 4) / 36)
    assert got["first_shuffled"] == pytest.approx((3 * 2 + 0 + 2 * 1) / (6 * 5))  # without replacement


@pytest.mark.parametrize("n, expected", [(5, 0.3865), (20, 0.2473)])
def test_max_share_chance_of_uniform_eight_experts(n, expected):
    assert bl.max_share_chance(n, np.full(8, 1 / 8)) == pytest.approx(expected, abs=5e-5)


def test_max_share_chance_matches_monte_carlo_for_unequal_loads():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    c = np.random.default_rng(0).multinomial(12, p, size=200_000)               # (draws, E)
    assert bl.max_share_chance(12, p) == pytest.approx((c.max(1) / 12).mean(), abs=2e-3)
    assert bl.max_share_chance(7, [1.0, 0, 0]) == pytest.approx(1.0)
    assert bl.max_share_chance(1, p) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probability vector"):
        bl.max_share_chance(5, [0.5, 0.2])


def test_vocab_chance_averages_max_share_chance_over_token_ids():
    ex = np.array([0, 0, 1, 0, 1, 1, 0, 0])[:, None, None]
    ids = np.array([5, 5, 5, 6, 6, 6, 6, 6])                                    # id 5 three times, 6 five times
    got = bl.vocab_chance(trace_of(ex, E=2, token_id=ids), min_count=3).iloc[0]
    p = np.array([5, 3]) / 8
    assert got == pytest.approx((bl.max_share_chance(3, p) + bl.max_share_chance(5, p)) / 2)


def test_coactivation_lift_is_conditional_over_marginal():
    rng = np.random.default_rng(2)
    ex = np.stack([plackett_luce(rng, np.array([0.4, 0.3, 0.2, 0.1]), 500) for _ in range(2)], 1)
    t = trace_of(ex, E=4)
    lift, co = bl.coactivation_lift(t), coactivation(t)
    for layer in (0, 1):
        p_j = np.array([(ex[:, layer, :] == j).any(1).mean() for j in range(4)])
        want = co.loc[layer].to_numpy() / p_j[None, :]
        np.fill_diagonal(want, np.nan)
        np.testing.assert_allclose(lift.loc[layer].to_numpy(), want)


def test_hub_expert_has_lift_one():
    ex = np.array([[0, 1], [0, 2], [0, 3], [0, 1]])[:, None, :]                # expert 0 in every top-2
    lift = bl.coactivation_lift(trace_of(ex, E=4)).loc[0]
    np.testing.assert_allclose(lift.loc[[1, 2, 3], 0], 1.0)
    assert coactivation(trace_of(ex, E=4)).loc[0].loc[1, 0] == 1.0               # P(0|i) = 100 % looks "merged"


def test_transition_baseline_is_the_outer_product_of_the_marginals():
    rng = np.random.default_rng(3)
    ex = rng.choice(4, p=[0.6, 0.2, 0.1, 0.1], size=(20_000, 3, 1))             # layers independent
    t = trace_of(ex, E=4)
    counts = bl.transition_baseline(t, normalize=False).loc[0].to_numpy()
    m0, m1 = (np.bincount(ex[:, l, 0], minlength=4) / 20_000 for l in (0, 1))
    np.testing.assert_allclose(counts, 20_000 * np.outer(m0, m1))
    rows = bl.transition_baseline(t).loc[1].to_numpy()
    np.testing.assert_allclose(rows, np.tile(np.bincount(ex[:, 2, 0], minlength=4) / 20_000, (4, 1)))
    assert np.abs(bl.transition_lift(t).to_numpy() - 1).max() < 0.15             # independent: lift ≈ 1
    obs = layer_transitions(t).loc[0].to_numpy()
    np.testing.assert_allclose(bl.transition_lift(t).loc[0].to_numpy(), obs / m1[None, :])


def test_specialization_of_an_expert_everyone_uses_has_lift_one():
    ex = np.array([[0, 1], [0, 2], [0, 1], [0, 3]])[:, None, :]
    t = trace_of(ex, E=4, domain=["a", "a", "b", "b"])
    s = bl.specialization_vs_load(t)
    assert s.loc[("a", 0, 0), "specialization"] == 1.0 and s.loc[("a", 0, 0), "lift"] == 1.0
    assert s.loc[("a", 0, 2), "lift"] == pytest.approx(2.0)                    # 1/2 of a's tokens vs 1/4 overall


def test_domain_tv_matches_the_definition():
    rng = np.random.default_rng(4)
    ex = rng.integers(0, 4, size=(300, 2, 1))
    dom = rng.choice(["x", "y", "z"], size=300)
    t = trace_of(ex, E=4, domain=dom)
    tv = bl.domain_tv(t, layers=[1])
    for d in "xyz":
        pd_ = np.bincount(ex[dom == d, 1, 0], minlength=4) / (dom == d).sum()
        pall = np.bincount(ex[:, 1, 0], minlength=4) / 300
        assert tv.loc[d, 1] == pytest.approx(0.5 * np.abs(pd_ - pall).sum())
    assert bl.domain_tv(t, layers=[0], reference="x").loc["x", 0] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        bl.total_variation([1, 0], [1, 0, 0])


@pytest.mark.parametrize("n, want", [(32, (0, 15, 31)), (4, (0, 1, 3)), (2, (0, 1)), (1, (0,))])
def test_representative_layers_first_middle_last(n, want):
    assert bl.representative_layers(n) == want
    t = trace_of(np.zeros((1, n, 1), int), E=2, layer_ids=np.arange(n) * 2 + 1)
    assert bl.representative_layers(t) == default_layers(t) == tuple(2 * i + 1 for i in want)


def test_max_share_chance_refuses_n_beyond_float_range():
    assert 0.125 < bl.max_share_chance(300, np.full(8, 1 / 8)) < 0.2
    with pytest.raises(ValueError, match="n=601"):
        bl.max_share_chance(601, np.full(8, 1 / 8))


# ------------------------------------------------------------ router saturation by chance
def test_uniform_loads_give_olmoes_random_saturation_1_over_E_and_k_over_E():
    for E, k in [(8, 1), (8, 2), (64, 8), (5, 3)]:
        u = np.full(E, 1 / E)
        assert bl.independent_saturation(u, k=k) == pytest.approx(k / E)
    assert bl.independent_saturation(np.full(64, 1 / 64), k=1) == pytest.approx(1 / 64)   # OLMoE's 1.6 %


def test_saturation_chance_of_one_routing_is_sum_of_squared_loads_per_layer():
    ex = np.array([[[0, 1], [2, 3]], [[0, 2], [2, 0]], [[1, 0], [2, 1]]])            # (tokens, 2 layers, k=2)
    c = bl.saturation_chance(trace_of(ex, E=4))
    p1 = np.array([2, 1, 0, 0]) / 3                                                   # layer 0 first choices
    pk = np.array([3, 2, 1, 0]) / 6                                                   # layer 0 all assignments
    assert c.loc[0, "top1"] == pytest.approx((p1 ** 2).sum())
    assert c.loc[0, "topk"] == pytest.approx(2 * (pk ** 2).sum())
    assert c.loc[1, "top1"] == pytest.approx(1.0)                                     # always expert 2 first


@pytest.mark.parametrize("k", [1, 2, 3])
def test_independent_routings_with_uneven_loads_agree_as_often_as_saturation_chance_says(k):
    rng = np.random.default_rng(k)
    p = np.array([0.35, 0.25, 0.15, 0.1, 0.05, 0.05, 0.03, 0.02])
    q = np.array([0.05, 0.1, 0.4, 0.2, 0.1, 0.05, 0.05, 0.05])
    T = 30_000
    final = trace_of(plackett_luce(rng, p, T, k)[:, None, :], E=8)
    same = trace_of(plackett_luce(rng, p, T, k)[:, None, :], E=8)                    # independent, same loads
    other = trace_of(plackett_luce(rng, q, T, k)[:, None, :], E=8)                   # independent, other loads
    sat = moelab.metrics.router_saturation({"same": same, "other": other}, final)
    for name, ckpt in [("same", None), ("other", other)]:
        chance = bl.saturation_chance(final, ckpt).iloc[0]
        obs = sat.loc[(name, 0)]
        for col in ("top1", "topk"):
            se = np.sqrt(chance[col] * (1 - chance[col]) / T)                           # ≥ the topk sd per token / k
            assert abs(obs[col] - chance[col]) < 5 * se + 0.005, (name, col, obs[col], chance[col])
    assert bl.saturation_chance(final).loc[0, "top1"] > 1 / 8 + 0.05                  # uneven loads agree more


def test_saturation_chance_rejects_a_checkpoint_of_another_shape_and_loads_that_are_not_distributions():
    a = trace_of(np.zeros((3, 2, 1), int), E=4)
    with pytest.raises(ValueError, match="experts and layers"):
        bl.saturation_chance(a, trace_of(np.zeros((3, 1, 1), int), E=4))
    with pytest.raises(ValueError, match="probability vector"):
        bl.independent_saturation([0.5, 0.6])
    with pytest.raises(ValueError, match="k \\* share"):
        bl.independent_saturation([0.9, 0.1], k=2)
