"""moelab.compute is exact on every traced family beyond the first eight (tests/test_compute_arch.py), hybrids
included: `count_params(config).total` equals `sum(p.numel() for p in model.parameters())` and `forward_flops`
equals what `torch.utils.flop_counter.FlopCounterMode` counts in a forward pass from an empty cache, on tiny
models built offline: the tiny default config (2 x 12 tokens) and the config with its optional parts switched on
(VARIANTS, 2 x 70 tokens: past a 64-token sliding window, several Mamba-2 / DeltaNet chunks and lightning blocks,
the last one partial)."""

import functools

import pytest
import torch
import transformers as T
from conftest import CACHE_KW, cache_of
from torch.utils.flop_counter import FlopCounterMode

import moelab.compute as C
from moelab.arch.tiny import tiny_config

DEFAULT = ["deepseek_v2", "glm4_moe", "sarvam_moe", "glm4_moe_lite", "dots1", "ernie4_5_moe", "hunyuan_v1_moe",
           "flex_olmo", "granitemoe", "granitemoeshared", "granitemoe_swa", "aria_text", "afmoe", "beam",
           "cohere2_moe", "exaone_moe", "flint", "hy_v3", "kolibri1", "laguna", "mellum", "mimo_v2_flash",
           "minimax_m2", "minimax_m3_vl_text", "solar_open",
           # hybrids: Mamba (jamba), Mamba-2 (granitemoehybrid, nemotron_h), short conv (lfm2_moe),
           # gated DeltaNet (qwen3_next, lara_mini), lightning attention (minimax)
           "jamba", "granitemoehybrid", "nemotron_h", "lfm2_moe", "qwen3_next", "lara_mini", "minimax",
           # traced later: MLA stacks (DeepSeek sparse-attention indexer on deepseek_v32, glm_moe_dsa, dots3_note),
           # qwen3_5_moe (gated DeltaNet), dbrx (fused Wqkv, sub-config sizes)
           "sarvam_mla", "axk1", "deepseek_v32", "glm_moe_dsa", "dots3_note_text", "qwen3_5_moe_text", "dbrx",
           # Kimi delta attention (KDA) beside MLA layers; MLA with a fused q + output gate, DSA indexer and gated
           # norms; compressed sparse attention with hyper-connections (moelab.arch.shapes_linear)
           "kimi_linear", "bailing_hybrid", "axk2", "deepseek_v4",
           # moelab.arch.shapes_extra: per-layer input embeddings, KV sharing, k = v attention, an MLP beside the MoE
           # block (gemma4_text); hyper-connections (hy_v4, qwen4_exp_text, with a QSA block indexer and n-gram PLE
           # layers); short convs, relative-position logits, sink projections, block attention residuals (inkling*)
           "gemma4_text", "hy_v4", "qwen4_exp_text", "inkling_text", "inkling2_text"]
# transformers 5.25 (moelab.arch.shapes_525; param2moe builds GLM-4-MoE): only where this transformers has them
NEW_525 = ["ergo", "kolibri1_1", "minicpm5_moe", "param2moe"]
DEFAULT += [mt for mt in NEW_525 if mt in T.CONFIG_MAPPING]

