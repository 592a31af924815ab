"""Shape readers for kimi_linear and bailing_hybrid (Kimi delta attention, KDA), axk2 (MLA with a fused q + output
gate, a DSA indexer and gated norms) and deepseek_v4 (compressed sparse attention and hyper-connections).

    >>> from moelab.arch.tiny import tiny_config
    >>> from moelab.arch.config_shape import model_shape
    >>> [m.kind for m in model_shape(tiny_config("kimi_linear")).layer_mixers]
    ['kda', 'attention', 'kda', 'attention']
    >>> [m.compress for m in model_shape(tiny_config("deepseek_v4")).layer_mixers]  # (rate, indexer heads, width)
    [(128, 0, 0), (128, 0, 0), (128, 0, 0), (4, 64, 128)]

What the readers add to `ModelShape` / `Mixer` (each field documented in moelab.arch.shapes):
    Mixer(kind="kda", scan=("kda", ...))   KDA layers; FLOPs in moelab.compute.flops.kda_scan_flops
    Mixer.extra_weights                    attention projections beyond the q/k/v/o/MLA formula (axk2)
    Mixer.weights / params on attention    the whole block's closed form (deepseek_v4's grouped o_a/o_b, compressors)
    Mixer.compress                         deepseek_v4's keys: a truncated sliding cache + compressed entries, and
                                           the CSA indexer's scores (moelab.compute.flops.compressed_attention_keys)
    ModelShape.extra_weights / _params     matmuls and parameters on the residual stream outside mixers and MLPs
                                           (axk2's gated norms, deepseek_v4's hyper-connections); ParamCount.other and
                                           FlopBreakdown.other

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

from dataclasses import replace

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


def axk2_shape(c, common: dict) -> ModelShape:
    """axk2 (A.X-K2): DeepSeek-V3 MLA with q_a (no q_b): one fused Linear(2 q_lora_rank, h (qk + v)) makes the query
    and a sigmoid output gate (h v) from [q_a_layernorm(q_a), q_a]; a DSA indexer on every layer (wq_b from the
    q latent, wk, a k LayerNorm, weights_proj); gated RMSNorms `y * sigmoid(fc2(silu(fc1(y))))` (fc1 H -> r, fc2
    r -> H, r = `gated_norm_rank`) on every layer's input norm and on MoE layers' post-attention norm; MoE on
    `mlp_layer_types == "sparse"`."""
    L, H, r = c.num_hidden_layers, c.hidden_size, c.gated_norm_rank
    q_rank, heads = c.q_lora_rank, common["heads"]
    attention = _mla(c, common, index_heads=c.index_n_heads, index_dim=c.index_head_dim, index_q_rank=q_rank)
    qk, v = attention.head_dim, c.v_head_dim
    fused = 2 * q_rank * heads * (qk + v)  # q_gate_proj; the Mixer's q_b (q_rank -> h qk) counts q_rank h qk of it
    extra = fused - q_rank * heads * qk
    attention = replace(attention, extra_weights=extra, extra_params=extra)  # a plain projection: params = weights
    moe = [t == "sparse" for t in c.mlp_layer_types[:L]]
    nope, rope = c.qk_nope_head_dim, c.qk_rope_head_dim
    common = {**common, "kv_heads": heads, "head_dim": nope + rope}
    ns = int(c.n_shared_experts or 0)
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=moe, dense=c.intermediate_size,
                shared=c.moe_intermediate_size * ns, num_shared=ns, mla=attention.mla, q_bias=attention.q_bias,
                k_bias=attention.k_bias, o_bias=attention.o_bias, mixers=(attention,) * L,
                extra_weights=(L + sum(moe)) * 2 * H * r, extra_params=(L + sum(moe)) * 2 * H * r)  # gated norms


def deepseek_v4_attention(c, layer_type: str) -> Mixer:
    """One deepseek_v4 attention block (`layer_types[i]`): "sliding_attention", "compressed_sparse_attention" (CSA) or
    "heavily_compressed_attention" (HCA). Shared-KV MQA: q_a H -> q_rank (RMSNorm), q_b q_rank -> h d, one kv_proj
    H -> d (RMSNorm; keys = values); a grouped output projection o_a (o_groups blocks of h d / g -> o_rank, i.e. h d
    o_rank weights) and o_b g o_rank -> H; a sink logit per head. HCA adds a compressor (kv_proj, gate_proj H -> d,
    position_bias rate x d, an RMSNorm of d); CSA one of twice the width (H -> 2d, rate x 2d) plus a lightning
    indexer with its own compressor (H -> 2 d_i twice, rate x 2 d_i, RMSNorm d_i), q_b q_rank -> h_i d_i and a
    weights_proj H -> h_i."""
    H, h, d, q, W = c.hidden_size, c.num_attention_heads, c.head_dim, c.q_lora_rank, c.sliding_window
    o_rank, g = c.o_lora_rank, c.o_groups
    weights = H * q + q * h * d + H * d + h * d * o_rank + g * o_rank * H
    params = q + d + h  # q_a_norm, kv_norm, sinks
    compress = (0, 0, 0)  # sliding only: no compressed entries, but the cache keeps window - 1 tokens
    if layer_type == "heavily_compressed_attention":
        rate = c.compress_rates[layer_type]
        weights += 2 * H * d
        params += rate * d + d
        compress = (rate, 0, 0)
    elif layer_type == "compressed_sparse_attention":
        rate, ih, idim = c.compress_rates[layer_type], c.index_n_heads, c.index_head_dim
        weights += 4 * H * d + 4 * H * idim + q * ih * idim + H * ih
        params += rate * 2 * d + d + rate * 2 * idim + idim
        compress = (rate, ih, idim)
    elif layer_type != "sliding_attention":
        raise ValueError(f"deepseek_v4 layer type {layer_type!r} is not one moelab.compute knows: sliding_attention, "
                         "compressed_sparse_attention, heavily_compressed_attention")
    return Mixer(heads=h, kv_heads=1, head_dim=d, sinks=True, window=W, weights=weights, params=weights + params,
                 compress=compress)


def deepseek_v4_shape(c, common: dict) -> ModelShape:
    """deepseek_v4: every layer MoE (`mlp_layer_types` "hash_moe" layers choose experts by a token-id table, a
    buffer, but keep the Linear(H, E) scoring gate) with one shared SwiGLU MLP, experts and shared MLP both
    `moe_intermediate_size` wide (`mlp_bias` on the shared one); attention from `deepseek_v4_attention`.
    Manifold-constrained hyper-connections (mHC) carry N = `hc_mult` residual streams: per layer two
    (attn_hc, ffn_hc), each a Linear(N H, (2 + N) N) `fn` on the flattened streams, `base` ((2 + N) N), `scale` (3)
    and a comb^T @ streams mix (N^2 H multiply-adds per token); the final hc_head: Linear(N H, N), base (N), scale."""
    L, H, N = c.num_hidden_layers, c.hidden_size, c.hc_mult
    mb = bool(getattr(c, "mlp_bias", False))
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=[True] * L, shared=c.moe_intermediate_size,
                num_shared=1, shared_bias=mb, mixers=tuple(deepseek_v4_attention(c, t) for t in c.layer_types[:L]),
                # hyper-connections: the fn projections (params and per-token weights), bases and scales (params
                # only), and the weight-free comb^T @ streams mix (multiply-adds only)
                extra_weights=L * 2 * (2 + N) * N * N * H + N * N * H + L * 2 * N * N * H,
                extra_params=L * 2 * (2 + N) * N * N * H + N * N * H + L * 2 * ((2 + N) * N + 3) + N + 1)
