"""The registry sweep: every MoE model type in transformers is traced with parity, or listed with a reason."""

import numpy as np
import pytest
import torch
from conftest import VOCAB, tiny_dense, tiny_mixtral

import moelab
from moelab.arch import ADAPTERS, UNSUPPORTED, find_routers
from moelab.arch.capabilities import (adapter_model_types, build_tiny, capability_markdown, check_architecture,
                                      moe_model_types, sweep)
from moelab.tracer import TracingError

COVERED = sorted(adapter_model_types())
FAST = ["mixtral", "deepseek_v3", "gpt_oss", "llama4_text"]   # one per routing family; the rest run in the full suite


def _available(mt):
    from transformers import CONFIG_MAPPING

    if mt not in CONFIG_MAPPING:
        pytest.skip(f"{mt} is not in this transformers version")


def test_every_moe_model_type_is_traced_or_listed_with_a_reason():
    unknown = [mt for mt in moe_model_types() if mt not in adapter_model_types() and mt not in UNSUPPORTED]
    assert not unknown, f"MoE model types with neither an adapter nor a reason in UNSUPPORTED: {unknown}"


def test_an_unknown_moe_type_is_reported_never_passed_silently():
    (cap,) = sweep(["some_future_moe"])
    assert not cap.traced and cap.reason.startswith("UNKNOWN")


@pytest.mark.parametrize("model_type", [pytest.param(mt, marks=() if mt in FAST else pytest.mark.slow)
                                        for mt in COVERED if mt != "llama4"])   # llama4 is the multimodal wrapper
def test_recorded_experts_and_weights_equal_what_the_experts_module_received(model_type):
    _available(model_type)
    cap = check_architecture(model_type)
    assert cap.traced and cap.parity, cap.notes
    assert cap.logits and cap.implementations      # logits bitwise unchanged for every implementation offered


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["jamba", "granitemoehybrid", "qwen3_next", "bailing_hybrid", "kimi_linear",
                                        "qwen3_5_moe_text", "qwen4_exp_text", "deepseek_v32", "dots3_note_text"])
def test_hybrid_models_are_traced_on_their_moe_layers_with_the_models_own_layer_ids(model_type):
    _available(model_type)
    model = build_tiny(model_type)
    own = sorted({int(p.split("layers.")[1].split(".")[0]) for p, _ in model.named_modules()
                  if p.endswith(".experts")})
    with moelab.trace(model) as tr, torch.no_grad():
        model(torch.randint(3, 100, (1, 5)))
    assert tr.layer_ids.tolist() == own and 0 < len(own)


def test_hash_routed_layers_record_the_experts_the_token_id_table_chose():
    """DeepSeek-V4's first layers pick experts by a frozen token-id table: the record is that table's lookup."""
    _available("deepseek_v4")
    model = build_tiny("deepseek_v4")
    gate = model.model.layers[0].mlp.gate
    assert type(gate).__name__ == "DeepseekV4HashRouter" and find_routers(model)[0].module is gate
    table = torch.stack([torch.randperm(gate.num_experts, generator=torch.Generator().manual_seed(v))[:gate.top_k]
                         for v in range(gate.tid2eid.shape[0])])       # distinct experts per token id
    gate.tid2eid.copy_(table)
    ids = torch.randint(3, 100, (2, 5), generator=torch.Generator().manual_seed(2))
    with moelab.trace(model) as tr, torch.no_grad():
        model(ids)
    np.testing.assert_array_equal(tr.experts[:, 0], table[ids.reshape(-1)].numpy())


def test_a_model_type_that_reuses_another_families_router_gets_its_own_adapter():
    """sarvam_mla builds DeepSeek-V3's modules; the model type, not the first class match, names the adapter."""
    from moelab.arch import adapter_for

    _available("sarvam_mla")
    model = build_tiny("sarvam_mla")
    assert type(model).__name__ == "DeepseekV3ForCausalLM"
    assert adapter_for(model).name == "sarvam_mla" and adapter_for(build_tiny("deepseek_v3")).name == "deepseek_v3"