# per model type: config fields set on the tiny config to switch on what the default leaves off
VARIANTS = {
    "deepseek_v2": dict(attention_bias=True, mlp_bias=True, q_lora_rank=None, first_k_dense_replace=2),
    "glm4_moe": dict(attention_bias=True, use_qk_norm=True, n_shared_experts=2, tie_word_embeddings=True),
    "glm4_moe_lite": dict(attention_bias=True, q_lora_rank=None,
                          mlp_layer_types=["dense", "dense", "sparse", "sparse"]),
    "dots1": dict(attention_bias=True, first_k_dense_replace=0),
    "ernie4_5_moe": dict(use_bias=True, moe_layer_interval=2, moe_num_shared_experts=0),
    "hunyuan_v1_moe": dict(attention_bias=True),
    "flex_olmo": dict(attention_bias=True),
    "granitemoe": dict(attention_bias=True),
    "granitemoeshared": dict(shared_intermediate_size=0),
    "granitemoe_swa": dict(attention_bias=True),
    "aria_text": dict(attention_bias=True, mlp_bias=True, moe_num_shared_experts=2),
    "afmoe": dict(attention_bias=True, num_dense_layers=2, num_shared_experts=1),
    "beam": dict(attention_bias=True, mlp_layer_types=["sparse", "dense", "sparse", "dense"]),
    "cohere2_moe": dict(attention_bias=True, num_shared_experts=1, prefix_dense_intermediate_size=48,
                        mlp_layer_types=["dense", "sparse", "sparse", "sparse"]),
    "exaone_moe": dict(num_shared_experts=2),
    "flint": dict(attention_bias=True, decoder_sparse_step=2, mlp_only_layers=[3]),
    "hy_v3": dict(attention_bias=True, mlp_bias=True, num_shared_experts=2),
    "kolibri1": dict(shared_expert_intermediate_size=48, tie_word_embeddings=True),
    "laguna": dict(attention_bias=True, gating="per-element", num_attention_heads_per_layer=[4, 8, 2, 4]),
    "mellum": dict(attention_bias=True, mlp_layer_types=["dense", "sparse", "dense", "sparse"]),
    "mimo_v2_flash": dict(attention_bias=True, v_head_dim=8),
    "minimax_m3_vl_text": dict(layer_types=["full_attention", "minimax_m3_sparse"] * 2, index_head_dim=16,
                               mlp_layer_types=["dense", "sparse", "sparse", "sparse"]),
    "solar_open": dict(attention_bias=True, n_shared_experts=2),
    "jamba": dict(mamba_proj_bias=True, mamba_conv_bias=False, attn_layer_offset=0, expert_layer_offset=0),
    "granitemoehybrid": dict(attention_bias=True, mamba_proj_bias=True, mamba_conv_bias=False, mamba_n_groups=2,
                             mamba_chunk_size=16),
    "nemotron_h": dict(mamba_num_heads=8, mamba_head_dim=16, n_groups=2, ssm_state_size=8, chunk_size=16,
                       moe_shared_expert_intermediate_size=48, moe_latent_size=32, mlp_bias=True, use_bias=True,
                       use_conv_bias=False, layers_block_type=["moe", "linear_attention", "mlp", "full_attention"]),
    "lfm2_moe": dict(conv_bias=True, num_dense_layers=2),
    "qwen3_next": dict(attention_bias=True, decoder_sparse_step=2, linear_num_value_heads=4, linear_num_key_heads=2),
    "lara_mini": dict(attention_bias=True, linear_key_head_dim=8),
    "minimax": dict(block_size=16),
    "deepseek_v32": dict(attention_bias=True, first_k_dense_replace=2),
    "dots3_note_text": dict(attention_bias=True, layer_types=["indexed_attention", "sliding_attention"] * 2),
    "qwen3_5_moe_text": dict(attention_bias=True),
    "kimi_linear": dict(attention_bias=True, q_lora_rank=16, n_shared_experts=2, linear_num_heads=4,
                        linear_head_dim=8, mlp_layer_types=["sparse", "dense", "sparse", "dense"]),
    "bailing_hybrid": dict(attention_bias=True, q_lora_rank=16, n_shared_experts=2, linear_num_heads=4,
                           linear_head_dim=8, kda_safe_gate=False,
                           mlp_layer_types=["sparse", "dense", "sparse", "dense"]),
    "axk2": dict(attention_bias=True, n_shared_experts=2, gated_norm_rank=8, index_n_heads=4, index_head_dim=16,
                 index_topk=8, n_group=2, topk_group=1, mlp_layer_types=["sparse", "dense", "sparse", "dense"]),
    "deepseek_v4": dict(layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                                     "compressed_sparse_attention"],
                        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
                        mlp_bias=True, hc_mult=2, o_groups=2, o_lora_rank=16, index_n_heads=4, index_head_dim=16,
                        sliding_window=16, mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"]),
    "gemma4_text": dict(attention_bias=True, attention_k_eq_v=True, num_kv_shared_layers=2, use_double_wide_mlp=True,
                        layer_types=["sliding_attention", "full_attention"] * 2),
    "hy_v4": dict(attention_bias=True, n_shared_experts=2, hc_mult=2, index_n_heads=2, index_head_dim=16,
                  indexer_types=["full", "shared", "full", "shared"], mlp_layer_types=["sparse", "dense"] * 2),
    "qwen4_exp_text": dict(attention_bias=True, hc_count=2, ple_layer_ids=[1, 3], ple_embed_dim=32, heads_per_ngram=2,
                           ngram_vocab_size_base=50, make_ngram_vocab_size_divisible_by=16, number_of_conv_states=3,
                           layer_types=["linear_attention", "indexed_attention"] * 2),  # PLE on linear layers only
    "inkling_text": dict(layer_types=["hybrid_sliding", "hybrid"] * 2, mlp_layer_types=["dense", "sparse"] * 2,
                         n_shared_experts=2, rel_extent=48, log_scaling_n_floor=16, swa_num_attention_heads=4,
                         swa_num_key_value_heads=4, conv_kernel_size=3, tie_word_embeddings=True),  # never tied
    "inkling2_text": dict(layer_types=["hybrid", "hybrid_sliding", "hybrid", "hybrid"], n_layers_per_attn_res_block=2,
                          unpadded_vocab_size=100, rel_extent=48, swa_num_attention_heads=4, swa_num_key_value_heads=4,
                          conv_kernel_size=3),
    "ergo": dict(mlp_layer_types=["dense", "dense", "sparse", "sparse"], global_attention_scale=2.0,
                 layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=16),
    # layers 1 and 3 index (no reuse), layer 2's dense MLP only; 70 tokens stay inside the indexers' budget
    "kolibri1_1": dict(mlp_only_layers=[2], index_layers=[1, 3], kv_source_layers=[0, 1, 2, 3],
                       shared_expert_intermediate_size=48, tie_word_embeddings=True, sliding_window=16),
    "minicpm5_moe": dict(attention_bias=True, n_shared_experts=2,
                         mlp_layer_types=["sparse", "dense", "sparse", "dense"]),
    "param2moe": dict(attention_bias=True, use_qk_norm=False, n_shared_experts=1, first_k_dense_replace=2,
                      tie_word_embeddings=False),
}
VARIANTS = {mt: v for mt, v in VARIANTS.items() if mt in T.CONFIG_MAPPING}
CASES = [(mt, False) for mt in DEFAULT] + [(mt, True) for mt in VARIANTS]


