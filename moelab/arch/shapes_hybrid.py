"""Shape readers for hybrid MoE families: Mamba, Mamba-2, gated DeltaNet, lightning-attention and
short-conv layers next to (or instead of) softmax attention.

    >>> from moelab.arch.tiny import tiny_config
    >>> from moelab.arch.config_shape import model_shape
    >>> [m.kind for m in model_shape(tiny_config("lfm2_moe")).layer_mixers]
    ['short_conv', 'attention', 'short_conv', 'attention']

Each non-attention layer is a `Mixer(kind=..., params=..., weights=...)` whose two numbers are the
closed forms below, read off the mixer's `__init__` in transformers 5.24:
    params   every parameter of the mixer (projections, conv, A_log / D / dt_bias, its norms)
    weights  the weights of its per-token projections (in_proj, x_proj, dt_proj, out_proj, gates)
`mixer_flops` adds what FlopCounterMode counts besides the projections: the depthwise
`nn.Conv1d` (a padded conv over a fresh sequence gives S + K - 1 outputs per channel) and the
matmuls of the sequence mixing itself where they have a closed form (see `HYBRID_FLOPS`).
"""

from __future__ import annotations

import math

from .shapes import Mixer, ModelShape
from .shapes_families import _mixers, _moe, _qwen_rule


def mamba_mixer(c) -> Mixer:
    """jamba's Mamba (selective scan): in_proj H->2I, conv1d, x_proj I->R+2N, dt_proj R->I, A_log (I, N), D,
    out_proj I->H, RMSNorms on dt (R), B and C (N each)."""
    H, N, K = c.hidden_size, c.mamba_d_state, c.mamba_d_conv
    I = c.mamba_expand * H
    R = c.mamba_dt_rank
    R = math.ceil(H / 16) if R == "auto" else int(R)
    pb, cb = bool(c.mamba_proj_bias), bool(c.mamba_conv_bias)
    weights = H * 2 * I + I * (R + 2 * N) + R * I + I * H
    params = weights + 2 * I * pb + H * pb + I * K + I * cb + I + I * N + I + R + 2 * N
    return Mixer(kind="mamba", params=params, weights=weights, conv=(I, K), scan=("mamba", I, N))


def mamba2_mixer(H: int, inner: int, heads: int, groups: int, state: int, kernel: int, proj_bias: bool,
                 conv_bias: bool, chunk: int) -> Mixer:
    """Mamba-2 (granitemoehybrid, nemotron_h): in_proj H -> inner + conv_dim + heads with
    conv_dim = inner + 2 * groups * state, depthwise conv1d over conv_dim, dt_bias / A_log / D per head,
    a gated RMSNorm over inner, out_proj inner -> H."""
    conv_dim = inner + 2 * groups * state
    proj = inner + conv_dim + heads
    weights = H * proj + inner * H
    params = weights + (proj + H) * proj_bias + conv_dim * kernel + conv_dim * conv_bias + 3 * heads + inner
    return Mixer(kind="mamba2", params=params, weights=weights, conv=(conv_dim, kernel),
                 scan=("ssd", chunk, heads, inner // heads, state))


def deltanet_mixer(c) -> Mixer:
    """Gated DeltaNet (qwen3_next, lara_mini): q, k (key_dim each), v, z (value_dim each), b, a (one per
    value head) from H; depthwise conv1d (no bias) over 2 key_dim + value_dim; dt_bias, A_log per value head;
    a gated RMSNorm of one value head's width; out_proj value_dim -> H."""
    H, K = c.hidden_size, c.linear_conv_kernel_dim
    nk, nv, dk, dv = c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim
    kd, vd = nk * dk, nv * dv
    conv_dim = 2 * kd + vd
    weights = H * (2 * kd + 2 * vd + 2 * nv) + vd * H
    return Mixer(kind="gated_deltanet", params=weights + conv_dim * K + 2 * nv + dv, weights=weights,
                 conv=(conv_dim, K), scan=("deltanet", 64, nv, dk, dv))  # chunk_size 64: torch_chunk_gated_delta_rule


def lightning_mixer(c, common: dict) -> Mixer:
    """minimax lightning attention: qkv_proj H -> 3 h d, output_gate H -> h d, out_proj h d -> H, RMSNorm(h d)."""
    h, d = common["heads"], common["head_dim"]
    return Mixer(kind="lightning", params=5 * c.hidden_size * h * d + h * d, weights=5 * c.hidden_size * h * d,
                 scan=("lightning", c.block_size, h, d))


def short_conv_mixer(c) -> Mixer:
    """lfm2_moe short conv: in_proj H -> 3H, depthwise conv1d (kernel `conv_L_cache`), out_proj H -> H,
    all with `conv_bias`."""
    H, K, b = c.hidden_size, c.conv_L_cache, bool(c.conv_bias)
    return Mixer(kind="short_conv", params=4 * H * H + H * K + 5 * H * b, weights=4 * H * H, conv=(H, K))


def _attention_or(c, common, make, is_attention, **attn) -> tuple[Mixer, ...]:
    attention = _mixers(c, common, **attn)
    return tuple(a if is_attention[i] else make() for i, a in enumerate(attention))


def jamba_shape(c, common: dict) -> ModelShape:
    """Attention on `i % attn_layer_period == attn_layer_offset`, Mamba elsewhere; MoE where
    `layers_num_experts[i] > 1`, a dense MLP (`intermediate_size`) elsewhere."""
    L = c.num_hidden_layers
    attn = [i % c.attn_layer_period == c.attn_layer_offset for i in range(L)]
    moe = [i % c.expert_layer_period == c.expert_layer_offset and c.num_experts > 1 for i in range(L)]
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=moe, dense=c.intermediate_size,
                mixers=_attention_or(c, common, lambda: mamba_mixer(c), attn, bias=()))


def granitemoehybrid_shape(c, common: dict) -> ModelShape:
    """Mamba-2 on "linear_attention" layers (`layers_block_type`), attention elsewhere; every layer MoE plus
    the shared MLP (`shared_intermediate_size`; the only MLP when `num_local_experts` is 0)."""
    H = c.hidden_size
    m2 = lambda: mamba2_mixer(H, int(c.mamba_expand * H), c.mamba_n_heads, c.mamba_n_groups, c.mamba_d_state,  # noqa
                              c.mamba_d_conv, bool(c.mamba_proj_bias), bool(c.mamba_conv_bias), c.mamba_chunk_size)
    attn = [t != "linear_attention" for t in c.layers_block_type]
    E, S = int(c.num_local_experts or 0), c.shared_intermediate_size
    return _moe(c, common, experts=E, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=[E > 0] * c.num_hidden_layers, shared=S if E > 0 else 0, dense=0 if E > 0 else S,
                mixers=_attention_or(c, common, m2, attn))


def nemotron_h_shape(c, common: dict) -> ModelShape:
    """One block per layer (`layers_block_type`): Mamba-2, attention, an MoE (relu^2 experts, optional latent
    projections, one shared MLP) or a dense relu^2 MLP; one norm per layer."""
    H, types = c.hidden_size, list(c.layers_block_type)
    m2 = lambda: mamba2_mixer(H, c.mamba_num_heads * c.mamba_head_dim, c.mamba_num_heads, c.n_groups,  # noqa
                              c.ssm_state_size, c.conv_kernel, bool(c.use_bias), bool(c.use_conv_bias), c.chunk_size)
    attention = _mixers(c, common, bias=())
    mixers = tuple({"linear_attention": m2(), "full_attention": attention[i]}.get(t, Mixer(kind="none"))
                   for i, t in enumerate(types))
    mb = bool(getattr(c, "mlp_bias", False))
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=[t == "moe" for t in types],
                mlp_layer=tuple(t in ("moe", "mlp") for t in types), dense=c.intermediate_size,
                shared=c.moe_shared_expert_intermediate_size, mlp_bias=mb, shared_bias=mb, glu=False,
                moe_latent=int(getattr(c, "moe_latent_size", 0) or 0), layer_norms=1, mixers=mixers)