def test_the_record_follows_the_experts_when_the_routers_return_is_edited_on_the_way(ids):
    model = tiny_mixtral()
    with moelab.trace(model) as tr:
        router = find_routers(model)[0].module
        handle = router.register_forward_hook(lambda m, i, o: (o[0], o[1], o[2].flip(-1)))   # swap rank 0 and 1
        try:
            seen = []
            h2 = model.get_submodule(find_routers(model)[0].experts_path).register_forward_pre_hook(
                lambda m, args: seen.append(args[1].clone()))
            with torch.no_grad():
                model(ids)
        finally:
            handle.remove()
            h2.remove()
    np.testing.assert_array_equal(tr.experts[:, 0], seen[0].numpy())


def test_a_model_with_no_moe_layers_names_what_was_looked_for():
    with pytest.raises(moelab.UnsupportedModelError, match="Looked for modules of the router classes MixtralTopKRouter"):
        moelab.trace(tiny_dense())


def test_an_unreadable_return_names_the_module_path_and_what_it_returned_and_records_nothing(ids):
    """A future transformers that hands the experts float ids: an error, never a wrong record."""
    model = tiny_mixtral()
    gate, experts = model.model.layers[0].mlp.gate, model.model.layers[0].mlp.experts
    original = type(experts).forward
    experts.forward = lambda h, idx, w: original(experts, h, idx.long(), w)   # this "version" accepts float ids
    h = gate.register_forward_hook(lambda m, i, o: (o[0], o[1], o[2].float()))
    try:
        with pytest.raises(TracingError, match=r"'model\.layers\.0\.mlp\.experts' received a tuple of "
                                               r"\[Tensor\(18, 2\) float32, Tensor\(18, 2\) float32\]"):
            with moelab.trace(model) as tr, torch.no_grad():
                model(ids)
    finally:
        h.remove()
    assert tr.num_tokens == 0


def test_capability_markdown_lists_the_uncovered_types_with_their_reasons():
    text = capability_markdown(sweep(["jetmoe", "some_future_moe"]))
    assert "| jetmoe | mixture-of-attention" in text and "| some_future_moe | UNKNOWN" in text


def test_the_registry_has_one_adapter_per_name_and_no_model_type_twice():
    names = [a.name for a in ADAPTERS]
    types = [mt for a in ADAPTERS for mt in a.model_types]
    assert len(set(names)) == len(names) and len(set(types)) == len(types)
    assert not set(types) & set(UNSUPPORTED)


def test_an_adapter_is_in_this_transformers_exactly_when_its_min_transformers_is_reached():
    """min_transformers says which release brings a model type: the sweep skips a type this version lacks (5.24
    has no ergo, kolibri1_1, minicpm5_moe, param2moe), and never one it should have."""
    import transformers
    from packaging.version import Version
    from transformers import CONFIG_MAPPING

    installed = Version(Version(transformers.__version__).base_version)
    for a in ADAPTERS:
        for mt in a.model_types:
            assert (mt in CONFIG_MAPPING) == (installed >= Version(a.min_transformers)), (a.name, mt, installed)


def test_kolibri1_1_is_traced_beside_a_weightless_indexer_and_a_layer_that_reads_another_layers_keys():
    """The tiny Kolibri 1.1 has what its sweep row vouches for: an indexed layer (1) whose keys and values layer 3
    reuses (no k/v projections), dense MLPs on layers 0-1; the record has its MoE layers 2 and 3 only, with parity."""
    from moelab.arch import adapter_for
    from moelab.arch.capabilities import _parity

    _available("kolibri1_1")
    model = build_tiny("kolibri1_1")
    attn = [layer.self_attn for layer in model.model.layers]
    assert attn[1].indexer is not None and attn[3].indexer is not None and attn[0].indexer is None
    assert attn[3].is_kv_shared_layer and not hasattr(attn[3], "k_proj") and hasattr(attn[1], "k_proj")
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    assert _parity(model, adapter_for(model), ids) == []
    with moelab.trace(model) as tr, torch.no_grad():
        model(ids)
    assert tr.layer_ids.tolist() == [2, 3]


def test_512_experts_and_top_16_trace_save_and_load_with_uint16_ids(tmp_path):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, intermediate_size=32, moe_intermediate_size=4, num_experts=512, num_experts_per_tok=16)).eval()
    with moelab.trace(model) as tr, torch.no_grad():
        model(torch.randint(3, VOCAB, (2, 6)))
    assert tr.experts.dtype == np.uint16 and tr.experts.shape == (12, 2, 16) and tr.experts.max() >= 256
    tr.save(tmp_path / "t.parquet")
    back = moelab.load_trace(tmp_path / "t.parquet")
    assert back.experts.dtype == np.uint16 and np.array_equal(back.experts, tr.experts)
    import pyarrow.parquet as pq

    assert str(pq.read_schema(tmp_path / "t.parquet").field("experts").type.value_type) == "uint16"