@functools.lru_cache(maxsize=None)
def _measured(model_type: str, variant: bool):
    """(config, sequence length, numel of model.parameters(), FlopCounterMode total of one 2 x S-token forward)."""
    cfg = tiny_config(model_type)
    for k, v in (VARIANTS[model_type] if variant else {}).items():
        setattr(cfg.get_text_config(), k, v)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", experts_implementation="eager")
    model.eval().requires_grad_(False)  # FlopCounterMode's module tracker trips on dbrx's views of trainable weights
    S = 70 if variant else 12
    ids = torch.randint(3, 100, (2, S), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids)
    return model.config, S, sum(p.numel() for p in model.parameters()), fc.get_total_flops()


@pytest.mark.parametrize("model_type,variant", CASES, ids=[f"{m}{'-variant' if v else ''}" for m, v in CASES])
def test_count_params_equals_the_sum_of_model_parameters(model_type, variant):
    config, _, numel, _ = _measured(model_type, variant)
    assert C.count_params(config).total == numel


@pytest.mark.parametrize("model_type,variant", CASES, ids=[f"{m}{'-variant' if v else ''}" for m, v in CASES])
def test_forward_flops_equal_flop_counter_mode(model_type, variant):
    config, S, _, counted = _measured(model_type, variant)
    assert C.forward_flops(config, batch=2, seq_len=S, logits="all").total == counted


def _active_by_gradient(model) -> int:
    """Parameters one token uses, measured: all parameters, less the routed experts whose slice of each stacked
    experts tensor gets no gradient from one token's logits (embedding rows count fully, the convention)."""
    model.zero_grad(set_to_none=True)
    model(torch.tensor([[5]])).logits.sum().backward()
    unused = 0
    for name, p in model.named_parameters():
        if ".experts." in name and p.grad is not None and p.dim() == 3:
            used = p.grad.flatten(1).ne(0).any(1)  # (E,) experts this token reached
            unused += int((~used).sum()) * p[0].numel()
    return sum(p.numel() for p in model.parameters()) - unused


# dbrx stores experts as (E*I, H); deepseek_v4's hash layers route by a token-id table that is all zeros untrained
@pytest.mark.parametrize("model_type", [mt for mt in DEFAULT if mt not in ("dbrx", "deepseek_v4")])
def test_active_params_equal_what_one_token_touches(model_type):
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager",
                                               experts_implementation="eager")
    measured = _active_by_gradient(model)
    assert measured < sum(p.numel() for p in model.parameters())  # the token skipped some routed experts
    assert C.count_params(model.config).active == measured


