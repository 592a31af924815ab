"""Routing variants against transformers' own MoE blocks (tiny random configs) and closed forms."""

import pytest
import torch
from transformers import DeepseekV3Config, OlmoeConfig
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock
from transformers.models.switch_transformers.modeling_switch_transformers import router_z_loss_func

from moelab import variants as v


def _init(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module.eval()


def test_olmoe_block_without_renormalisation():
    cfg = OlmoeConfig(hidden_size=16, intermediate_size=24, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False)
    block = _init(OlmoeSparseMoeBlock(cfg))
    x = torch.randn(1, 10, 16)
    with torch.no_grad():
        ref = block(x)[0]
        got = v.moe_forward(x[0], block.gate.weight, block.experts.gate_up_proj, block.experts.down_proj,
                            lambda lg: v.softmax_topk(lg, 2, renormalize=False))
        renormed = v.moe_forward(x[0], block.gate.weight, block.experts.gate_up_proj, block.experts.down_proj,
                                 lambda lg: v.softmax_topk(lg, 2))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(renormed, ref, atol=1e-3)                      # renormalising changes OLMoE


def test_deepseek_v3_shared_experts_and_biased_group_selection():
    cfg = DeepseekV3Config(hidden_size=16, moe_intermediate_size=8, n_routed_experts=8, num_experts_per_tok=2,
                           n_group=4, topk_group=2, n_shared_experts=1, norm_topk_prob=True, routed_scaling_factor=2.5)
    block = _init(DeepseekV3MoE(cfg))
    bias = torch.randn(8)
    block.gate.e_score_correction_bias.copy_(bias)
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        ref = block(x)[0]
        route = lambda lg: v.sigmoid_topk(lg, 2, bias, n_group=4, topk_group=2, scale=2.5)
        got = v.moe_forward(x[0], block.gate.weight, block.experts.gate_up_proj, block.experts.down_proj, route,
                            shared=block.shared_experts)
        _, ref_w, ref_idx = block.gate(x[0])
        w, idx = route(x[0] @ block.gate.weight.T)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    order, ref_order = idx.sort(-1), ref_idx.sort(-1)
    assert torch.equal(order.values, ref_order.values)
    torch.testing.assert_close(w.gather(1, order.indices), ref_w.gather(1, ref_order.indices))


def test_bias_changes_the_selection_but_not_the_weights():
    logits = torch.tensor([[1.0, 0.9, -2.0, -3.0]])
    w0, i0 = v.sigmoid_topk(logits, 1, renormalize=False)
    w1, i1 = v.sigmoid_topk(logits, 1, torch.tensor([0.0, 0.0, 5.0, 0.0]), renormalize=False)
    assert i0.item() == 0 and i1.item() == 2
    assert w1.item() == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item())   # the unbiased score


def test_balance_bias_update_balances_a_skewed_router():
    torch.manual_seed(1)
    x = torch.randn(2048, 8)
    W = torch.randn(4, 8) * 0.3
    W[0] += 0.8                                                                   # expert 0 favoured
    bias = torch.zeros(4)
    load0 = torch.bincount(v.sigmoid_topk(x @ W.T, 1)[1].reshape(-1), minlength=4)
    for _ in range(200):
        bias = v.update_balance_bias(bias, v.sigmoid_topk(x @ W.T, 1, bias)[1], rate=0.01)
    load = torch.bincount(v.sigmoid_topk(x @ W.T, 1, bias)[1].reshape(-1), minlength=4)
    assert load.max() - load.min() < (load0.max() - load0.min()) / 4


def test_expert_choice_fills_every_expert_exactly():
    torch.manual_seed(2)
    logits = torch.randn(20, 4)
    w, tok = v.expert_choice(logits, capacity=5)
    probs = logits.softmax(-1)
    for e in range(4):
        assert set(tok[e].tolist()) == set(probs[:, e].argsort(descending=True)[:5].tolist())
    x, Wg = torch.randn(20, 6), torch.randn(4, 6)
    gu, down = torch.randn(4, 10, 6), torch.randn(4, 6, 5)
    y, per_token = v.expert_choice_forward(x, Wg, gu, down, capacity=5)
    assert per_token.sum() == 20 and y.shape == x.shape
    assert torch.all(y[per_token == 0] == 0)                                      # unpicked tokens: residual only


def test_token_choice_weights_match_the_paper_formula():
    logits = torch.randn(7, 8)
    w, idx = v.softmax_topk(logits, 2)
    torch.testing.assert_close(w, logits.gather(1, idx).softmax(-1))              # Softmax(Top2(x W_g))


def test_router_z_loss_matches_switch_transformers():
    logits = torch.randn(3, 5, 8) * 4
    torch.testing.assert_close(v.router_z_loss(logits), router_z_loss_func(logits))
    assert v.router_z_loss(logits / 4) < v.router_z_loss(logits)
