"""Tiny random MoE models built from configs, offline (no weights are downloaded)."""

import pytest
import torch
from transformers import (
    MistralConfig, MistralForCausalLM, MixtralConfig, MixtralForCausalLM, OlmoeConfig, OlmoeForCausalLM,
    PhimoeConfig, PhimoeForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM,
)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def tiny_mixtral(**kw):
    cfg = MixtralConfig(**{**COMMON, "intermediate_size": 48, "num_local_experts": 8, "num_experts_per_tok": 2, **kw})
    torch.manual_seed(0)
    return MixtralForCausalLM(cfg).eval()


BUILDERS = {
    "mixtral": tiny_mixtral,
    "qwen2_moe": lambda: Qwen2MoeForCausalLM(Qwen2MoeConfig(
        **COMMON, intermediate_size=48, moe_intermediate_size=24, shared_expert_intermediate_size=32,
        num_experts=6, num_experts_per_tok=2, decoder_sparse_step=1, norm_topk_prob=False)).eval(),
    "qwen3_moe": lambda: Qwen3MoeForCausalLM(Qwen3MoeConfig(
        **COMMON, intermediate_size=48, moe_intermediate_size=24, num_experts=6, num_experts_per_tok=2,
        norm_topk_prob=True, head_dim=8)).eval(),
    "olmoe": lambda: OlmoeForCausalLM(OlmoeConfig(
        **COMMON, intermediate_size=24, num_experts=8, num_experts_per_tok=2)).eval(),
    "phimoe": lambda: PhimoeForCausalLM(PhimoeConfig(
        **COMMON, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)).eval(),
}


def tiny_dense():
    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(**COMMON, intermediate_size=48)).eval()


def hook_state(model):
    """Every hook registered anywhere in the model, by module path."""
    return {
        name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
        for name, m in model.named_modules()
    }


@pytest.fixture
def mixtral():
    return tiny_mixtral()


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(3, VOCAB, (2, 9))


def _cache_keyword():
    import inspect

    params = inspect.signature(MixtralForCausalLM.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


CACHE_KW = _cache_keyword()   # transformers >= 5.24 calls it `cache`; the tests feed whichever this version reads


def cache_of(out):
    """The cache an output carries, whatever the field is called in this transformers version."""
    return next(v for v in out.values() if hasattr(v, "get_seq_length"))