def test_deepseek_v4_active_params_equal_what_one_token_touches_with_a_filled_hash_table():
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config("deepseek_v4"), attn_implementation="eager",
                                               experts_implementation="eager")
    for layer in model.model.layers:
        if layer.mlp.is_hash:  # token t -> k distinct experts, as a trained tid2eid table has
            table = layer.mlp.gate.tid2eid
            rows, k = table.shape
            table.copy_((torch.arange(rows)[:, None] + torch.arange(k)) % model.config.n_routed_experts)
    measured = _active_by_gradient(model)
    assert measured < sum(p.numel() for p in model.parameters())
    assert C.count_params(model.config).active == measured


def test_deepseek_v4_decode_past_the_window_multiplies_the_kept_window_and_the_compressed_entries():
    # 2 x 70 tokens through a 16-token window: the sliding cache keeps 15, the compressors emitted 70 // rate entries
    config, _, _, _ = _measured("deepseek_v4", True)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        cache = cache_of(model(torch.randint(3, 100, (2, 70), generator=g), use_cache=True))
        assert all(layer.keys.shape[2] == 15 for layer in cache.layers)
        with FlopCounterMode(display=False) as fc:
            model(torch.randint(3, 100, (2, 1), generator=g), **{CACHE_KW: cache}, use_cache=True)
    assert C.forward_flops(config, batch=2, seq_len=1, past=70).total == fc.get_total_flops()


FIRST = ["mixtral", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss", "llama4_text"]


@functools.lru_cache(maxsize=None)
def _decode_step(model_type: str):
    """(config, FlopCounterMode total of one 2 x 1-token step after a 2 x 12-token prompt filled the cache)."""
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        cache = cache_of(model(torch.randint(3, 100, (2, 12), generator=g), use_cache=True))
        with FlopCounterMode(display=False) as fc:
            model(torch.randint(3, 100, (2, 1), generator=g), **{CACHE_KW: cache}, use_cache=True)
    return model.config, fc.get_total_flops()


@pytest.mark.parametrize("model_type", FIRST + DEFAULT)
def test_decode_step_flops_equal_flop_counter_mode_counting_what_transformers_computes(model_type):
    config, counted = _decode_step(model_type)
    assert C.forward_flops(config, batch=2, seq_len=1, past=12, as_transformers=True).total == counted


@pytest.mark.parametrize("model_type", ["deepseek_v3", "deepseek_v2", "glm4_moe_lite"])
def test_mla_decode_re_expands_every_cached_latent_in_transformers_only(model_type):
    config, counted = _decode_step(model_type)
    s = C.model_shape(config)
    q_rank, kv_rank, nope, rope, v = s.mla
    re_expansion = 2 * kv_rank * s.heads * (nope + v) * 2 * 12 * s.layers  # kv_b_proj over the 2 x 12 cached latents
    assert C.forward_flops(config, batch=2, seq_len=1, past=12).total == counted - re_expansion


def test_llama4_transformers_experts_run_every_expert_on_every_token():
    config, counted = _decode_step("llama4_text")
    usual = C.forward_flops(config, batch=2, seq_len=1, past=12)
    s = C.model_shape(config)
    extra = 2 * (s.num_experts - s.top_k) * 3 * s.hidden * s.expert_intermediate * 2 * s.num_moe_layers
    assert usual.total == counted - extra


def test_llama4_prefill_flops_equal_flop_counter_mode_counting_what_transformers_computes():
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config("llama4_text"), attn_implementation="eager",
                                               experts_implementation="eager").eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randint(3, 100, (2, 12)))
    assert C.forward_flops(model.config, batch=2, seq_len=12, as_transformers=True).total == fc.get_total_flops()


def test_every_traced_model_type_has_a_shape_reader():
    assert set(FIRST + DEFAULT + ["llama4", "qwen3_5_moe", "dots3_note", "gemma4", "qwen4_exp"]) \
        <= set(C.SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", ["jamba", "qwen3_next", "lfm2_moe", "nemotron_h", "mimo_v2_flash", "laguna",
                                        "mixtral", "granitemoehybrid", "gemma4_text", "inkling_text", "inkling2_text"])
def test_kv_bytes_per_token_equal_what_the_cache_stores_per_token(model_type):
    config, cache = _cache_after(tiny_config(model_type), 10)  # 10 tokens: inside every window
    assert C.kv_bytes_per_token(config, "fp32") == _cached_bytes(cache) / 10