def _gemma4_with_per_expert_scales():
    """Tiny Gemma 4 (MoE block on) whose per-expert scales are not 1, so weights != renormalised probabilities."""
    model = build_tiny("gemma4_text")
    g = torch.Generator().manual_seed(3)
    for layer in model.model.layers:
        layer.router.per_expert_scale.data = torch.rand(layer.router.per_expert_scale.shape, generator=g) + 0.5
    return model


def test_gemma4_logits_are_its_router_projection_whose_softmax_is_the_routers_returned_probabilities():
    """Gemma4TextRouter returns softmax probabilities; logits=True records the pre-softmax output of its `proj`."""
    _available("gemma4_text")
    model = _gemma4_with_per_expert_scales()
    routers = [layer.router for layer in model.model.layers]
    proj_out, returned, handles = {}, {}, []
    for i, r in enumerate(routers):   # test-only hooks, independent of the tracer
        handles.append(r.proj.register_forward_hook(lambda m, a, o, i=i: proj_out.__setitem__(i, o.detach().clone())))
        handles.append(r.register_forward_hook(
            lambda m, a, o, i=i: returned.__setitem__(i, tuple(x.detach().clone() for x in o))))
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    try:
        with moelab.trace(model, logits=True, scores=True) as tr, torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    assert tr.layer_ids.tolist() == [0, 1, 2, 3] and tr.logits.shape == (14, 4, 8)
    for j in range(4):
        probs, weights, index = returned[j]
        logits = torch.from_numpy(tr.logits[:, j])
        assert torch.equal(logits, proj_out[j].float())                                  # proj's output, exactly
        torch.testing.assert_close(torch.softmax(logits, -1), probs, rtol=0, atol=1e-7)   # the router's probabilities
        assert not torch.allclose(logits, probs)                                          # ... which are not logits
        np.testing.assert_array_equal(tr.experts[:, j], index.numpy())
        # closed form: top-k of the probabilities, renormalised, times the learned per-expert scale
        top = probs.gather(1, index)
        expect = top / top.sum(-1, keepdim=True) * routers[j].per_expert_scale.detach()[index]
        np.testing.assert_allclose(tr.weights[:, j], expect.numpy(), rtol=1e-6, atol=0)
        assert not np.allclose(tr.weights[:, j].sum(-1), 1.0)                              # the scale is recorded
        # selection scores: softmax of the logits, i.e. the probabilities whose top-k chose the experts
        np.testing.assert_allclose(tr.scores[:, j], probs.numpy(), rtol=0, atol=1e-7)
        top_scores = np.sort(np.argsort(-tr.scores[:, j], axis=-1, kind="stable")[:, :2], -1)
        np.testing.assert_array_equal(top_scores, np.sort(tr.experts[:, j], -1))


def test_gemma4_traces_with_bitwise_unchanged_logits_and_parity_per_expert_scales_included():
    """The sweep's check on a Gemma 4 whose per-expert scales are not 1 (the default init sets them to 1)."""
    from moelab.arch import adapter_for
    from moelab.arch.capabilities import _parity

    _available("gemma4_text")
    model = _gemma4_with_per_expert_scales()
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    assert _parity(model, adapter_for(model), ids) == []
    with torch.no_grad():
        plain = model(ids).logits
        with moelab.trace(model, logits=True, scores=True):
            traced = model(ids).logits
    assert torch.equal(plain, traced)


def test_an_adapter_reads_logits_from_a_named_child_and_says_so_when_the_child_is_missing():
    import dataclasses

    from moelab.arch import adapter_named

    _available("gemma4_text")
    model = build_tiny("gemma4_text")
    (r, *_) = find_routers(model)
    assert r.logits_hook_module is model.model.layers[0].router.proj and r.logits_path.endswith("router.proj")
    wrong = dataclasses.replace(adapter_named("gemma4"), logits_from="gate")
    with pytest.raises(moelab.UnsupportedModelError, match=r"has no child 'gate'.*\['norm', 'proj'\]"):
        wrong.logits_source(r.module, r.path)
    with pytest.raises(ValueError, match="logits_from='proj' needs record='experts'"):
        dataclasses.replace(adapter_named("gemma4"), record="router")


