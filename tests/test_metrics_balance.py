"""Load balance: hand-computed CV / MaxVio / entropy, and the aux losses against transformers."""

import numpy as np
import pandas as pd
import pytest

import moelab
from moelab.metrics import balance, expert_load, hf_aux_loss

torch = pytest.importorskip("torch")


def trace_from_logits(logits: np.ndarray, k: int, **kw) -> moelab.RoutingTrace:
    """(tokens, layers, E) logits -> a trace routed the way Mixtral's router does (top-k of softmax)."""
    probs = torch.softmax(torch.as_tensor(logits), -1)
    w, ex = torch.topk(probs, k, dim=-1)
    return moelab.RoutingTrace.from_arrays(
        ex.numpy(), (w / w.sum(-1, keepdim=True)).numpy(), num_experts=logits.shape[-1], logits=logits, **kw
    )


def hf_loss(per_layer_logits, E, k, attention_mask=None) -> float:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    gate = tuple(torch.as_tensor(x) for x in per_layer_logits)
    return float(load_balancing_loss_func(gate, E, k, attention_mask))


def test_expert_load_counts_all_topk_slots_or_first_choices_only():
    ex = np.array([[[0, 1]], [[0, 2]], [[3, 0]]])                  # (tokens, layers, k)
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=4)
    topk = expert_load(t)
    assert topk["count"].tolist() == [3, 1, 1, 1]
    assert topk["fraction"].tolist() == [0.5, 1 / 6, 1 / 6, 1 / 6]
    assert topk["per_token"].sum() == pytest.approx(2.0)          # k assignments per token
    first = expert_load(t, first_only=True)
    assert first["count"].tolist() == [2, 0, 0, 1]
    assert list(first.index.names) == ["layer", "expert"]


def test_cv_maxvio_entropy_equal_hand_computation():
    # loads 4, 2, 1, 1 (k=1): mean 2, population std sqrt(6/4), max 4
    ex = np.array([0, 0, 0, 0, 1, 1, 2, 3])[:, None, None]
    row = balance(moelab.RoutingTrace.from_arrays(ex, num_experts=4)).iloc[0]
    assert row["cv"] == pytest.approx(np.sqrt(1.5) / 2)
    assert row["maxvio"] == pytest.approx(1.0)
    assert row["entropy"] == pytest.approx(1.75 * np.log(2) / np.log(4))   # H(1/2,1/4,1/8,1/8) / log 4
    assert row["tokens"] == 8


def test_perfectly_balanced_layer_has_zero_cv_and_unit_entropy():
    ex = np.stack([np.arange(8), (np.arange(8) + 1) % 8], -1)[:, None, :]   # every expert twice
    row = balance(moelab.RoutingTrace.from_arrays(ex, num_experts=8)).iloc[0]
    assert (row["cv"], row["maxvio"], row["entropy"]) == (0.0, 0.0, pytest.approx(1.0))


def test_index_is_the_decoder_layer_ids():
    ex = np.zeros((3, 2, 1), int)
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2, layer_ids=[1, 3])
    df = balance(t)
    assert df.index.name == "layer" and df.index.tolist() == [1, 3]


def test_aux_losses_are_nan_without_logits():
    t = moelab.RoutingTrace.from_arrays(np.zeros((3, 1, 1), int), num_experts=2)
    assert balance(t)[["switch_aux", "switch_aux_topk", "hf_aux", "z_loss"]].isna().all(axis=None)
    with pytest.raises(ValueError, match="needs router logits"):
        hf_aux_loss(t)


def test_per_layer_hf_aux_agrees_with_transformers_on_each_layer():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 3, 8)).astype(np.float32) * 2     # (tokens, layers, E)
    df = balance(trace_from_logits(logits, k=2))
    for l in range(3):
        assert df["hf_aux"].iloc[l] == pytest.approx(hf_loss([logits[:, l]], 8, 2), abs=1e-5)
    assert np.allclose(df["switch_aux_topk"], df["hf_aux"] / 2)