def test_the_capability_matrix_says_yes_only_where_params_and_flops_are_exact():
    from moelab.arch.capabilities import accounting_check

    assert accounting_check("lfm2_moe") == (True, True, True, [])
    params, flops, flops_as_transformers, notes = accounting_check("llama4_text")  # every expert on every token
    assert (params, flops, flops_as_transformers) == (True, False, True) and "as_transformers=True" in notes[0]


# full-size default configs whose model does not build from the defaults (transformers, not moelab): dots1 (empty()
# with a None size), hunyuan_v1_moe (head_dim None), lfm2_moe (layer_types None), dbrx (attn_config has no
# rope_theta). dots3_note_text's full-size config sets heads and MLA ranks per layer (config.per_layer_config).
FULL_SIZE = sorted(set(FIRST + DEFAULT + ["gemma4", "qwen4_exp"]) - {"dots1", "hunyuan_v1_moe", "lfm2_moe", "dbrx"})


@pytest.mark.parametrize("model_type", FULL_SIZE)
def test_count_params_is_exact_on_the_full_size_default_config(model_type):
    config = T.AutoConfig.for_model(model_type)
    if model_type == "deepseek_v2":
        config.num_experts_per_tok = 6  # its default is None (DeepSeek-V2 routes 6)
    if model_type.startswith("qwen4_exp"):  # its QSA indexer sizes default to None (the model does not build)
        for k, v in dict(indexer_n_heads=16, indexer_kv_heads=1, indexer_head_dim=128, indexer_budget=2048,
                         indexer_compress_ratio=4).items():
            setattr(config.get_text_config(), k, v)
    with torch.device("meta"):  # shapes only: a 671B model in no memory
        model = T.AutoModelForCausalLM.from_config(config)
    assert C.count_params(model.config).total == sum(p.numel() for p in model.parameters())


def test_jamba_default_config_is_52B_total_12B_active_as_published():
    # Jamba v0.1 (arXiv:2403.19887, Table 1): 52B available, 12B active; the default JambaConfig is that model
    p = C.count_params(T.AutoConfig.for_model("jamba"))
    assert abs(p.total / 52e9 - 1) < 0.02 and abs(p.active / 12e9 - 1) < 0.02


def test_a_new_family_config_missing_a_field_names_the_field():
    from types import SimpleNamespace

    full = tiny_config("glm4_moe").to_dict()
    cfg = SimpleNamespace(**{k: v for k, v in full.items() if k != "moe_intermediate_size"})
    with pytest.raises(ValueError, match="has no 'moe_intermediate_size'"):
        C.count_params(cfg)


def test_every_traced_model_type_without_a_shape_reader_says_why():
    from moelab.arch.capabilities import NO_ACCOUNTING, adapter_model_types

    assert set(adapter_model_types()) - set(C.SUPPORTED_MODEL_TYPES) == set(NO_ACCOUNTING)


def test_gemma4_global_head_dim_kv_sharing_and_k_eq_v_are_exact_in_params_flops_and_kv_bytes():
    # per_layer_config is derived at construction: full-attention layers get global_head_dim and
    # num_global_key_value_heads; the last two layers reuse the K/V of layers 0 and 1 (no k/v projections, no cache)
    cfg = T.AutoConfig.for_model(
        "gemma4_text", vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
        enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=32, vocab_size_per_layer_input=128,
        hidden_size_per_layer_input=16, layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=64,
        num_kv_shared_layers=2, use_double_wide_mlp=True)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    mixers = C.model_shape(model.config).layer_mixers
    assert [(m.head_dim, m.kv_heads, m.kv_proj) for m in mixers] == [(16, 2, 2), (32, 1, 1), (16, 2, 0), (32, 1, 0)]
    assert C.count_params(model.config).total == sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    with FlopCounterMode(display=False) as prefill, torch.no_grad():
        cache = cache_of(model(torch.randint(3, 100, (2, 12), generator=g), use_cache=True))
    with FlopCounterMode(display=False) as decode, torch.no_grad():
        model(torch.randint(3, 100, (2, 1), generator=g), **{CACHE_KW: cache}, use_cache=True)
    assert C.forward_flops(model.config, batch=2, seq_len=12).total == prefill.get_total_flops()
    assert C.forward_flops(model.config, batch=2, seq_len=1, past=12).total == decode.get_total_flops()
    stored = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers
                 if getattr(layer, "keys", None) is not None)
    assert C.kv_bytes_per_token(model.config, "fp32") == stored / 13 / 2 * 4


