"""E = 512 experts, k = 16 choices, end to end: metrics, plots, explorer payload and save/load.

A synthetic trace whose answers are known in closed form: token t at layer l picks experts
(t·k + l + r) mod E for ranks r = 0..k-1, so with T·k a multiple of E every expert gets exactly
T·k/E assignments per layer (CV 0, entropy 1, no drop at capacity factor 1), consecutive tokens
share no expert (repeat rates 0), and the first choice moves by +1 from layer l to l+1.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

import moelab
from moelab import metrics, plots
from moelab.explorer import pack, show
from moelab.explorer.payload import unpack_array, unpack_weights
from moelab.plots.balance_compare import balance_compare

E, K, T, L = 512, 16, 64, 3          # T·k = 1024 = 2·E assignments per layer


@pytest.fixture(scope="module")
def shifted():
    t, l, r = np.arange(T)[:, None, None], np.arange(L)[None, :, None], np.arange(K)[None, None, :]
    ex = (t * K + l + r) % E                                                    # (T, L, k)
    w = np.random.default_rng(0).random((T, L, K)).astype(np.float32)
    w = -np.sort(-w / w.sum(-1, keepdims=True), -1)                             # rank 0 carries the largest weight
    seq = np.arange(T) // 32
    return moelab.RoutingTrace.from_arrays(ex, w, num_experts=E, sequence=seq, layer_ids=[1, 2, 3],
                                           token_id=np.arange(T) % 50 + 3, domain=np.where(seq == 0, "code", "math"),
                                           meta={"shared_experts": 1})


@pytest.fixture(scope="module")
def skewed():
    """A random trace with real imbalance: experts drawn from a Zipf-like prior, k distinct per token."""
    rng = np.random.default_rng(1)
    prior = 1.0 / np.arange(1, E + 1)
    ex = np.argsort(-(np.log(prior) - np.log(-np.log(rng.random((T, L, E))))), -1)[..., :K]   # Gumbel top-k
    return moelab.RoutingTrace.from_arrays(ex, num_experts=E, layer_ids=[1, 2, 3], sequence=np.arange(T) // 32,
                                           token_id=np.arange(T) % 50 + 3)


def test_ids_are_stored_as_uint16_and_survive_save_and_load(shifted, tmp_path):
    assert shifted.experts.dtype == np.uint16 and int(shifted.experts.max()) == E - 1
    shifted.save(tmp_path / "t.parquet")
    back = moelab.load_trace(tmp_path / "t.parquet")
    assert back.experts.dtype == np.uint16 and (back.num_experts, back.top_k) == (E, K)
    np.testing.assert_array_equal(back.experts, shifted.experts)
    np.testing.assert_allclose(back.weights, shifted.weights, rtol=1e-3)        # as stored (float16)
    assert back.layer_ids.tolist() == [1, 2, 3] and back.meta["shared_experts"] == 1


def test_load_and_balance_of_an_exactly_uniform_router(shifted):
    load = metrics.expert_load(shifted)
    assert len(load) == L * E
    assert (load["count"] == T * K // E).all()                                  # 2 each
    assert load["per_token"].groupby(level="layer").sum().tolist() == pytest.approx([K] * L)
    bal = metrics.balance(shifted)
    assert bal["cv"].tolist() == pytest.approx([0.0] * L) and bal["maxvio"].tolist() == pytest.approx([0.0] * L)
    assert bal["entropy"].tolist() == pytest.approx([1.0] * L)
    drops = metrics.capacity_drops(shifted, [1.0], [T])
    assert drops["dropped"].to_numpy() == pytest.approx(0.0)


def test_balance_of_a_skewed_router_matches_a_bincount(skewed):
    bal, load = metrics.balance(skewed), metrics.expert_load(skewed)
    for j, layer in enumerate(skewed.layer_ids):
        n = np.bincount(skewed.experts[:, j].reshape(-1).astype(np.int64), minlength=E).astype(float)
        np.testing.assert_array_equal(load.loc[layer, "count"].to_numpy(), n)
        assert bal.loc[layer, "cv"] == pytest.approx(n.std() / n.mean()) and bal.loc[layer, "cv"] > 0.5


def test_repeat_rates_transitions_and_coactivation_know_the_shift(shifted):
    rates = metrics.repeat_rates(shifted)
    assert rates[["first", "any"]].to_numpy() == pytest.approx(0.0)             # neighbours share no expert
    assert rates["first_random"].to_numpy() == pytest.approx(1 / E)
    assert rates["pairs"].tolist() == [T - 2] * L                                # 2 sequences of 32 tokens
    trans = metrics.layer_transitions(shifted, normalize=False)
    first = np.unique(shifted.experts[:, 0, 0].astype(int))                     # layer 1 -> layer 2: i -> i + 1
    m = trans.loc[1].to_numpy()
    assert m.shape == (E, E)
    assert m[first, (first + 1) % E].sum() == T and m.sum() == T
    co = metrics.coactivation(shifted, normalize=False)
    c1 = co.loc[1].to_numpy()
    assert c1.shape == (E, E)
    brute = np.zeros((E, E))
    for row in shifted.experts[:, 0].astype(int):
        brute[np.ix_(row, row)] += 1
    off = ~np.eye(E, dtype=bool)
    np.testing.assert_array_equal(c1[off], brute[off])


def test_agreement_saturation_and_specialization_at_e512(shifted, skewed):
    ag = metrics.agreement(shifted, shifted)
    assert ag[["top1", "topk_overlap", "exact_set"]].to_numpy() == pytest.approx(1.0)
    other = metrics.agreement(shifted, skewed)
    brute = [np.mean([len(set(a) & set(b)) / K for a, b in zip(shifted.experts[:, j], skewed.experts[:, j])])
             for j in range(L)]
    assert other["topk_overlap"].tolist() == pytest.approx(brute)
    sat = metrics.router_saturation({"final": shifted}, shifted)
    assert sat[["top1", "topk"]].to_numpy() == pytest.approx(1.0)
    dist = metrics.domain_distribution(shifted)
    assert dist.groupby(level=["domain", "layer"])["fraction"].sum().to_numpy() == pytest.approx(1.0)
    assert dist["uniform"].to_numpy() == pytest.approx(1 / E)
    assert len(metrics.domain_specialization(shifted)) and len(metrics.vocab_specialization(shifted))


def test_plots_draw_512_experts(shifted, skewed):
    fig = plots.load_heatmap(skewed)
    assert isinstance(fig, Figure) and fig.axes[0].images[0].get_array().shape == (L, E)
    assert fig.get_size_inches()[0] <= 16                                       # not 230 inches wide
    assert any("shared" in t.get_text() for t in plots.load_heatmap(shifted).texts)
    assert plots.coactivation_heatmap(skewed, layer=1).axes[0].images[0].get_array().shape == (E, E)
    assert plots.transitions_heatmap(skewed, layer=1).axes[0].images[0].get_array().shape == (E, E)
    bc = balance_compare({"uniform": shifted, "skewed": skewed})
    assert [ax.images[0].get_array().shape for ax in bc.axes[:2]] == [(L, E), (L, E)]
    for fig in (plots.repeat_rates_plot(shifted), plots.agreement_plot(metrics.agreement(shifted, skewed)),
                plots.domain_distribution_bars(shifted, layers=[1]), plots.specialization_bars(
                    metrics.domain_specialization(shifted), layers=[1])):
        assert isinstance(fig, Figure) and fig.axes


def test_the_explorer_payload_round_trips_512_experts_and_16_choices(shifted, tmp_path):
    p = pack(shifted)
    assert (p["num_experts"], p["k"], p["layers"], p["tokens"]) == (E, K, L, T) and len(p["colors"]) == E
    run = p["runs"][0]
    back = unpack_array(run["experts"])
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back.reshape(T, L, K), shifted.experts)
    np.testing.assert_allclose(unpack_weights(run["weights"]).reshape(T, L, K), shifted.weights, atol=1e-3)
    html = show(shifted).to_html()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:200]
    assert show(shifted).save(tmp_path / "e512.html").stat().st_size > 1000


def test_serving_tools_refuse_e512_with_the_value_and_the_grouped_cache_call_runs(skewed):
    from moelab import serving

    with pytest.raises(ValueError, match=r"num_experts=512 does not fit.*simulate_cache\(experts // 8, capacity, "
                                         r"num_experts=64\)"):
        serving.simulate_cache(skewed, 32, "lru")
    grouped = serving.simulate_cache(skewed.experts // 8, 32, "lru", num_experts=64)     # the message's own fix
    assert grouped.hit_rate.shape == (L,) and (grouped.hit_rate >= 0).all()
    with pytest.raises(ValueError, match=r"num_experts <= 16 .*got num_experts=512"):
        serving.dispatch_bytes_per_token(skewed, serving.contiguous_placement(E, 8), 8, hidden=64)
    with pytest.raises(ValueError, match=r"4 <= num_experts <= 16.*num_experts=512"):
        serving.mixtral_like_trace(100, 2, num_experts=E)
    load = serving.expert_load(skewed)                                                  # (L, E): any E works
    assert load.shape == (L, E) and (load.sum(1) == T * K).all()
    assert serving.imbalance(load, serving.balanced_placement(load, 8), 8).shape == (L,)