def test_whole_model_hf_aux_loss_agrees_with_transformers():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((50, 4, 8)).astype(np.float32) * 3
    ours = hf_aux_loss(trace_from_logits(logits, k=2))
    assert ours == pytest.approx(hf_loss([logits[:, l] for l in range(4)], 8, 2), abs=1e-5)


def test_padding_masked_in_transformers_equals_a_trace_of_the_real_tokens():
    rng = np.random.default_rng(2)
    B, S, L, E, k = 2, 6, 2, 8, 2
    logits = rng.standard_normal((B * S, L, E)).astype(np.float32)     # rows = batch-major tokens
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])           # right padding in row 0
    ref = hf_loss([logits[:, l] for l in range(L)], E, k, torch.as_tensor(mask))
    real = mask.reshape(-1).astype(bool)
    t = trace_from_logits(logits[real], k=k, sequence=np.repeat([0, 1], S)[real])
    assert hf_aux_loss(t) == pytest.approx(ref, abs=1e-5)


def test_switch_aux_and_z_loss_match_their_formulas():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((40, 1, 4)).astype(np.float32)
    row = balance(trace_from_logits(logits, k=2)).iloc[0]
    x = torch.as_tensor(logits[:, 0])
    f = torch.bincount(x.argmax(-1), minlength=4) / 40                  # Switch eq. 4: top-1 fraction
    P = torch.softmax(x, -1).mean(0)
    assert row["switch_aux"] == pytest.approx(float(4 * (f * P).sum()), abs=1e-6)
    assert row["z_loss"] == pytest.approx(float((torch.logsumexp(x, -1) ** 2).mean()), abs=1e-5)


def test_balanced_router_gives_the_documented_optima():
    logits = np.zeros((8, 1, 8), np.float32)                           # uniform probabilities
    ex = np.stack([np.arange(8), (np.arange(8) + 4) % 8], -1)[:, None, :]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=8, logits=logits)
    row = balance(t).iloc[0]
    assert row["switch_aux"] == pytest.approx(1.0)
    assert row["switch_aux_topk"] == pytest.approx(1.0)
    assert row["hf_aux"] == pytest.approx(2.0)                         # HF's optimum is k


def test_by_domain_equals_balance_of_each_domain_alone():
    rng = np.random.default_rng(4)
    ex = np.stack([rng.permutation(8)[:2] for _ in range(300)])[:, None, :]
    dom = rng.choice(["code", "math"], 300)
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=8, domain=dom)
    df = balance(t, by="domain")
    assert list(df.index.names) == ["domain", "layer"]
    for d in ("code", "math"):
        alone = balance(t.select(dom == d))
        pd.testing.assert_frame_equal(df.xs(d, level="domain"), alone, check_names=False)


def test_per_batch_splits_consecutive_chunks():
    ex = np.array([0, 0, 0, 0, 0, 1, 2, 3])[:, None, None]            # batch 0 all expert 0, batch 1 balanced
    df = balance(moelab.RoutingTrace.from_arrays(ex, num_experts=4), per_batch=4)
    assert df.index.names == ["batch", "layer"]
    assert df["maxvio"].tolist() == [3.0, 0.0]                         # (4 - 1) / 1, then balanced


def test_where_mask_counts_only_selected_tokens():
    ex = np.array([0, 1, 1, 1])[:, None, None]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=2)
    assert expert_load(t, where=np.array([True, True, False, False]))["count"].tolist() == [1, 1]
    with pytest.raises(moelab.TraceMismatchError, match=r"shape \(2,\), expected \(4,\)"):
        balance(t, where=np.array([True, False]))


def test_unknown_by_column_says_which_columns_exist():
    t = moelab.RoutingTrace.from_arrays(np.zeros((2, 1, 1), int), num_experts=2)
    with pytest.raises(KeyError, match="with_columns"):
        balance(t, by="domain")
