"""moelab.intervene on tiny random models: no-ops are bitwise no-ops, ablations/forcing show in the trace,
top-1 matches a hand-written MoE forward, replay pins bf16 routing to fp32, nothing is left behind, bad
input is refused with a message quoting it."""

import copy

import pytest
import torch

import moelab
from moelab.interventions import Force, Intervention, InterventionError, UnsupportedIntervention, intervene, ops
from moelab.reference import model_forward

from conftest import BUILDERS, VOCAB, hook_state, tiny_mixtral

IMPLS = ["eager", "grouped_mm", "batched_mm"]


def logits(model, ids, **kw):
    with torch.no_grad():
        if kw:
            with intervene(model, **kw):
                return model(ids).logits
        return model(ids).logits


def own_trace(model, ids):
    with moelab.trace(model, logits=True) as tr, torch.no_grad():
        model(ids)
    return tr


# ------------------------------------------------------------------ no-ops are bitwise no-ops
def test_every_no_op_is_bitwise_equal_on_mixtral(mixtral, ids):
    ref = logits(mixtral, ids)
    tr = own_trace(mixtral, ids)
    own = {int(l): Force(torch.as_tensor(tr.experts[:, j].astype("int64"))) for j, l in enumerate(tr.layer_ids)}
    for kw in (dict(top_k=2), dict(ablate=[]), dict(ablate=[], mode="zero"), dict(bias=torch.zeros(8)),
               dict(skip=0.0), dict(replay=tr), dict(force=own), dict(replay=tr, replay_weights="trace")):
        assert torch.equal(logits(mixtral, ids, **kw), ref), kw


def test_forcing_with_padding_keeps_the_padded_models_output(mixtral):
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])                     # left padding, as generate pads
    with torch.no_grad():
        ref = mixtral(input_ids=ids, attention_mask=mask).logits
        with moelab.trace(mixtral) as tr:
            mixtral(input_ids=ids, attention_mask=mask)
        with intervene(mixtral, replay=tr) as iv:
            out = mixtral(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out[mask.bool()], ref[mask.bool()])
    with intervene(mixtral, top_k=1) as iv, torch.no_grad():
        mixtral(input_ids=ids, attention_mask=mask)
    assert iv.counts() == {0: (12.0, 12), 1: (12.0, 12), 2: (12.0, 12)}          # padding is not counted


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_recomputing_the_routers_own_choice_is_bitwise_equal(arch, ids):
    torch.manual_seed(0)
    model = BUILDERS[arch]()
    ref = logits(model, ids)
    E = intervene(model).spec.num_experts
    k = intervene(model).spec.top_k
    assert torch.equal(logits(model, ids, top_k=k), ref)                        # k = configured k
    assert torch.equal(logits(model, ids, ablate=[]), ref)                      # ablate nothing
    assert torch.equal(logits(model, ids, bias=torch.zeros(E)), ref)            # zero steering
    assert torch.equal(logits(model, ids, skip=0.0), ref)                       # never skip


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
@pytest.mark.parametrize("impl", IMPLS)
def test_replaying_or_forcing_the_models_own_routing_is_bitwise_equal(arch, impl, ids):
    torch.manual_seed(0)
    model = BUILDERS[arch]()
    model.set_experts_implementation(impl)
    ref = logits(model, ids)
    tr = own_trace(model, ids)
    assert torch.equal(logits(model, ids, replay=tr), ref)
    own = {int(l): Force(torch.as_tensor(tr.experts[:, j].astype("int64"))) for j, l in enumerate(tr.layer_ids)}
    assert torch.equal(logits(model, ids, force=own), ref)


# ----------------------------------------------------------- what the trace sees inside the block
@pytest.mark.parametrize("trace_first", [True, False])
def test_an_ablated_expert_never_appears_in_a_trace_taken_inside_the_block(mixtral, ids, trace_first):
    base = own_trace(mixtral, ids)
    busiest = int(torch.as_tensor(base.experts[:, 1].astype("int64")).flatten().bincount().argmax())
    iv, tr_cm = intervene(mixtral, ablate={1: [busiest]}), moelab.trace(mixtral)
    with torch.no_grad():
        if trace_first:
            with tr_cm as tr, iv:
                mixtral(ids)
        else:
            with iv, tr_cm as tr:
                mixtral(ids)
    assert (base.experts[:, 1] == busiest).any()
    assert not (tr.experts[:, 1] == busiest).any()
    assert (tr.experts[:, 0] == base.experts[:, 0]).all()                      # the layer before is untouched
    assert torch.allclose(torch.as_tensor(tr.weights.astype("float32")).sum(-1), torch.ones(1), atol=2e-3)  # renormalised