@pytest.mark.parametrize("past,seq_len,block", [(0, 12, 4), (12, 1, 4), (5, 70, 3), (0, 3, 4), (7, 9, 1)])
def test_qsa_indexer_block_count_equals_brute_force(past, seq_len, block):
    from moelab.compute.flops import _blocks_sum

    assert _blocks_sum(seq_len, past, block) == sum((past + i + 1) // block for i in range(seq_len))


@pytest.mark.parametrize("model_type", ["gemma4_text", "inkling_text", "inkling2_text", "mimo_v2_flash", "cohere2_moe"])
def test_decode_past_the_window_meets_the_window_minus_one_cached_keys_plus_the_new_one(model_type):
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    windows = [m.window for m in C.model_shape(model.config).layer_mixers if m.window]
    assert windows and max(windows) < 70  # the 70-token prompt runs past every sliding window
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        cache = cache_of(model(torch.randint(3, 100, (2, 70), generator=g), use_cache=True))
        with FlopCounterMode(display=False) as fc:
            model(torch.randint(3, 100, (2, 1), generator=g), **{CACHE_KW: cache}, use_cache=True)
    assert C.forward_flops(model.config, batch=2, seq_len=1, past=70).total == fc.get_total_flops()


# every family whose tiny config has a windowed layer (a sliding window, or llama4's chunks), and mixtral with one set;
# each windowed layer caches the last window - 1 tokens (transformers' DynamicSlidingWindowLayer)
WINDOWED = {mt: dict(sliding_window=16) for mt in ["gpt_oss", "mimo_v2_flash", "granitemoe_swa", "afmoe", "beam",
                                                    "cohere2_moe", "exaone_moe", "flint", "kolibri1", "lara_mini",
                                                    "dots3_note_text", "deepseek_v4", "mixtral"]}
WINDOWED["llama4_text"] = dict(attention_chunk_size=16)
WINDOWED["phimoe"] = dict(sliding_window=16)
WINDOWED["qwen2_moe"] = dict(use_sliding_window=True, sliding_window=16,  # sliding where layer_types says
                             layer_types=["sliding_attention", "full_attention"] * 2)
WINDOWED.update({mt: dict(sliding_window=16) for mt in ("ergo", "kolibri1_1") if mt in T.CONFIG_MAPPING})  # 5.25


@functools.lru_cache(maxsize=None)
def _steps_past_the_window(model_type: str):
    """(config, FlopCounterMode totals of: a 2 x 40-token prefill through a 16-token window, a 2 x 1-token decode
    step on that cache, then a 2 x 3-token step on the 41-token cache)."""
    cfg = tiny_config(model_type)
    for k, v in WINDOWED[model_type].items():
        setattr(cfg.get_text_config(), k, v)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    counted = []
    cache = None
    with torch.no_grad():
        for S in (40, 1, 3):
            with FlopCounterMode(display=False) as fc:
                out = model(torch.randint(3, 100, (2, S), generator=g), cache=cache, use_cache=True)
            cache = next(v for v in out.values() if isinstance(v, T.Cache))
            counted.append(fc.get_total_flops())
    return model.config, counted


@pytest.mark.parametrize("model_type", list(WINDOWED))
def test_steps_past_the_sliding_window_multiply_only_the_kept_window(model_type):
    config, (prefill, decode, three) = _steps_past_the_window(model_type)
    assert any(m.window == 16 for m in C.model_shape(config).layer_mixers)
    f = functools.partial(C.forward_flops, config, batch=2, as_transformers=True)
    assert f(seq_len=40).total == prefill  # a prefill multiplies the full masked 40 x 40 scores
    assert f(seq_len=1, past=40).total == decode  # 15 kept + 1 new keys on every windowed layer
    if all(m.kind == "attention" for m in C.model_shape(config).layer_mixers):  # a hybrid's 3-token step on a
        assert f(seq_len=3, past=41).total == three  # cache runs its chunked scan, modelled for decode only


def _cached_bytes(cache) -> int:
    """Bytes of the per-token tensors a transformers cache holds, read off its layers' attributes (keys, values, a DSA
    indexer's keys, deepseek_v4's compressed entries; one tensor under two names, deepseek_v4's K = V, once), less
    the fixed-size per-sequence states (conv / recurrent states, compressor buffers and overlaps)."""
    seen = {}
    for layer in cache.layers:
        for name, value in vars(layer).items():
            if any(w in name for w in ("conv", "recurrent", "buffer", "overlap", "position")):
                continue
            for t in value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]:
                if isinstance(t, torch.Tensor) and t.dim() >= 3:
                    seen[t.data_ptr(), t.shape] = t.numel() * t.element_size()
    return sum(seen.values())


