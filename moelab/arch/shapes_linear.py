"""Shape readers for MoE families with Kimi delta attention (KDA) layers: kimi_linear, bailing_hybrid.

    >>> from moelab.arch.tiny import tiny_config
    >>> from moelab.arch.config_shape import model_shape
    >>> [m.kind for m in model_shape(tiny_config("kimi_linear")).layer_mixers]
    ['kda', 'attention', 'kda', 'attention']

KDA (Kimi Linear, arXiv:2510.26692) is gated DeltaNet with a per-channel decay: q, k, v projections
(heads x head_dim each) through one depthwise causal conv1d, a forget gate g of the full q width, a per-head
beta, and a gated RMSNorm (one head wide) before o_proj. Both families put MLA softmax attention (DeepSeek-V3
style, `moelab.arch.shapes.deepseek_v3_shape`) on their "full_attention" layers; bailing_hybrid adds a per-head
sigmoid output gate Linear(H, heads) there. MoE layers from `mlp_layer_types` ("sparse"), one shared MLP of
`moe_intermediate_size * n_shared_experts`; the routers' e_score_correction_bias is a buffer.

The layers' closed forms, read off the modules' `__init__` in transformers 5.24 (Q = 64, the `chunk_size` of
the reference `chunk_kimi_delta_attention`; FLOPs in `moelab.compute.flops.kda_scan_flops`):
    kimi_linear     q, k, v: H -> h d; forget gate f_a H -> d, f_b d -> h d, dt_bias (h d), A_log (h);
                    b_proj H -> h; output gate g_a H -> d, g_b d -> h d; o_norm (d); o_proj h d -> H
    bailing_hybrid  the same with full-rank gates: f_proj H -> h d, g_proj H -> h d
"""

from __future__ import annotations

from .shapes import Mixer, ModelShape
from .shapes_families import _moe

KDA_CHUNK = 64  # chunk_size of chunk_kimi_delta_attention (transformers 5.24, kimi_linear and bailing_hybrid)


def kda_mixer(c, low_rank_gates: bool) -> Mixer:
    """One KDA layer: `linear_num_heads` heads of `linear_head_dim`, conv kernel `linear_conv_kernel_dim`.
    low_rank_gates: forget and output gates as H -> d -> h d (kimi_linear) instead of H -> h d (bailing_hybrid)."""
    H, h, d, K = c.hidden_size, c.linear_num_heads, c.linear_head_dim, c.linear_conv_kernel_dim
    hd = h * d
    gate = H * d + d * hd if low_rank_gates else H * hd  # one gate's weights: the forget gate and the output gate
    weights = 3 * H * hd + 2 * gate + H * h + hd * H  # q, k, v, f, g, b_proj, o_proj
    params = weights + 3 * hd * K + hd + h + d  # + conv1d (no bias), dt_bias, A_log, o_norm
    return Mixer(kind="kda", params=params, weights=weights, conv=(3 * hd, K), scan=("kda", KDA_CHUNK, h, d, d))


def _mla(c, common: dict, **kw) -> Mixer:
    """The MLA softmax attention of a "full_attention" layer (q_proj or q_a/q_b, kv_a, kv_b, o_proj)."""
    ab = bool(getattr(c, "attention_bias", False))
    nope, rope = c.qk_nope_head_dim, c.qk_rope_head_dim
    heads = common["heads"]
    return Mixer(heads=heads, kv_heads=heads, head_dim=nope + rope, q_bias=ab, k_bias=ab, o_bias=ab,
                 mla=(int(getattr(c, "q_lora_rank", 0) or 0), c.kv_lora_rank, nope, rope, c.v_head_dim), **kw)


def kda_moe_shape(c, common: dict) -> ModelShape:
    """kimi_linear, bailing_hybrid: KDA on "linear_attention" layers, MLA elsewhere (bailing_hybrid: with a
    per-head output gate); MoE on `mlp_layer_types == "sparse"`, a dense MLP (`intermediate_size`) elsewhere."""
    bailing = common["model_type"] == "bailing_hybrid"
    L = c.num_hidden_layers
    kda = kda_mixer(c, low_rank_gates=not bailing)
    attention = _mla(c, common, gate=common["heads"] if bailing else 0)
    mixers = tuple(kda if t == "linear_attention" else attention for t in c.layer_types[:L])
    nope, rope = c.qk_nope_head_dim, c.qk_rope_head_dim
    common = {**common, "kv_heads": common["heads"], "head_dim": nope + rope}
    ns = int(c.n_shared_experts or 0)
    return _moe(c, common, experts=c.num_local_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=[t == "sparse" for t in c.mlp_layer_types[:L]],
                dense=c.intermediate_size, shared=c.moe_intermediate_size * ns, num_shared=ns,
                mla=attention.mla, q_bias=attention.q_bias, k_bias=attention.k_bias, o_bias=attention.o_bias,
                mixers=mixers)
