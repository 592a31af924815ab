"""Tiny random configs of any transformers model type, built offline, for the registry sweep.

    >>> from moelab.arch.tiny import tiny_config
    >>> c = tiny_config("deepseek_v3")
    >>> (c.hidden_size, c.n_routed_experts, c.num_hidden_layers)
    (64, 8, 4)

`tiny_config(model_type)` starts from the config class's defaults and shrinks every
size field it knows (`SIZES`), then applies the per-type `OVERRIDES` (hybrid layer
patterns, groups); `is_moe_config` says whether a config declares routed experts.
"""

from __future__ import annotations

MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")

SIZES = dict(
    vocab_size=128, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32,
    shared_intermediate_size=32, num_experts=8, num_local_experts=8, n_routed_experts=8, moe_num_experts=8,
    num_experts_per_tok=2, moe_k=2, moe_topk=2, moe_top_k=2, n_group=2, topk_group=1, q_lora_rank=16,
    kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, first_k_dense_replace=1,
    max_position_embeddings=256, ffn_hidden_size=64, moe_intermediate_size_shared=32, d_model=64, n_layers=4,
    n_heads=4, sliding_window=64, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
    linear_value_head_dim=16, mamba_d_state=8, mamba_expand=2, mamba_n_heads=8, mamba_d_head=16,
    mamba_d_conv=4, mamba_dt_rank=8, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
    expert_layer_offset=1, num_shared_expert=1, n_shared_experts=1, moe_num_shared_experts=1,
)

# per model type: fields set after shrinking (hybrid layer patterns, MoE on at least one layer)
OVERRIDES: dict[str, dict] = {
    "qwen2_moe": dict(decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_next": dict(decoder_sparse_step=1, mlp_only_layers=[], layer_types=["linear_attention", "full_attention"] * 2),
    "llama4": dict(interleave_moe_layer_step=1, intermediate_size_mlp=64, no_rope_layers=[1, 1, 1, 0],
                   attention_chunk_size=64),
    "jamba": dict(num_experts=8, expert_layer_period=2, expert_layer_offset=1),
    "granitemoehybrid": dict(layer_types=["linear_attention", "full_attention"] * 2, mamba_n_groups=1,
                             mamba_chunk_size=16),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"] * 2, num_dense_layers=1),
    "deepseek_v2": dict(num_experts_per_tok=2),
    "dots1": dict(n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2),
    "gpt_oss": dict(layer_types=["sliding_attention", "full_attention"] * 2),
    "dbrx": dict(ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 8, "moe_top_k": 2},
                 attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0}),
    "hunyuan_v1_moe": dict(num_shared_expert=1, moe_topk=2, num_experts=8, head_dim=16),
}


def _set(cfg, name, value) -> None:
    try:
        setattr(cfg, name, value)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - read-only properties
        pass


def tiny_config(model_type: str):
    """The config class's defaults, shrunk to a few thousand parameters per layer (see module docstring)."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type)
    text = cfg.get_text_config()
    for name, value in cfg.get_text_config().to_dict().items():
        if name in SIZES and isinstance(value, int) and not isinstance(value, bool):
            _set(text, name, SIZES[name])
    for name, value in OVERRIDES.get(model_type, {}).items():
        sub = getattr(text, name, None)
        if isinstance(value, dict) and sub is not None and not isinstance(sub, dict):  # a sub-config object
            for k, v in value.items():
                _set(sub, k, v)
        else:
            _set(text, name, value)
    if getattr(text, "kv_lora_rank", None):  # MLA: the rotary part is the head_dim RoPE sees
        _set(text, "head_dim", text.qk_rope_head_dim)
        _set(text, "num_key_value_heads", text.num_attention_heads)
    layers = getattr(text, "layer_types", None)
    if isinstance(layers, list) and len(layers) != text.num_hidden_layers:
        _set(text, "layer_types", (layers * text.num_hidden_layers)[: text.num_hidden_layers])
    _set(text, "pad_token_id", 0)
    _set(text, "bos_token_id", 1)
    _set(text, "eos_token_id", 2)
    return cfg


def is_moe_config(cfg) -> bool:
    """Does the (text) config declare routed experts (more than one expert on some layer)?"""
    c = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for name in MOE_FIELDS:
        v = getattr(c, name, None)
        if isinstance(v, (list, tuple)):
            v = max(v, default=0)
        if isinstance(v, int) and not isinstance(v, bool) and v > 1:
            return True
    ffn = getattr(c, "ffn_config", None)
    return bool(getattr(ffn, "moe_num_experts", 0) if ffn is not None and not isinstance(ffn, dict)
                else (ffn or {}).get("moe_num_experts", 0))