def test_ablate_zero_keeps_the_choice_and_zeroes_the_weight(mixtral, ids):
    base = own_trace(mixtral, ids)
    with intervene(mixtral, ablate={0: [3]}, mode="zero"), moelab.trace(mixtral, logits=True) as tr, torch.no_grad():
        mixtral(ids)
    assert (tr.experts[:, 0] == base.experts[:, 0]).all()
    hit = tr.experts[:, 0] == 3
    assert hit.any() and (tr.weights[:, 0][hit] == 0).all() and (tr.weights[:, 0][~hit] > 0).all()


def test_forced_experts_appear_exactly_and_only_where_asked(mixtral, ids):
    base = own_trace(mixtral, ids)
    with intervene(mixtral, force=Force([6, 1], weights=[0.5, 0.5])), moelab.trace(mixtral) as tr, torch.no_grad():
        mixtral(ids)
    assert (tr.experts == [6, 1]).all() and (tr.weights == 0.5).all()
    with intervene(mixtral, force={2: Force([7, 4], positions=[0, 3])}), moelab.trace(mixtral) as tr, torch.no_grad():
        mixtral(ids)
    at = (tr.position == 0) | (tr.position == 3)
    assert (tr.experts[at, 2] == [7, 4]).all()
    assert (tr.experts[~at, 0] == base.experts[~at, 0]).all()
    tok = int(ids[0, 4])
    with intervene(mixtral, force={0: Force([5, 2], token_ids=[tok])}), moelab.trace(mixtral) as tr, torch.no_grad():
        mixtral(ids)
    assert (tr.experts[tr.token_id == tok, 0] == [5, 2]).all()
    assert (tr.experts[tr.token_id != tok, 0] == base.experts[tr.token_id != tok, 0]).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_top1_equals_a_hand_written_moe_forward_with_k1(mixtral, ids, impl):
    mixtral.set_experts_implementation(impl)
    ref = model_forward(mixtral, ids, k=1)                                       # moelab.reference (notebook 01's einsum block)
    assert torch.allclose(logits(mixtral, ids, top_k=1), ref, atol=1e-5)
    assert torch.allclose(logits(mixtral, ids, top_k=4), model_forward(mixtral, ids, k=4), atol=1e-5)
    assert not torch.allclose(logits(mixtral, ids, top_k=1), logits(mixtral, ids), atol=1e-3)


