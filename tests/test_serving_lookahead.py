"""The lookahead prefetcher: layer l+1's router applied to layer l's hidden state, checked by hand."""

import numpy as np
import pytest
import torch

from conftest import tiny_mixtral
from moelab.serving import record_lookahead, simulate_cache


def normed_inputs(model, ids):
    """What each MoE block received, captured at post_attention_layernorm (not at the router)."""
    got, handles = {}, []
    for i, layer in enumerate(model.model.layers):
        handles.append(layer.post_attention_layernorm.register_forward_hook(
            lambda m, a, o, i=i: got.__setitem__(i, o.detach().reshape(-1, o.shape[-1]))))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return got


def test_prediction_is_the_next_routers_top_k_of_this_layers_hidden_state():
    model = tiny_mixtral()
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    la = record_lookahead(model, ids)
    x = normed_inputs(model, ids)
    L, k = len(model.model.layers), 2
    assert la.experts.shape == la.predicted.shape == (18, L, k)
    for l in range(L):
        W = model.model.layers[l].mlp.gate.weight
        assert (np.sort(la.experts[:, l], 1) == np.sort(torch.topk(x[l] @ W.T, k).indices.numpy(), 1)).all()
        if l == 0:
            assert (la.predicted[:, 0] == -1).all()  # nothing to look ahead from
        else:
            Wn = model.model.layers[l].mlp.gate.weight
            by_hand = torch.topk(x[l - 1] @ Wn.T, k).indices.numpy()  # layer l's router, layer l-1's state
            assert (np.sort(la.predicted[:, l], 1) == np.sort(by_hand, 1)).all()
    acc = la.accuracy()
    assert np.isnan(acc[0]) and ((acc[1:] >= 0) & (acc[1:] <= 1)).all()


def test_hooks_are_removed_and_padding_is_dropped():
    model = tiny_mixtral()
    ids = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1] * 6, [0, 0] + [1] * 4])
    count = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())  # noqa: E731
    before = count()
    la = record_lookahead(model, ids, attention_mask=mask)
    assert len(la.experts) == 10 and count() == before
    r = simulate_cache(la.experts, 2, "prefetch", num_experts=8, predicted=la.predicted)
    assert r.prefetch_loads.sum() > 0


def test_bad_input_is_refused_with_the_shape():
    with pytest.raises(ValueError, match=r"\(9,\)"):
        record_lookahead(tiny_mixtral(), torch.arange(9))
