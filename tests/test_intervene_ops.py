"""Pure routing transforms against each architecture's own router and against brute force."""

import pytest
import torch

from moelab.adapters import adapter_for, find_routers, model_config
from moelab.interventions import ops
from moelab.interventions.ops import InterventionError, RouterSpec

from conftest import BUILDERS


def router_and_spec(arch):
    torch.manual_seed(0)
    model = BUILDERS[arch]()
    r = find_routers(model)[0].module
    with torch.no_grad():
        r.weight.normal_(0, 1.0)
    return r, ops.spec_from_config(adapter_for(model), model_config(model))


@pytest.mark.parametrize("arch", list(BUILDERS))
def test_select_reproduces_the_router_bitwise(arch):
    r, spec = router_and_spec(arch)
    x = torch.randn(17, 32)
    with torch.no_grad():
        logits, w, idx = r(x)
    w2, idx2 = ops.select(logits, spec)
    assert torch.equal(idx2, idx) and torch.equal(w2, w) and w2.dtype == w.dtype


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
def test_weights_for_the_routers_own_choice_are_its_weights(arch):
    r, spec = router_and_spec(arch)
    with torch.no_grad():
        logits, w, idx = r(torch.randn(11, 32))
    assert torch.equal(ops.weights_for(logits, idx, spec), w)


@pytest.mark.parametrize("renormalise", [True, False])
def test_route_around_equals_brute_force_over_the_remaining_experts(renormalise):
    spec = RouterSpec("qwen3_moe", num_experts=6, top_k=2, renormalise=renormalise, cast_weights=True)
    logits = torch.randn(50, 6)
    w, idx = ops.select(logits, spec, blocked=[1, 4])
    keep = [0, 2, 3, 5]
    p = torch.softmax(logits[:, keep], -1)                        # softmax over the experts left
    v, j = p.topk(2, -1)
    if renormalise:
        v = v / v.sum(-1, keepdim=True)
    assert torch.equal(idx, torch.tensor(keep)[j])
    assert torch.allclose(w, v, atol=1e-6)


def test_bias_moves_traffic_and_top_k_widens():
    spec = RouterSpec("mixtral", num_experts=4, top_k=2, renormalise=True, cast_weights=False)
    logits = torch.randn(100, 4)
    _, idx = ops.select(logits, spec, bias=torch.tensor([0.0, 0.0, 0.0, 100.0]))
    assert (idx[:, 0] == 3).all()
    w, idx = ops.select(logits, spec, k=4)
    assert idx.shape == (100, 4) and torch.allclose(w.sum(-1), torch.ones(100))
    assert torch.equal(idx.sort(-1).values, torch.arange(4).expand(100, 4))


def test_skip_drops_exactly_the_second_choices_below_beta_times_the_first():
    spec = RouterSpec("mixtral", num_experts=8, top_k=2, renormalise=True, cast_weights=False)
    w = torch.tensor([[0.6, 0.4], [0.8, 0.2], [0.5, 0.5]])
    out, kept = ops.skip(w, torch.zeros(3, 2, dtype=torch.long), beta=0.5, spec=spec)
    assert kept.tolist() == [[True, True], [True, False], [True, True]]
    assert torch.equal(out, torch.tensor([[0.6, 0.4], [1.0, 0.0], [0.5, 0.5]]))
    spec_nr = RouterSpec("qwen2_moe", 8, 2, renormalise=False, cast_weights=True)
    out, _ = ops.skip(w, torch.zeros(3, 2, dtype=torch.long), beta=0.5, spec=spec_nr)
    assert torch.equal(out[1], torch.tensor([0.8, 0.0]))                  # no renormalisation there


def test_zero_keeps_the_index_and_zeroes_only_the_named_experts():
    w = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    idx = torch.tensor([[2, 5], [5, 1]])
    assert torch.equal(ops.zero(w, idx, [5]), torch.tensor([[0.7, 0.0], [0.0, 0.4]]))


def test_checks_quote_the_bad_value():
    spec = RouterSpec("mixtral", 8, 2, True, False)
    with pytest.raises(InterventionError, match="expert 8 does not exist"):
        ops.check_expert(8, spec, "ablate")
    with pytest.raises(InterventionError, match="top_k=0"):
        ops.check_k(0, spec)
    with pytest.raises(InterventionError, match="top_k=3 but only 2 experts"):
        ops.check_k(3, spec, available=2)
