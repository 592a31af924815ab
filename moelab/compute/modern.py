"""Full-size modern MoE configs as code (no hub) and the "modern MoEs" table for notebook 05.

    >>> from moelab.compute import count_params
    >>> p = count_params(deepseek_v3_config())
    >>> round(p.total / 1e9), round(p.active / 1e9, 1)       # published: 671B / 37B
    (671, 37.6)

Each config is the model's published config.json, written as keyword arguments of
its transformers config class; `PUBLISHED` holds the total / active counts the
model cards state, which `modern_moes()` compares against (tests hold them within 2%).
"""

from __future__ import annotations

from .memory import dtype_bytes
from .params import count_params
from .roofline import weight_bytes_read


def deepseek_v3_config(**overrides):
    """DeepSeek-V3 (671B / 37B; the multi-token-prediction module is not counted). arXiv:2412.19437."""
    from transformers import DeepseekV3Config

    kw = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
              num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1,
              n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
              qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4,
              num_experts_per_tok=8, first_k_dense_replace=3, norm_topk_prob=True, tie_word_embeddings=False,
              max_position_embeddings=163840)
    kw.update(overrides)
    return DeepseekV3Config(**kw)


def gpt_oss_120b_config(**overrides):
    """GPT-OSS-120B (~117B / 5.1B): 128 experts, top-4, biased router and experts, attention sinks."""
    from transformers import GptOssConfig

    kw = dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
              num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_local_experts=128,
              num_experts_per_tok=4, sliding_window=128, tie_word_embeddings=False, max_position_embeddings=131072)
    kw.update(overrides)
    return GptOssConfig(**kw)


def llama4_scout_config(**overrides):
    """Llama-4-Scout-17B-16E, text model (109B / 17B published, including the ~1B vision encoder)."""
    from transformers import Llama4TextConfig

    kw = dict(vocab_size=202048, hidden_size=5120, intermediate_size=8192, intermediate_size_mlp=16384,
              num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8, head_dim=128,
              num_local_experts=16, num_experts_per_tok=1, interleave_moe_layer_step=1, tie_word_embeddings=False)
    kw.update(overrides)
    return Llama4TextConfig(**kw)


def qwen3_30b_a3b_config(**overrides):
    """Qwen3-30B-A3B (30.5B / 3.3B): 128 fine-grained experts, top-8, renormalised."""
    from transformers import Qwen3MoeConfig

    kw = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
              num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
              num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
              tie_word_embeddings=False, max_position_embeddings=40960)
    kw.update(overrides)
    return Qwen3MoeConfig(**kw)


# name -> (config function, published total, published active, whether "active" counts the embedding table)
# OpenAI's GPT-OSS card counts active parameters without the input embedding (5.13B); the others include it.
PUBLISHED = {
    "DeepSeek-V3": (deepseek_v3_config, 671e9, 37e9, True),
    "GPT-OSS-120B": (gpt_oss_120b_config, 116.8e9, 5.13e9, False),
    "Llama-4-Scout": (llama4_scout_config, 109e9, 17e9, True),
    "Qwen3-30B-A3B": (qwen3_30b_a3b_config, 30.5e9, 3.3e9, True),
}


def published_active(name: str, p) -> int:
    """`p.active` counted the way the model's publisher counts it (see `PUBLISHED`)."""
    return p.active if PUBLISHED[name][3] else p.active - p.embeddings.active


def modern_moes(dtype="fp16", batches=(1, 32)):
    """The modern-MoE table: total, active, active share, fp16/int4 weight memory, decode bytes per token.

        >>> df = modern_moes()                                    # doctest: +SKIP
        >>> list(df.columns)[:4]                                  # doctest: +SKIP
        ['total_B', 'active_B', 'active_share', 'published_total_B']

    Decode bytes per token = weight bytes one decode step reads (each distinct expert once,
    uniform routing) divided by the batch size, at `dtype`.
    """
    import pandas as pd

    rows = {}
    for name, (make, pub_total, pub_active, _) in PUBLISHED.items():
        cfg = make()
        p = count_params(cfg)
        row = {"total_B": p.total / 1e9, "active_B": p.active / 1e9, "active_share": p.active / p.total,
               "published_total_B": pub_total / 1e9, "published_active_B": pub_active / 1e9,
               "active_as_published_B": published_active(name, p) / 1e9,
               "fp16_GB": p.total * dtype_bytes("fp16") / 1e9, "int4_GB": p.total * dtype_bytes("int4") / 1e9}
        for b in batches:
            row[f"decode_GB_per_token_b{b}"] = weight_bytes_read(cfg, b, dtype) / b / 1e9
        rows[name] = row
    return pd.DataFrame(rows).T
