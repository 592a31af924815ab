"""Agreement of two traces and OLMoE router saturation; mismatches are named."""

import numpy as np
import pytest

import moelab
from moelab.metrics import agreement, router_saturation
from moelab.metrics._common import overlap


def tr(ex, **kw):
    return moelab.RoutingTrace.from_arrays(np.asarray(ex), num_experts=kw.pop("num_experts", 4), **kw)


def test_hand_example():
    a = tr([[[0, 1]], [[2, 3]], [[1, 2]]])
    b = tr([[[1, 0]], [[2, 0]], [[1, 2]]])
    row = agreement(a, b).iloc[0]
    assert row["top1"] == pytest.approx(2 / 3)                         # tokens 1, 2
    assert row["topk_overlap"] == pytest.approx((2 + 1 + 2) / 6)
    assert row["exact_set"] == pytest.approx(2 / 3)                    # {0,1} == {1,0}: order ignored


def test_a_trace_agrees_with_itself_everywhere():
    rng = np.random.default_rng(0)
    t = tr(np.argsort(rng.random((50, 3, 8)), -1)[..., :2], num_experts=8)
    assert (agreement(t, t)[["top1", "topk_overlap", "exact_set"]] == 1).all(axis=None)


def test_overlap_without_bitmasks_for_more_than_64_experts_matches_sets():
    rng = np.random.default_rng(1)
    a = np.argsort(rng.random((100, 100)), -1)[:, :6]
    b = np.argsort(rng.random((100, 100)), -1)[:, :6]
    ref = [len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist())]
    assert overlap(a, b, 100).tolist() == ref
    assert overlap(a % 64, a % 64, 64).tolist() == [len(set(x)) for x in (a % 64).tolist()]


@pytest.mark.parametrize(
    "other, message",
    [
        (tr(np.zeros((3, 1, 2), int) + [0, 1]), "3 tokens"),
        (tr(np.zeros((2, 1, 2), int) + [0, 1], num_experts=8), "E=8"),
        (tr(np.zeros((2, 1, 1), int)), "k=1"),
        (tr(np.zeros((2, 2, 2), int) + [0, 1]), r"layers \[0, 1\]"),
        (tr(np.zeros((2, 1, 2), int) + [0, 1], position=[0, 5]), "position at token 1"),
        (tr(np.zeros((2, 1, 2), int) + [0, 1], token_id=[1, 2]), "token_id at token 0"),
    ],
)
def test_mismatched_traces_raise_naming_what_differs(other, message):
    a = tr(np.zeros((2, 1, 2), int) + [0, 1])
    with pytest.raises(moelab.TraceMismatchError, match=message):
        agreement(a, other)


def test_same_tokens_in_another_order_suggests_sorting():
    a = tr(np.zeros((3, 1, 1), int), sequence=[0, 0, 1])
    with pytest.raises(moelab.TraceMismatchError, match="sorted"):
        agreement(a, a.select(np.array([2, 0, 1])))


def test_router_saturation_matches_per_token_set_overlap():
    rng = np.random.default_rng(2)
    final = tr(np.argsort(rng.random((80, 2, 8)), -1)[..., :4], num_experts=8)
    ckpts = {s: tr(np.argsort(rng.random((80, 2, 8)), -1)[..., :4], num_experts=8) for s in (100, 200)}
    ckpts[300] = final
    df = router_saturation(ckpts, final)
    assert list(df.index.names) == ["checkpoint", "layer"]
    assert df.index.get_level_values("checkpoint").unique().tolist() == [100, 200, 300]
    for s, t in ckpts.items():
        for l in range(2):
            ref = np.mean([len(set(x) & set(y)) / 4 for x, y in zip(t.experts[:, l].tolist(), final.experts[:, l].tolist())])
            assert df.loc[(s, l), "topk"] == pytest.approx(ref)
            assert df.loc[(s, l), "top1"] == pytest.approx(np.mean(t.experts[:, l, 0] == final.experts[:, l, 0]))
    assert (df.loc[300][["top1", "topk"]] == 1).all(axis=None)
    k2 = router_saturation({100: ckpts[100]}, final, k=2)
    assert (k2["k"] == 2).all()


def test_router_saturation_names_the_checkpoint_whose_tokens_differ():
    final = tr(np.zeros((3, 1, 2), int) + [0, 1])
    with pytest.raises(moelab.TraceMismatchError, match="checkpoint 5000"):
        router_saturation({5000: tr(np.zeros((4, 1, 2), int) + [0, 1])}, final)
