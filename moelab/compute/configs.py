"""
Reference configs (built from published numbers, no download) and dense baselines of an MoE.

    mixtral_8x7b_config()   Mixtral-8x7B-v0.1 (arXiv:2401.04088; config.json of
                            mistralai/Mixtral-8x7B-v0.1): 32 layers, H=4096, I=14336, 32 heads,
                            8 KV heads, V=32000, 8 experts, top-2, untied, rope_theta 1e6.
    mistral_7b_config()     Mistral-7B-v0.1 (arXiv:2310.06825): same dims, one dense MLP,
                            rope_theta 1e4, sliding window 4096.

dense_equivalent(config, match=...) returns a `transformers.MistralConfig` with the MoE's
attention/embedding dims and a dense SwiGLU MLP whose width is chosen so that:
    match="active"  dense params == MoE active params per token (compute-matched)
    match="total"   dense params == MoE total params (memory-matched)
    match="source"  MLP width == one expert's width (the dense model Mixtral was grown from,
                    "sparse upcycling", arXiv:2212.05055); for Mixtral this is Mistral-7B-shaped
The width is the nearest integer, so "active"/"total" match to within 3*H*L/2 parameters.
"""

from __future__ import annotations

from .params import count_params
from .shape import as_config, model_shape


def mixtral_8x7b_config(**overrides):
    """Mixtral 8x7B as a `transformers.MixtralConfig` (keyword overrides win).

    >>> mixtral_8x7b_config(num_hidden_layers=2).num_local_experts
    8
    """
    from transformers import MixtralConfig

    kw = dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        sliding_window=None, num_local_experts=8, num_experts_per_tok=2, tie_word_embeddings=False,
    )
    kw.update(overrides)
    return MixtralConfig(**kw)


def mistral_7b_config(**overrides):
    """Mistral 7B (v0.1) as a `transformers.MistralConfig`.

    >>> mistral_7b_config().intermediate_size
    14336
    """
    from transformers import MistralConfig

    kw = dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 1e4},
        sliding_window=4096, tie_word_embeddings=False,
    )
    kw.update(overrides)
    return MistralConfig(**kw)


MATCHES = ("active", "total", "source")


def dense_equivalent(config, match: str = "active", **overrides):
    """A dense `MistralConfig` baseline for an MoE config (see module docstring for `match`).

    >>> from moelab.compute import count_params
    >>> moe = mixtral_8x7b_config()
    >>> dense = dense_equivalent(moe, match="active")
    >>> abs(count_params(dense).total - count_params(moe).active) < 3 * 4096 * 32
    True
    """
    from transformers import MistralConfig

    if match not in MATCHES:
        raise ValueError(f"match={match!r} is not one of {MATCHES}; e.g. dense_equivalent(cfg, match='active')")
    c = as_config(config)
    s = model_shape(c)
    if not s.is_moe:
        raise ValueError(f"dense_equivalent needs an MoE config, got model_type {s.model_type!r} with no MoE layers")
    kw = dict(
        vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers,
        num_attention_heads=s.heads, num_key_value_heads=s.kv_heads, head_dim=s.head_dim,
        tie_word_embeddings=s.tied, sliding_window=s.sliding_window,
        max_position_embeddings=getattr(c, "max_position_embeddings", 4096),
        rms_norm_eps=getattr(c, "rms_norm_eps", 1e-6), hidden_act=getattr(c, "hidden_act", "silu"),
    )
    if getattr(c, "rope_parameters", None):
        kw["rope_parameters"] = dict(c.rope_parameters)
    if match == "source":
        width = s.expert_intermediate
    else:
        moe = count_params(c)
        target = moe.active if match == "active" else moe.total
        base = count_params(MistralConfig(**kw, intermediate_size=0)).total  # everything but the MLP
        width = round((target - base) / (3 * s.hidden * s.layers))
    kw.update(overrides)
    kw.setdefault("intermediate_size", width)
    return MistralConfig(**kw)