def test_a_model_type_whose_moe_block_is_off_by_default_is_swept_and_unknown_without_an_adapter(monkeypatch):
    """Gemma 4's default config routes nothing (enable_moe_block=False): its switch still makes it an MoE type."""
    from transformers import AutoConfig

    from moelab.arch import capabilities
    from moelab.arch.tiny import is_moe_config

    _available("gemma4_text")
    cfg = AutoConfig.for_model("gemma4_text")
    assert cfg.enable_moe_block is False and cfg.num_experts is None
    assert is_moe_config(cfg) and is_moe_config(AutoConfig.for_model("gemma4"))
    assert not is_moe_config(AutoConfig.for_model("gemma3_text"))                  # a dense relative is not
    monkeypatch.setattr(capabilities, "ADAPTERS", tuple(a for a in ADAPTERS if a.name != "gemma4"))
    assert {"gemma4", "gemma4_text"} <= set(capabilities.moe_model_types())
    (cap,) = capabilities.sweep(["gemma4_text"])
    assert not cap.traced and cap.reason.startswith("UNKNOWN")


def test_the_gemma4_multimodal_wrapper_records_token_ids_and_skips_padding_like_its_text_model():
    """Gemma4Model hands its language model embeddings and a mask mapping: the tracer hooks the wrapper's model."""
    _available("gemma4")
    model = build_tiny("gemma4")
    assert type(model).__name__ == "Gemma4ForConditionalGeneration"
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0                                                     # left padding on row 1
    with moelab.trace(model) as tr, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    np.testing.assert_array_equal(tr.token_id, ids[mask.bool()].numpy())  # real tokens only, row by row
    np.testing.assert_array_equal(tr.position, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3])


def test_a_config_that_does_not_build_offline_is_reported_unknown_with_its_error(monkeypatch):
    """A causal-LM type whose default config raises is swept and reported, not skipped."""
    import transformers

    from moelab.arch import capabilities

    real = transformers.AutoConfig.for_model

    def for_model(mt, *a, **kw):
        if mt == "broken_moe":
            raise ValueError("num_experts must be set, got None")
        return real(mt, *a, **kw)

    monkeypatch.setattr(transformers.AutoConfig, "for_model", for_model)
    monkeypatch.setattr(capabilities, "causal_lm_types", lambda: ["broken_moe", "llama", "mixtral"])
    assert capabilities.moe_model_types() == ["broken_moe", "mixtral"]      # llama builds and is dense: left out
    (cap,) = sweep(["broken_moe"])
    assert not cap.traced and cap.reason.startswith("UNKNOWN: does not build offline")
    assert "ValueError: num_experts must be set, got None" in cap.reason


def test_types_left_out_as_not_moe_fail_to_build_and_cannot_enable_experts():
    """Each NOT_MOE entry is a config that does not build from defaults, and gemma4_assistant refuses an MoE block."""
    from moelab.arch.capabilities import NOT_MOE, build_error

    for mt in NOT_MOE:
        _available(mt)
        assert build_error(mt) is not None, f"{mt} builds from its defaults now: let the sweep read it"
    if "gemma4_assistant" in NOT_MOE:
        from transformers import CONFIG_MAPPING

        text = CONFIG_MAPPING["gemma4_text"](hidden_size_per_layer_input=0, vocab_size_per_layer_input=0,
                                             enable_moe_block=True, use_double_wide_mlp=False)
        with pytest.raises(Exception, match="enable_moe_block must be False"):
            CONFIG_MAPPING["gemma4_assistant"](text_config=text)


def test_a_config_with_several_text_configs_is_read_not_skipped():
    """musicgen's get_text_config() is ambiguous (text_encoder, decoder): each sub-config is read instead."""
    from transformers import AutoConfig

    from moelab.arch.capabilities import _declares_experts

    _available("musicgen")
    cfg = AutoConfig.for_model("musicgen")
    assert _declares_experts(cfg) is False
    cfg.decoder.num_experts = 8                              # the same config with experts in one sub-config
    assert _declares_experts(cfg) is True