def test_dynamic_skipping_with_beta_one_is_top1_and_counts_fewer_experts(mixtral, ids):
    with intervene(mixtral, skip=1.0) as iv, torch.no_grad():
        out = mixtral(ids).logits
    assert torch.allclose(out, logits(mixtral, ids, top_k=1), atol=1e-6)
    assert iv.effective_k() == {0: 1.0, 1: 1.0, 2: 1.0}
    tr = own_trace(mixtral, ids)
    ratio = tr.weights[:, 1, 1].astype("float64") / tr.weights[:, 1, 0]        # w2 / w1 at layer 1
    beta = float(sorted(ratio)[len(ratio) // 2])                               # skips about half the tokens
    with intervene(mixtral, skip=[0.0, beta, 1.0]) as iv, torch.no_grad():
        mixtral(ids)
    k = iv.effective_k()
    assert k[0] == 2.0 and k[1] == pytest.approx(2 - (ratio < beta).mean()) and k[2] == 1.0


def test_replaying_an_fp32_trace_makes_bf16_routing_equal_fp32_on_every_token_layer(ids):
    torch.manual_seed(0)
    fp32 = tiny_mixtral()
    with torch.no_grad():  # larger router weights: near-ties, so bf16 flips some choices
        for layer in fp32.model.layers:
            layer.mlp.gate.weight.mul_(8)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(3))
    ref = own_trace(fp32, ids)
    plain = own_trace(bf16, ids)
    with intervene(bf16, replay=ref), moelab.trace(bf16) as tr, torch.no_grad():
        bf16(ids)
    assert (tr.experts == ref.experts).all()                                     # 100% of token-layers
    assert (plain.experts != ref.experts).any()                                  # without replay some flip


# ---------------------------------------------------------------- nothing is left behind
def test_params_buffers_config_and_hooks_are_unchanged_even_after_an_exception(mixtral, ids):
    before = {k: v.clone() for k, v in mixtral.state_dict().items()}
    buffers = {k: v.clone() for k, v in mixtral.named_buffers()}
    cfg, hooks = mixtral.config.to_dict(), hook_state(mixtral)
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(mixtral, top_k=1, bias=torch.ones(8), ablate={0: [1]}, skip=0.3), torch.no_grad():
            mixtral(ids)
            raise RuntimeError("boom")
    with intervene(mixtral, force=[1, 2]), torch.no_grad():
        mixtral(ids)
    assert hook_state(mixtral) == hooks
    assert all(torch.equal(v, before[k]) for k, v in mixtral.state_dict().items())
    assert all(torch.equal(v, buffers[k]) for k, v in mixtral.named_buffers())
    assert mixtral.config.to_dict() == cfg
    with intervene(mixtral, ablate={0: [1]}):                                    # the layer is free again
        pass


# ---------------------------------------------------------------------- bad input is refused
@pytest.mark.parametrize("kw, quoted", [
    (dict(ablate=[8]), "expert 8"),
    (dict(force=[0, 9]), "expert 9"),
    (dict(ablate={5: [0]}), "layer 5"),
    (dict(layers=[3], top_k=1), "layer 3"),
    (dict(top_k=0), "top_k=0"),
    (dict(top_k=9), "top_k=9"),
    (dict(bias=torch.zeros(5)), "(5,)"),
    (dict(bias={0: [1.0, 2.0]}), "[1.0, 2.0]"),
    (dict(ablate=[-1]), "expert -1"),
    (dict(top_k={0: 0}), "top_k=0"),
    (dict(skip=[0.1, 0.2]), "[0.1, 0.2]"),
    (dict(force=Force([1, 2], weights=[1.0])), "[1.0]"),
    (dict(skip=1.5), "1.5"),
    (dict(mode="drop", ablate=[1]), "'drop'"),
    (dict(ablate=[0, 1, 2, 3, 4, 5, 6], top_k=2), "top_k=2"),
])
def test_bad_input_is_refused_with_a_message_quoting_it(mixtral, kw, quoted):
    with pytest.raises(InterventionError) as e:
        intervene(mixtral, **kw)
    assert quoted in str(e.value)


def test_replay_refuses_a_trace_of_other_tokens(mixtral, ids):
    tr = own_trace(mixtral, ids)
    other = ids.clone()
    other[1, 3] = (other[1, 3] + 1) % VOCAB
    hooks = hook_state(mixtral)
    with pytest.raises(InterventionError, match="does not describe these tokens"):
        with intervene(mixtral, replay=tr), torch.no_grad():
            mixtral(other)
    assert hook_state(mixtral) == hooks


def test_nested_blocks_that_change_the_same_layer_are_refused(mixtral, ids):
    with intervene(mixtral, ablate={1: [2]}):
        with intervene(mixtral, top_k=1, layers=[0, 2]), torch.no_grad():           # other layers: fine
            mixtral(ids)
        with pytest.raises(InterventionError, match="layer 1") as e:
            with intervene(mixtral, top_k=1):
                pass
        assert "ablate=[2]" in str(e.value) and "top_k=1" in str(e.value)


def test_an_unverified_architecture_is_refused_naming_it_and_the_operation(monkeypatch, ids):
    model = BUILDERS["olmoe"]()
    monkeypatch.setattr(ops, "VERIFIED", tuple(a for a in ops.VERIFIED if a != "olmoe"))
    with pytest.raises(UnsupportedIntervention, match=r"olmoe: ablate=\[2\] and top_k=1 is not verified"):
        intervene(model, top_k=1, ablate=[2])
    with pytest.raises(UnsupportedIntervention, match="olmoe: score is not verified"):
        moelab.interventions.score(model, None, {"a": "x"})
    with intervene(model), torch.no_grad():                                     # an empty block changes nothing
        model(ids)


def test_unknown_arguments_are_refused(mixtral):
    with pytest.raises(TypeError, match="ablte"):
        Intervention(mixtral, ablte=[1])


def test_phimoe_refuses_what_sparsemixer_cannot_express(ids):
    model = BUILDERS["phimoe"]()
    with pytest.raises(UnsupportedIntervention, match="phimoe: top_k=1"):
        intervene(model, top_k=1)
    with pytest.raises(UnsupportedIntervention, match="phimoe: force without explicit weights"):
        intervene(model, force=[0, 1])
    base = own_trace(model, ids)
    with intervene(model, ablate={0: [int(base.experts[0, 0, 0])]}), moelab.trace(model) as tr, torch.no_grad():
        model(ids)
    assert not (tr.experts[:, 0] == base.experts[0, 0, 0]).any()
