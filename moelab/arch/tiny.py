"""Tiny random configs of any transformers model type, built offline, for the registry sweep.

    >>> from moelab.arch.tiny import tiny_config
    >>> c = tiny_config("deepseek_v3")
    >>> (c.hidden_size, c.n_routed_experts, c.num_hidden_layers)
    (64, 8, 4)

`tiny_config(model_type)` starts from the config class's defaults and shrinks every
size field it knows (`SIZES`), then applies the per-type `OVERRIDES` (hybrid layer
patterns, groups, fields stored under other names; a multimodal wrapper also gets its
text model type's) and cuts per-layer lists (`layer_types`, `mlp_layer_types`) to the
shrunk depth. Configs that derive per-layer sub-configs in their constructor (`INIT`)
are built from the shrunk sizes instead. `is_moe_config` says whether a config declares
routed experts, or a switch that turns an optional MoE block on (`MOE_SWITCHES`: Gemma 4's
`enable_moe_block`, off by default), so the sweep never passes over such a type silently.
"""

from __future__ import annotations

MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
MOE_SWITCHES = ("enable_moe_block",)   # bool config fields that add an MoE block, whatever their default

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
    "dbrx": dict(ffn_config={"hidden_size": 64, "ffn_hidden_size": 64, "moe_num_experts": 8, "moe_top_k": 2},
                 attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0}),
    "hunyuan_v1_moe": dict(num_shared_expert=1, moe_topk=2, num_experts=8, head_dim=16),
    # hybrid linear-attention models need one softmax-attention layer (the cache reads its length there);
    # their MoE fields are stored under other names (num_experts_per_token, num_expert_group)
    "bailing_hybrid": dict(layer_types=["linear_attention", "full_attention"] * 2, num_experts_per_token=2,
                           num_expert_group=2, topk_group=1, linear_head_dim=16, qk_head_dim=16),
    "kimi_linear": dict(layer_types=["linear_attention", "full_attention"] * 2, num_experts_per_token=2,
                        num_expert_group=1, linear_head_dim=16, qk_head_dim=16),
    "deepseek_v4": dict(mlp_layer_types=["hash_moe", "moe", "moe", "moe"]),
    "inkling_text": dict(swa_head_dim=16, sliding_window_size=32, rel_extent=32),
    "inkling2_text": dict(swa_head_dim=16, sliding_window_size=32, rel_extent=32, unpadded_vocab_size=128),
    "qwen4_exp_text": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16, indexer_budget=8,
                           indexer_compress_ratio=4, hc_lowrank=16),
    "ergo": dict(first_dense_intermediate_size=64),   # transformers 5.25: the dense MLP of its first layer
}


# per text model type: configs whose __post_init__ derives per-layer sub-configs (per_layer_config) from
# constructor arguments, so they are built from the shrunk sizes plus these arguments instead of shrunk afterwards
INIT: dict[str, dict] = {
    "dots3_note_text": dict(swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_q_lora_rank=16,
                            swa_kv_lora_rank=16, swa_head_dim=16, swa_qk_nope_head_dim=8, swa_v_head_dim=16,
                            index_head_dim=16, index_n_heads=2, index_topk=8, shared_experts_intermediate_size=32,
                            num_key_value_heads=4),
    # Gemma 4: the MoE block is off by default (enable_moe_block); its full-attention layers take their head_dim
    # from global_head_dim, and the per-layer input embeddings (PLE) are a vocab x (layers * width) table
    "gemma4_text": dict(enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=32,
                        global_head_dim=16, vocab_size_per_layer_input=128, hidden_size_per_layer_input=16,
                        layer_types=["sliding_attention"] * 3 + ["full_attention"]),
    # Kolibri 1.1 (transformers 5.25): index_layers / kv_source_layers / mlp_only_layers are derived from layer_types
    # at construction: layer 1 is an indexer whose keys and values layer 3 reuses (KV sharing), layers 0-1 dense.
    # index_num_heads is at most the query heads of key head 0 (4 / 2)
    "kolibri1_1": dict(layer_types=["sliding_attention", "indexed_attention"] * 2, index_num_heads=2,
                       mlp_only_intermediate_size=64),
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
    sizes = {name: SIZES[name] for name, value in text.to_dict().items()
             if name in SIZES and isinstance(value, int) and not isinstance(value, bool)}
    if text.model_type in INIT:
        text = type(text)(**{**sizes, **INIT[text.model_type]}, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        if cfg.model_type == text.model_type:
            return text
        key = text.base_config_key or next(k for k, c in cfg.sub_configs.items() if isinstance(text, c))
        setattr(cfg, key, text)  # a multimodal wrapper: its text sub-config
        return cfg
    for name, value in sizes.items():
        _set(text, name, value)
    overrides = {**OVERRIDES.get(text.model_type, {}), **OVERRIDES.get(model_type, {})}  # a wrapper: its text's too
    for name, value in overrides.items():
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
    mlp = getattr(text, "mlp_layer_types", None)  # still at the default depth: keep layer 0's kind, route the rest
    if isinstance(mlp, list) and len(mlp) != text.num_hidden_layers and "sparse" in mlp:
        _set(text, "mlp_layer_types", mlp[:1] + ["sparse"] * (text.num_hidden_layers - 1))
    _set(text, "pad_token_id", 0)
    _set(text, "bos_token_id", 1)
    _set(text, "eos_token_id", 2)
    return cfg


def is_moe_config(cfg) -> bool:
    """Does the (text) config declare routed experts (more than one expert on some layer), or an MoE switch?"""
    c = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if any(isinstance(getattr(c, name, None), bool) for name in MOE_SWITCHES):
        return True
    for name in MOE_FIELDS:
        v = getattr(c, name, None)
        if isinstance(v, (list, tuple)):
            v = max(v, default=0)
        if isinstance(v, int) and not isinstance(v, bool) and v > 1:
            return True
    ffn = getattr(c, "ffn_config", None)
    return bool(getattr(ffn, "moe_num_experts", 0) if ffn is not None and not isinstance(ffn, dict)
                else (ffn or {}).get("moe_num_experts", 0))
