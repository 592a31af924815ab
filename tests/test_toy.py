"""The collapse lesson: per-layer balance loss balances every layer; the pooled one can look balanced."""

import numpy as np
import pytest
import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from moelab.toy import ToyConfig, collapse_lesson, per_layer_balance_loss, pooled_balance_loss, switch_loss, train_toy

FAST = ToyConfig(steps=30, batch=64)


@pytest.fixture(scope="module")
def runs():
    return collapse_lesson(FAST)


def test_losses_match_transformers():
    torch.manual_seed(0)
    logits = tuple(torch.randn(50, 4) * 2 for _ in range(3))
    ref = load_balancing_loss_func(logits, num_experts=4, top_k=2)
    torch.testing.assert_close(pooled_balance_loss(logits, 2), ref)
    torch.testing.assert_close(switch_loss(logits[0], 2), load_balancing_loss_func(logits[:1], 4, 2))


def test_pooled_loss_looks_balanced_while_each_layer_is_not():
    x = torch.randn(400, 4)
    a = torch.tensor([4.0, 4.0, 0.0, 0.0])                                  # layer 0 prefers experts 0, 1
    logits = (x + a, x + a.flip(0))                                         # layer 1 prefers 2, 3
    assert float(pooled_balance_loss(logits, 2)) < 2.1                      # ≈ k = 2: looks balanced
    assert float(per_layer_balance_loss(logits, 2)) > 3.5                   # each layer far from it


def test_runs_are_deterministic_and_shaped():
    a, b = train_toy("none", ToyConfig(steps=3)), train_toy("none", ToyConfig(steps=3))
    assert a.loads.shape == (3, 2, 4) and np.array_equal(a.loads, b.loads)
    np.testing.assert_allclose(a.loads.sum(-1), 1.0)
    with pytest.raises(ValueError, match="mode='switch'"):
        train_toy("switch", FAST)


def test_per_layer_loss_ends_more_balanced_in_every_layer(runs):
    per = runs["per_layer"].cv()
    assert per.max() < runs["pooled"].cv().min() and per.max() < runs["none"].cv().min()


def test_pooled_value_looks_balanced_while_layers_are_not(runs):
    pooled = runs["pooled"]
    assert pooled.pooled_aux[-1] < 2.1                                       # near k = 2
    assert pooled.per_layer_aux[-1].max() > runs["per_layer"].per_layer_aux[-1].max() + 0.3


def test_synthetic_routers_collapse_as_the_bias_grows():
    from moelab.metrics import balance
    from moelab.toy import synthetic_routers

    t = synthetic_routers((0.0, 1.0, 4.0), tokens=2048)
    cv = balance(t)["cv"].to_numpy()
    assert cv[0] < 0.1 < cv[1] < cv[2]
    np.testing.assert_array_equal(t.experts[:, :, 0], t.logits.argmax(-1))
