"""moelab.compute: parameter, FLOP, memory and serving-cost accounting, checked against
independent references (model.parameters(), FlopCounterMode, closed forms, Monte Carlo,
hand computations written out below)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers as T
from torch.utils.flop_counter import FlopCounterMode

from conftest import CACHE_KW, cache_of

import moelab.compute as C

TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100)

TINY_CONFIGS = {
    "mixtral": lambda: T.MixtralConfig(**TINY, num_local_experts=4, num_experts_per_tok=2),
    "mixtral_tied": lambda: T.MixtralConfig(**TINY, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True),
    "qwen2_moe": lambda: T.Qwen2MoeConfig(**TINY, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                          shared_expert_intermediate_size=24, decoder_sparse_step=2, mlp_only_layers=[2]),
    "qwen3_moe": lambda: T.Qwen3MoeConfig(**TINY, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                          mlp_only_layers=[0], attention_bias=True),
    "olmoe": lambda: T.OlmoeConfig(**TINY, num_experts=4, num_experts_per_tok=2, pad_token_id=0, eos_token_id=1),
    "phimoe": lambda: T.PhimoeConfig(**TINY, num_local_experts=4, num_experts_per_tok=2, attention_bias=True,
                                     lm_head_bias=True),
    "mistral": lambda: T.MistralConfig(**TINY),
    "llama": lambda: T.LlamaConfig(**TINY, attention_bias=True, mlp_bias=True, tie_word_embeddings=True),
}


def n_params(config) -> int:
    return sum(p.numel() for p in T.AutoModelForCausalLM.from_config(config).parameters())


# ---- parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_count_params_total_equals_sum_of_model_parameters(arch):
    cfg = TINY_CONFIGS[arch]()
    assert C.count_params(cfg).total == n_params(cfg)


def test_count_params_accepts_a_dict_with_model_type():
    d = dict(model_type="mixtral", **TINY, num_local_experts=4, num_experts_per_tok=2)
    assert C.count_params(d).total == C.count_params(TINY_CONFIGS["mixtral"]()).total


def test_unsupported_model_type_error_names_it():
    with pytest.raises(ValueError, match="'gpt2'"):
        C.count_params(T.GPT2Config())


def test_mixtral_8x7b_has_46_70B_total_and_12_88B_active():
    p = C.count_params(C.mixtral_8x7b_config())
    assert (round(p.total / 1e9, 2), round(p.active / 1e9, 2)) == (46.70, 12.88)


def test_mistral_7b_has_7_24B():
    assert round(C.count_params(C.mistral_7b_config()).total / 1e9, 2) == 7.24


def test_active_counts_k_of_E_routed_experts_and_everything_else_fully():
    p = C.count_params(TINY_CONFIGS["qwen2_moe"]())
    assert p.experts.active * 4 == p.experts.total * 2  # k/E = 2/4
    assert p.shared_experts.active == p.shared_experts.total > 0
    assert p.active == p.total - p.experts.total + p.experts.active


def test_tied_embeddings_are_counted_once():
    tied, untied = C.count_params(TINY_CONFIGS["mixtral_tied"]()), C.count_params(TINY_CONFIGS["mixtral"]())
    assert tied.head.total == 0
    assert untied.total - tied.total == 100 * 32


def test_qwen2_moe_sparse_step_and_mlp_only_layers_decide_which_layers_are_moe():
    # decoder_sparse_step=2 -> layers 1, 3, ... are MoE; mlp_only_layers=[2] forces layer 2 dense
    assert C.model_shape(TINY_CONFIGS["qwen2_moe"]()).moe_layer == (False, True, False)


# ---- FLOPs --------------------------------------------------------------------------------


def test_flops_per_token_matches_a_hand_computation():
    # H=32, 4 heads x 8, 2 KV heads, E=4 experts of width 48, top-2, V=100, 3 layers, decode with 10 cached tokens
    f = C.flops_per_token(TINY_CONFIGS["mixtral"](), context=10, phase="decode")
    proj = 2 * (32 * 32 + 32 * 16 + 32 * 16 + 32 * 32)  # q, k, v, o  = 6144
    qk = 2 * 4 * 8 * 11  # 4 heads x 8 dims x (10 cached + 1 new) keys = 704
    router = 2 * 32 * 4  # 256
    experts = 2 * 2 * 3 * 32 * 48  # 18432
    head = 2 * 32 * 100  # 6400
    assert f.attention_proj == 3 * proj
    assert f.attention_scores == f.attention_values == 3 * qk
    assert f.router == 3 * router and f.experts == 3 * experts and f.head == head
    assert f.total == 3 * (proj + 2 * qk + router + experts) + head  # 82112


def count_with_flop_counter(model, *args, **kw) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(*args, **kw)
    return fc.get_total_flops()


@pytest.fixture(scope="module")
def eager_mixtral():
    torch.manual_seed(0)
    cfg = TINY_CONFIGS["mixtral"]()
    m = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", experts_implementation="eager")
    return cfg, m.eval()


def test_prefill_flops_match_flop_counter_mode_within_2_percent(eager_mixtral):
    cfg, m = eager_mixtral
    measured = count_with_flop_counter(m, torch.randint(0, 100, (2, 12)))
    predicted = C.forward_flops(cfg, batch=2, seq_len=12, logits="all").total
    assert abs(predicted - measured) / measured < 0.02


def test_decode_flops_match_flop_counter_mode_within_2_percent(eager_mixtral):
    cfg, m = eager_mixtral
    with torch.no_grad():
        cache = cache_of(m(torch.randint(0, 100, (3, 20)), use_cache=True))
    measured = count_with_flop_counter(m, torch.randint(0, 100, (3, 1)), **{CACHE_KW: cache})
    predicted = C.forward_flops(cfg, batch=3, seq_len=1, past=20, logits="all").total
    assert abs(predicted - measured) / measured < 0.02


def test_causal_skip_counts_only_unmasked_keys():
    cfg = TINY_CONFIGS["mistral"]()
    dense = C.forward_flops(cfg, seq_len=8, causal_skip=False).attention_scores
    causal = C.forward_flops(cfg, seq_len=8, causal_skip=True).attention_scores
    assert causal / dense == pytest.approx((1 + 2 + 3 + 4 + 5 + 6 + 7 + 8) / 64)


def test_sliding_window_caps_attended_keys():
    cfg = T.MistralConfig(**TINY, sliding_window=16)
    far = C.flops_per_token(cfg, context=1000, phase="decode", causal_skip=True)
    near = C.flops_per_token(cfg, context=15, phase="decode", causal_skip=True)
    assert far.attention_scores == near.attention_scores  # both attend to 16 keys


def test_mixtral_router_is_under_a_ten_thousandth_of_the_compute_not_ten_percent():
    share = C.router_share(C.mixtral_8x7b_config(), context=4096, phase="decode")
    by_hand = (2 * 4096 * 8 * 32) / C.flops_per_token(C.mixtral_8x7b_config(), 4096, "decode").total
    assert share == pytest.approx(by_hand)
    assert share < 1e-4


# ---- memory -------------------------------------------------------------------------------


def test_mixtral_weights_are_93_4_GB_in_fp16_and_half_that_in_int8():
    cfg = C.mixtral_8x7b_config()
    assert round(C.weight_bytes(cfg, "fp16") / 1e9, 1) == 93.4
    assert C.weight_bytes(cfg, "int8") == C.weight_bytes(cfg, "fp16") / 2 == 2 * C.weight_bytes(cfg, "int4")


def test_kv_cache_is_gqa_aware():
    cfg = TINY_CONFIGS["mixtral"]()  # 3 layers, 2 KV heads of 8 dims (not 4 query heads)
    assert C.kv_bytes_per_token(cfg, "bf16") == 2 * 3 * 2 * 8 * 2
    assert C.kv_cache_bytes(cfg, batch=4, context=50, kv_dtype="fp32") == 4 * 50 * 2 * 3 * 2 * 8 * 4


def test_mixtral_fp16_does_not_fit_one_a100_but_int8_does():
    cfg = C.mixtral_8x7b_config()
    assert not C.fits(cfg, "A100-80GB-SXM", "fp16").fits
    assert C.fits(cfg, "A100-80GB-SXM", "fp16", num_gpus=2).fits
    assert C.fits(cfg, "A100-80GB-SXM", "int8", batch=8, context=4096).fits


def test_fits_max_batch_is_the_boundary():
    cfg = C.mixtral_8x7b_config()
    r = C.fits(cfg, "A100-80GB-SXM", "int8", batch=1, context=4096)
    assert C.fits(cfg, "A100-80GB-SXM", "int8", batch=r.max_batch, context=4096).fits
    assert not C.fits(cfg, "A100-80GB-SXM", "int8", batch=r.max_batch + 1, context=4096).fits


# ---- dense baselines ----------------------------------------------------------------------


def test_dense_equivalents_match_active_total_and_source():
    moe = C.mixtral_8x7b_config()
    p = C.count_params(moe)
    tol = 3 * 4096 * 32 / 2  # nearest integer MLP width
    assert abs(C.count_params(C.dense_equivalent(moe, "active")).total - p.active) <= tol
    assert abs(C.count_params(C.dense_equivalent(moe, "total")).total - p.total) <= tol
    assert C.count_params(C.dense_equivalent(moe, "source")).total == C.count_params(C.mistral_7b_config()).total


@pytest.mark.parametrize("match", C.MATCHES)
def test_dense_equivalent_instantiates_with_the_counted_parameters(match):
    d = C.dense_equivalent(TINY_CONFIGS["qwen2_moe"](), match)
    assert isinstance(d, T.MistralConfig)
    assert C.count_params(d).total == n_params(d)


def test_dense_equivalent_rejects_a_dense_model():
    with pytest.raises(ValueError, match="MoE"):
        C.dense_equivalent(TINY_CONFIGS["mistral"]())


# ---- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize("E,k,B", [(8, 2, 1), (8, 2, 4), (8, 2, 16), (64, 8, 8), (60, 4, 32)])
def test_distinct_experts_closed_form_matches_monte_carlo(E, k, B):
    mc = C.simulate_distinct_experts(E, k, B, samples=4000, seed=1)
    assert mc == pytest.approx(C.expected_distinct_experts(E, k, B), rel=0.02)


def uniform_routing(tokens, layers, E, k, seed=0):
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((tokens, layers, E)), axis=-1)[..., :k].astype(np.int16)


def test_distinct_experts_from_uniform_trace_matches_closed_form():
    ex = uniform_routing(5000, 2, 8, 2)
    got = C.distinct_experts_per_batch(ex, [1, 4, 8, 32], num_experts=8, samples=2000)
    for B, d in got.items():
        assert d == pytest.approx(C.expected_distinct_experts(8, 2, B), rel=0.03)


def test_collapsed_router_touches_exactly_k_experts():
    ex = np.zeros((300, 4, 2), dtype=np.uint8)
    ex[..., 1] = 1
    assert C.distinct_experts_per_batch(ex, [1, 8, 64], num_experts=8) == {1: 2.0, 8: 2.0, 64: 2.0}


def test_batches_draw_from_distinct_sequences():
    # sequence s always routes to experts {2s, 2s+1}: a batch of 4 distinct sequences touches exactly 8
    seq = np.repeat(np.arange(4), 50)
    ex = np.stack([2 * seq, 2 * seq + 1], -1)[:, None, :]
    assert C.distinct_experts_per_batch(ex, [4], num_experts=8, sequence=seq) == {4: 8.0}


def test_distinct_experts_from_trace_object_can_keep_decode_tokens_only():
    seq = np.repeat(np.arange(4), 10)
    step = np.tile(np.arange(10), 4)
    ex = np.where(step[:, None, None] == 0, 7, 0).repeat(2, -1).astype(np.int16)  # prefill -> expert 7
    ex[..., 1] = np.where(step == 0, 6, 1)[:, None]
    trace = SimpleNamespace(experts=ex, num_experts=8, top_k=2, num_layers=1, sequence=seq, step=step)
    assert C.distinct_experts_from_trace(trace, [4], decode_only=True) == {4: 2.0}


# ---- roofline -----------------------------------------------------------------------------


def test_decode_roofline_matches_a_hand_computation_for_mixtral_on_a100():
    # Mixtral 8x7B, fp16, batch 1, 1024 cached tokens, A100 (2039 GB/s), uniform routing (2 experts/layer):
    non_expert = 1_342_177_280 + 1_048_576 + 266_240 + 131_072_000  # attention + router + norms + lm_head
    emb_row = 4096
    experts = 32 * 2 * 3 * 4096 * 14336  # 32 layers x 2 experts x SwiGLU
    weight_bytes = 2 * (non_expert + emb_row + experts)  # 25,497,714,688
    kv = 1024 * 2 * 32 * 8 * 128 * 2  # 134,217,728
    seconds = (weight_bytes + kv) / 2039e9
    df = C.decode_roofline(C.mixtral_8x7b_config(), "A100-80GB-SXM", [1], context=1024, dtype="fp16",
                           price_per_hour=1.29)
    r = df.iloc[0]
    assert r.weight_bytes == weight_bytes and r.kv_bytes == kv
    assert r.bound == "memory"
    assert r.tokens_per_s == pytest.approx(1 / seconds)  # 79.6 tokens/s
    assert r.usd_per_million_tokens == pytest.approx(1.29 / 3600 * seconds * 1e6)


def test_roofline_is_compute_bound_when_peak_is_low_and_efficiency_scales_it():
    slow = C.Hardware("toy", 80, bandwidth_gbs=1e6, peak_tflops=1.0, source="test")
    cfg = C.mixtral_8x7b_config()
    df = C.decode_roofline(cfg, slow, [4], context=0, dtype="fp16", flops_efficiency=0.5)
    flops = C.forward_flops(cfg, batch=4, seq_len=1, past=0, logits="last").total
    assert df.bound[0] == "compute"
    assert df.tokens_per_s[0] == pytest.approx(4 / (flops / 0.5e12))


def test_measured_routing_changes_bytes_read():
    cfg = C.mixtral_8x7b_config()
    uniform = C.decode_roofline(cfg, "H100-SXM", [32], dtype="bf16")
    collapsed = C.decode_roofline(cfg, "H100-SXM", [32], dtype="bf16", experts_touched={32: 2.0})
    expert_bytes = 2 * 3 * 4096 * 14336 * 32  # one expert in every layer, bf16
    diff = uniform.weight_bytes[0] - collapsed.weight_bytes[0]
    assert diff == pytest.approx((C.expected_distinct_experts(8, 2, 32) - 2) * expert_bytes)


def test_roofline_is_an_upper_bound_on_the_published_a100_numbers():
    df = C.compare_published()
    assert list(df.reported_tokens_per_s) == [42, 95, 156, 201, 218]
    assert (df.reported_over_predicted < 1).all()
    assert not df.fits.any()  # FP16 Mixtral does not fit on one A100 80GB


def test_cost_per_million_tokens():
    assert C.cost_per_million_tokens(218, 1.29) == pytest.approx(1.29 / (218 * 3600) * 1e6)


def test_memory_claim_fp16_mixtral_on_one_a100_is_impossible_and_alternatives_are_computed():
    r = C.check_memory_claim(C.mixtral_8x7b_config(), "fp16", "A100-80GB-SXM", (87, 91))
    assert not r.possible and "IMPOSSIBLE" in r.verdict
    s = r.scenarios.set_index(["weights", "num_gpus", "offload", "reported_unit"])
    assert not s.loc[("fp16", 1, False, "GB")].consistent  # 93.4 GB of weights > 85.9 GB
    assert not s.loc[("int8", 1, False, "GB")].consistent  # 87 GB > the card, whatever the weights
    assert s.loc[("int8", 2, False, "GB")].consistent  # 46.7 GB weights + ~40 GB KV cache over 2 GPUs
    kv_tokens = (87e9 - C.weight_bytes(C.mixtral_8x7b_config(), "int8")) / C.kv_bytes_per_token(C.mixtral_8x7b_config(), "fp16")
    assert s.loc[("int8", 2, False, "GB")].implied_kv_tokens_low == pytest.approx(kv_tokens)


def test_memory_claim_that_fits_is_consistent_for_int8_on_one_gpu():
    r = C.check_memory_claim(C.mixtral_8x7b_config(), "int8", "A100-80GB-SXM", 60)
    s = r.scenarios.set_index(["weights", "num_gpus", "offload", "reported_unit"])
    assert r.possible and s.loc[("int8", 1, False, "GB")].consistent


# ---- hardware -----------------------------------------------------------------------------


def test_hardware_table_has_sourced_datasheet_numbers():
    assert (C.GPUS["A100-80GB-SXM"].bandwidth_gbs, C.GPUS["A100-80GB-SXM"].peak_tflops) == (2039, 312)
    assert (C.GPUS["H100-SXM"].bandwidth_gbs, C.GPUS["H200"].bandwidth_gbs) == (3350, 4800)
    assert all(hw.source for hw in C.GPUS.values())
    with pytest.raises(ValueError, match="'B300'"):
        C.get_hardware("B300")


def test_this_machine_reports_measured_positive_numbers():
    hw = C.this_machine(size_mb=4, n=64)
    assert hw.bandwidth_gbs > 0 and hw.peak_tflops > 0 and hw.source.startswith("measured")


def test_fits_max_context_is_the_boundary_with_windowed_layers():
    cfg = C.gpt_oss_120b_config()  # half the layers keep a 128-token window: the cache still grows, more slowly
    r = C.fits(cfg, "H200", "int4", batch=16, context=4096)
    assert C.fits(cfg, "H200", "int4", batch=16, context=r.max_context).fits
    assert not C.fits(cfg, "H200", "int4", batch=16, context=r.max_context + 1).fits
    per_token = C.kv_bytes_per_token(cfg, "fp16") * 16
    assert r.max_context > (r.capacity_gb - r.weights_gb) * 1e9 // per_token  # more than without the windows


def test_fits_any_context_once_every_layer_is_windowed():
    cfg = T.MixtralConfig(num_hidden_layers=2, sliding_window=4096)
    r = C.fits(cfg, "H200", "fp16", batch=1, context=100_000)
    assert r.fits and r.max_context == 2**31 - 1
    assert C.kv_cache_bytes(cfg, 1, 100_000) == C.kv_cache_bytes(cfg, 1, 4095) == 4095 * C.kv_bytes_per_token(cfg)
