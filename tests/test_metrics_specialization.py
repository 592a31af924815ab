"""Domain distribution (Mixtral Fig. 7) and OLMoE domain / vocabulary specialization."""

from collections import Counter

import numpy as np
import pytest

import moelab
from moelab.metrics import domain_distribution, domain_specialization, next_token_ids, vocab_specialization


def small_trace():
    ex = np.array([[[0, 1]], [[0, 2]], [[3, 1]], [[3, 0]]])             # (tokens, layers, k)
    return moelab.RoutingTrace.from_arrays(ex, num_experts=4, domain=["a", "a", "b", "b"], token_id=[5, 5, 6, 5])


def test_domain_distribution_is_each_domains_share_of_assignments():
    df = domain_distribution(small_trace())
    assert list(df.index.names) == ["domain", "layer", "expert"]
    assert df.xs("a", level="domain")["fraction"].tolist() == [0.5, 0.25, 0.25, 0.0]
    assert df.xs("b", level="domain")["count"].tolist() == [1, 1, 0, 2]
    assert np.allclose(df.groupby(["domain", "layer"])["fraction"].sum(), 1.0)
    assert (df["uniform"] == 0.25).all()


def test_domain_distribution_defaults_to_first_middle_last_layer():
    t = moelab.RoutingTrace.from_arrays(np.zeros((2, 32, 1), int), num_experts=2, domain=["x", "y"])
    assert sorted(set(domain_distribution(t).index.get_level_values("layer"))) == [0, 15, 31]


def test_domain_specialization_is_tokens_with_expert_in_topk_over_domain_tokens():
    df = domain_specialization(small_trace())
    assert df.xs("a", level="domain")["specialization"].tolist() == [1.0, 0.5, 0.5, 0.0]
    assert df.xs("b", level="domain")["specialization"].tolist() == [0.5, 0.5, 0.0, 1.0]
    assert np.allclose(df.groupby(["domain", "layer"])["specialization"].sum(), 2)   # sums to k
    assert (df["random"] == 0.5).all() and (df["tokens"] == 2).all()
    first = domain_specialization(small_trace(), first_only=True)
    assert first.xs("b", level="domain")["specialization"].tolist() == [0.0, 0.0, 0.0, 1.0]


def reference_vocab(ids, experts_l, min_count=1):
    """OLMoE-style dictionaries: N(x), N(x, E); summary per expert (token-weighted, per-id mean)."""
    n_x = Counter(ids)
    n_xe = Counter((x, e) for x, row in zip(ids, experts_l) for e in row)
    out = {}
    for e in sorted({e for row in experts_l for e in row}):
        got = {x: c for (x, ee), c in n_xe.items() if ee == e and n_x[x] >= min_count}
        if not got:
            continue
        spec = {x: c / n_x[x] for x, c in got.items()}
        out[e] = (sum(got.values()), sum(got[x] * spec[x] for x in got) / sum(got.values()), np.mean(list(spec.values())))
    return out


@pytest.mark.parametrize("min_count", [1, 3])
def test_vocab_specialization_matches_dictionary_counting(min_count):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, 300)
    ex = np.stack([rng.choice(6, 2, replace=False, p=np.r_[0.5, np.ones(5) / 10]) for _ in range(300)])
    t = moelab.RoutingTrace.from_arrays(ex[:, None, :], num_experts=6, token_id=ids)
    df = vocab_specialization(t, min_count=min_count).xs(0, level="layer")
    for e, (tokens, weighted, per_id) in reference_vocab(ids.tolist(), ex.tolist(), min_count).items():
        assert df.loc[e, "tokens"] == tokens
        assert df.loc[e, "specialization"] == pytest.approx(weighted)
        assert df.loc[e, "specialization_vocab"] == pytest.approx(per_id)


def test_vocab_specialization_detail_rows_are_n_x_e_over_n_x():
    d = vocab_specialization(small_trace(), detail=True)
    assert list(d.index.names) == ["layer", "token_id", "expert"]
    assert d.loc[(0, 5, 0), "specialization"] == pytest.approx(1.0)    # id 5 always has expert 0
    assert d.loc[(0, 5, 1), "specialization"] == pytest.approx(1 / 3)
    assert d.loc[(0, 6, 3), ["count", "total"]].tolist() == [1, 1]


def test_next_token_specialization_skips_tokens_without_a_next_token():
    base = small_trace()                                                # token ids 5, 5, 6, 5
    t = moelab.RoutingTrace.from_arrays(
        base.experts, num_experts=4, token_id=base.token_id, next_token_id=next_token_ids(base)
    )
    d = vocab_specialization(t, by="next_token_id", detail=True, first_only=True)
    assert set(d.index.get_level_values("next_token_id")) == {5, 6}     # the last token has none (-1)
    assert d["count"].sum() == 3


def test_missing_domain_column_names_the_fix():
    t = moelab.RoutingTrace.from_arrays(np.zeros((2, 1, 1), int), num_experts=2)
    with pytest.raises(KeyError, match="with_columns"):
        domain_specialization(t)
    with pytest.raises(KeyError, match="layer 7 is not an MoE layer"):
        domain_distribution(t, by="sequence", layers=[7])