def lfm2_moe_shape(c, common: dict) -> ModelShape:
    """Short conv on "conv" layers, attention (q/k norm) elsewhere; the first `num_dense_layers` dense."""
    attn = [t != "conv" for t in c.layer_types]
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=[i >= c.num_dense_layers for i in range(c.num_hidden_layers)], dense=c.intermediate_size,
                mixers=_attention_or(c, common, lambda: short_conv_mixer(c), attn, bias=(), qk_norm="head"))


def qwen3_next_shape(c, common: dict) -> ModelShape:
    """qwen3_next, qwen3_5_moe(_text): gated DeltaNet on "linear_attention" layers; gated attention (q_proj twice
    as wide: query and gate) with q/k norm elsewhere; qwen2_moe sparse-layer rule, shared expert with a sigmoid
    gate."""
    attn = [t != "linear_attention" for t in c.layer_types]
    qd = common["heads"] * common["head_dim"]
    gate_bias = qd if getattr(c, "attention_bias", False) else 0
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_qwen_rule(c), dense=getattr(c, "intermediate_size", 0) or 0,  # qwen3_5_moe: no dense layers
                shared=c.shared_expert_intermediate_size,
                shared_gate=True, mixers=_attention_or(c, common, lambda: deltanet_mixer(c), attn, qk_norm="head",
                                                       gate=qd, gate_bias=gate_bias))


def lara_mini_shape(c, common: dict) -> ModelShape:
    """Gated DeltaNet on "linear_attention" layers, attention with q/k norm elsewhere; every layer MoE with an
    ungated shared expert."""
    attn = [t != "linear_attention" for t in c.layer_types]
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=[True] * c.num_hidden_layers, shared=c.shared_expert_intermediate_size,
                mixers=_attention_or(c, common, lambda: deltanet_mixer(c), attn, qk_norm="head"))


def minimax_shape(c, common: dict) -> ModelShape:
    """Lightning attention on "linear_attention" layers, plain attention elsewhere; every layer MoE."""
    attn = [t != "linear_attention" for t in c.layer_types]
    return _moe(c, common, experts=c.num_local_experts, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=[True] * c.num_hidden_layers,
                mixers=_attention_or(c, common, lambda: lightning_mixer(c, common), attn, bias=()))
