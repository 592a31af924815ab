"""moelab.compute on the new families, read through the one registry (moelab.arch): exact parameter
counts against model.parameters(), FLOPs against FlopCounterMode, published full-size totals.
(Every other traced family: tests/test_compute_families.py.)"""

from types import SimpleNamespace

import pytest
import torch
import transformers as T
from torch.utils.flop_counter import FlopCounterMode

import moelab.compute as C
from moelab.arch.tiny import tiny_config

NEW = ["deepseek_v3", "gpt_oss", "llama4_text"]


def _model(mt):
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(tiny_config(mt), attn_implementation="eager",
                                              experts_implementation="eager").eval()


@pytest.mark.parametrize("model_type", NEW)
def test_count_params_equals_the_sum_of_model_parameters(model_type):
    model = _model(model_type)
    assert C.count_params(model.config).total == sum(p.numel() for p in model.parameters())


def test_deepseek_first_dense_layers_and_shared_experts_are_read_from_the_config():
    s = C.model_shape(tiny_config("deepseek_v3"))
    assert s.moe_layer == (False, True, True, True) and s.num_shared == 1 and s.mla is not None


@pytest.mark.parametrize("model_type", ["deepseek_v3", "gpt_oss"])
def test_prefill_flops_equal_flop_counter_mode(model_type):
    model = _model(model_type)
    ids = torch.randint(3, 100, (2, 12))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids)
    assert C.forward_flops(model.config, batch=2, seq_len=12, logits="all").total == fc.get_total_flops()


@pytest.mark.parametrize("name", list(C.PUBLISHED))
def test_full_size_configs_are_within_2_percent_of_published_total_and_active(name):
    make, total, active, _ = C.PUBLISHED[name]
    p = C.count_params(make())
    assert abs(p.total - total) / total < 0.02, p.total
    assert abs(C.published_active(name, p) - active) / active < 0.02, p.active


def test_modern_moes_table_has_memory_and_decode_bytes_per_token():
    df = C.modern_moes()
    assert set(df.index) == set(C.PUBLISHED)
    assert (df.int4_GB * 4 == df.fp16_GB).all()
    assert (df.decode_GB_per_token_b32 < df.decode_GB_per_token_b1).all()   # a batch shares the weights it reads


def test_count_params_on_a_config_missing_a_field_names_the_field():
    full = T.MixtralConfig(num_hidden_layers=1).to_dict()
    cfg = SimpleNamespace(**{k: v for k, v in full.items() if k != "num_local_experts"})   # e.g. a trimmed config.json
    with pytest.raises(ValueError, match="has no 'num_local_experts'"):
        C.count_params(cfg)
