"""Flip margins (notebook 06) and OLMoE's scalar summaries (notebook 04), on hand-made traces."""

import numpy as np
import pandas as pd
import pytest

import moelab
from moelab.metrics import baselines as bl
from moelab.metrics import margins as mg
from moelab.metrics import olmoe
from moelab.routing_trace import TraceMismatchError


def test_router_margin_is_kth_minus_next_logit():
    rng = np.random.default_rng(0)
    lg = rng.normal(size=(50, 3, 8))
    s = -np.sort(-lg, -1)
    for k in (1, 2, 4):
        np.testing.assert_allclose(mg.router_margins(lg, k), s[..., k - 1] - s[..., k])
    with pytest.raises(ValueError, match="k=8"):
        mg.router_margins(lg, 8)


def test_flips_happen_at_small_margins():
    rng = np.random.default_rng(1)
    lg = rng.normal(size=(400, 2, 8)).astype(np.float32)
    ref = moelab.RoutingTrace.from_arrays(np.argsort(-lg, -1)[..., :2], num_experts=8, logits=lg)
    noisy = lg + rng.normal(scale=0.05, size=lg.shape)                        # rounding-like perturbation
    other = moelab.RoutingTrace.from_arrays(np.argsort(-noisy, -1)[..., :2], num_experts=8)
    df = mg.flip_margins(ref, {"noisy": other})
    f = mg.flipped(other, ref)
    margin = mg.router_margins(lg, 2)
    assert df["flipped"].tolist() == f.sum(0).tolist() and f.any()
    assert (df["median_flipped"] < df["median_all"] / 3).all()
    np.testing.assert_allclose(df["median_flipped"], [np.median(margin[f[:, l], l]) for l in range(2)])
    assert (df["share_below_q"] < 0.3).all()


def test_flip_margins_needs_reference_logits():
    t = moelab.RoutingTrace.from_arrays(np.zeros((2, 1, 1), int), num_experts=2)
    with pytest.raises(TraceMismatchError, match="logits=True"):
        mg.flip_margins(t, t)


def test_strongest_pair_and_its_lift():
    ex = np.array([[0, 1], [0, 1], [0, 2], [3, 2]])[:, None, :]
    got = olmoe.strongest_pairs(moelab.RoutingTrace.from_arrays(ex, num_experts=4)).loc[0]
    assert got["pair"] == "1→0" and got["p"] == 1.0                         # both tokens with 1 also use 0
    assert got["lift"] == pytest.approx(1.0 / (3 / 4))
    assert got["experts_above_half"] == 3                                  # 0, 1 and 3 have a partner > 50 %


def test_top_domain_expert_reports_load_and_lift():
    ex = np.array([[0], [0], [0], [1]])[:, None, :]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2, domain=["a", "a", "b", "b"])
    got = olmoe.top_domain_experts(t)
    assert got.loc[("a", 0)].tolist() == [0, 1.0, 0.75, pytest.approx(4 / 3)]


def test_vocab_scalar_against_brute_force():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 6, 300)
    ex = np.where(rng.random(300) < 0.7, ids % 3, rng.integers(0, 4, 300))[:, None, None]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=4, token_id=ids)
    got = olmoe.vocab_scalar(t).iloc[0]
    want = np.mean([np.bincount(ex[ids == x, 0, 0], minlength=4).max() / (ids == x).sum() for x in range(6)])
    assert got["observed"] == pytest.approx(want)
    assert got["chance"] == pytest.approx(float(bl.vocab_chance(t).iloc[0]))
    assert got["observed"] > got["chance"] > got["uniform"]


def test_transition_concentration_of_a_deterministic_path_is_one():
    ex = np.stack([np.arange(40) % 4, (np.arange(40) + 1) % 4], 1)[:, :, None]
    got = olmoe.transition_concentration(moelab.RoutingTrace.from_arrays(ex, num_experts=4)).loc[0]
    assert got.tolist() == [1.0, 0.25, 0.25]


def test_saturation_summary_uses_share_of_training():
    sat = pd.DataFrame({"checkpoint": [6, 6, 360, 360], "layer": [0, 1, 0, 1], "top1": [.3, .5, .8, .9],
                        "topk": [.4, .6, .9, 1.]}).set_index(["checkpoint", "layer"])
    ck = [{"step": 6, "tokens_seen": 100}, {"step": 360, "tokens_seen": 6000}, {"step": 600, "tokens_seen": 10000}]
    got = olmoe.saturation_summary(sat, ck)
    assert got["share"].tolist() == [0.01, 0.6] and got["tokens_seen"].tolist() == [100, 6000]
    assert got["top1"].tolist() == pytest.approx([0.4, 0.85])
    with pytest.raises(ValueError, match="final_step"):
        olmoe.saturation_summary(sat)