def _cache_after(config, tokens: int):
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        out = model(torch.randint(3, 100, (1, tokens), generator=torch.Generator().manual_seed(1)), use_cache=True)
    return model.config, next(v for v in out.values() if isinstance(v, T.Cache))  # `past_key_values` before 5.24


def _config(model_type: str, fields: dict):
    cfg = tiny_config(model_type)
    for k, v in fields.items():
        setattr(cfg.get_text_config(), k, v)
    return cfg


KV_CASES = ([(mt, {}, 70) for mt in FIRST + DEFAULT] + [(mt, VARIANTS[mt], 70) for mt in VARIANTS]
            + [(mt, WINDOWED[mt], 40) for mt in WINDOWED])


@pytest.mark.parametrize("model_type,fields,tokens", KV_CASES,
                         ids=[f"{m}-{'-'.join(f) or 'default'}-{n}" for m, f, n in KV_CASES])
def test_kv_cache_bytes_equal_the_bytes_the_transformers_cache_holds(model_type, fields, tokens):
    # MLA families cache the latent (kv_lora_rank + qk_rope_head_dim), not per-head K and V; windows keep window - 1
    config, cache = _cache_after(_config(model_type, fields), tokens)
    assert C.kv_cache_bytes(config, batch=1, context=tokens, kv_dtype="fp32") == _cached_bytes(cache)


MLA = ["deepseek_v2", "deepseek_v3", "deepseek_v32", "glm4_moe_lite", "glm_moe_dsa", "sarvam_mla", "axk1", "axk2",
       "dots3_note_text", "kimi_linear", "bailing_hybrid"]


@pytest.mark.parametrize("model_type", MLA)
def test_mla_kv_bytes_per_token_are_the_latent_plus_rope_key_plus_indexer_key(model_type):
    config, cache = _cache_after(tiny_config(model_type), 10)
    s = C.model_shape(config)
    _, kv_rank, _, rope, _ = s.mla
    attention = [m for m in s.layer_mixers if m.kind == "attention"]
    closed_form = sum(kv_rank + rope + m.index_dim for m in attention) * 4  # index_dim 0 without an indexer
    assert C.kv_bytes_per_token(config, "fp32") == closed_form == _cached_bytes(cache) / 10


def test_kolibri1_1_flops_are_exact_inside_the_indexer_budget_and_miss_only_its_scoring_matmuls_past_it():
    """Kolibri 1.1's weightless indexers score keys (index_num_heads query heads against every key) only for queries
    that see more than index_topk + local + sink keys, and score key blocks only past index_pool_size: forward_flops
    leaves that out, so past the budget FlopCounterMode counts exactly those matmuls more (closed form)."""
    if "kolibri1_1" not in T.CONFIG_MAPPING:
        pytest.skip("kolibri1_1 is not in this transformers version")
    cfg = _config("kolibri1_1", dict(index_topk=8, index_num_local_tokens=4, index_num_sink_tokens=2,
                                     index_pool_size=32, index_compression=4))
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager",
                                               experts_implementation="eager").eval().requires_grad_(False)
    c, B = model.config, 2
    budget = c.index_topk + c.index_num_local_tokens + c.index_num_sink_tokens
    for S in (budget, 70):   # inside the budget: exact; past it (and past the pool): the indexers' matmuls
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.randint(3, 100, (B, S), generator=torch.Generator().manual_seed(1)))
        # query i sees i + 1 keys and is scored against all S keys (S // compression blocks for the pool)
        long_rows, pool_rows = max(0, S - budget), max(0, S - c.index_pool_size)
        indexer = sum(2 * B * c.index_num_heads * c.head_dim
                      * (long_rows * S + (i in c.index_layers) * pool_rows * (S // c.index_compression))
                      for i, t in enumerate(c.layer_types) if t == "indexed_attention")
        assert (S > budget) == (indexer > 0)
        assert fc.get_total_flops() - C.forward_flops(c, batch=B, seq_len=S).total == indexer
