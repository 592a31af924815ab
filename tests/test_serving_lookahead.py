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


def test_llama4_lookahead_reads_the_router_return_through_the_adapter_and_matches_the_tracer():
    """Llama 4's router returns (scores, logits), not (logits, weights, index): the choice is read as the tracer reads it."""
    import moelab
    from moelab.arch.capabilities import build_tiny

    model = build_tiny("llama4_text")
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(2))
    la = record_lookahead(model, ids)
    with moelab.trace(model) as tr, torch.no_grad():
        model(ids)
    routers = [m for n, m in model.named_modules() if type(m).__name__ == "Llama4Router"]
    L, k = len(routers), tr.top_k
    assert la.experts.shape == la.predicted.shape == (14, L, k) and la.num_experts == tr.num_experts
    assert (np.sort(la.experts, 2) == np.sort(np.asarray(tr.experts, np.int64), 2)).all()
    seen = {}  # each router's input, by independent hooks
    hs = [r.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].detach())) for i, r in enumerate(routers)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hs:
            h.remove()
    assert (la.predicted[:, 0] == -1).all()
    for l in range(1, L):
        by_hand = torch.topk(seen[l - 1] @ routers[l].weight.T, k).indices.numpy()  # layer l's router, layer l-1's input
        assert (np.sort(la.predicted[:, l], 1) == np.sort(by_hand, 1)).all()


def test_a_router_return_the_adapter_cannot_read_is_refused_naming_the_class_and_what_it_returned():
    from moelab.arch import RecordError, adapter_named
    from moelab.serving.lookahead import router_choice

    for name, out in (("mixtral", (torch.zeros(4, 8), torch.ones(4, 2))),                 # no index at position 2
                      ("llama4", (torch.zeros(4, 8), torch.zeros(4, 8), torch.zeros(4, 8)))):  # not (scores, logits)
        with pytest.raises(RecordError, match=r"SomeRouter.*Tensor\(4, 8\)"):
            router_choice(adapter_named(name), out, top_k=2, tokens=4, num_experts=8, path="model.layers.1.mlp.gate",
                          router_class="SomeRouter")
