"""
Shape readers for families whose blocks add parts beyond attention + MLP/MoE:
    gemma4      per-layer input embeddings, KV sharing across layers, k = v attention, a dense MLP beside the
                MoE block, full-attention layers with their own head_dim / KV heads
    hy_v4       MLA + DSA indexer on some layers, output gate, sinks, hyper-connections (4 residual streams)
    qwen4_exp   gated attention with a QSA block indexer, gated DeltaNet, gated-residual hyper-connections,
                hashed n-gram embedding (PLE) layers with a dilated depthwise conv
    inkling     relative-position logits, short convs on k, v and both residual branches, shared-expert rows
                in the router
    inkling2    sink / gate / relative-bias projections, dynamic k/v convs, block attention residuals
Parts outside the usual components go to ModelShape.extra_params / extra_weights / extra_convs (ParamCount.other,
FlopBreakdown.other), attention-side extras to Mixer.extra_weights / extra_params.

    >>> from moelab.arch.tiny import tiny_config
    >>> from moelab.compute import model_shape
    >>> s = model_shape(tiny_config("gemma4_text"))
    >>> (s.num_moe_layers, s.mlp_widths, s.layer_mixers[0].kv_proj)
    (4, (64, 64, 64, 64), 2)

Each reader is a closed form of the parameter shapes the transformers 5.x modeling file creates
(tests/test_compute_families.py checks them against `model.parameters()` and FlopCounterMode).
"""

from __future__ import annotations

from dataclasses import replace

from .shapes import Mixer, ModelShape
from .shapes_families import _moe, mla_moe_shape
from .shapes_hybrid import _attention_or, deltanet_mixer


def gemma4_shape(c, common: dict) -> ModelShape:
    """Gemma 4 (modeling_gemma4.py, Gemma4TextDecoderLayer / Gemma4TextModel).

    Per layer: sandwich norms (4), attention with per-head q/k RMSNorms (v_norm has no weight), head_dim and KV
    heads from `per_layer_config[i]` (full-attention layers: global_head_dim / num_global_key_value_heads).
    `attention_k_eq_v`: full-attention layers have no v_proj (values are the keys). The last
    `num_kv_shared_layers` layers read the keys and values of an earlier layer of their type: no k/v projections
    or k norm (`kv_sharing_modes` "reuse"), and with `use_double_wide_mlp` a dense MLP twice as wide.
    Every layer has its dense GeGLU MLP; `enable_moe_block` adds, beside it, a routed MoE block: router Linear(H, E)
    with a scale (H) and a per-expert scale (E) as parameters, and three more norms (post_feedforward_layernorm_1/2,
    pre_feedforward_layernorm_2).
    Per-layer input embeddings (PLE, hidden_size_per_layer_input = P > 0): a table V_ple x (L * P), a
    Linear(H, L * P) model projection with a P-wide norm, and per layer a gate Linear(H, P), a projection
    Linear(P, H) and one more H-wide norm (ModelShape.extra_params / extra_weights).
    FLOPs: from an empty cache with logits="all" (`logits_to_keep=0`); with an integer logits_to_keep transformers
    runs the KV-shared layers on the kept positions only, which forward_flops does not model.
    """
    L, H, heads = c.num_hidden_layers, c.hidden_size, c.num_attention_heads
    types, modes, per_layer = c.layer_types, c.kv_sharing_modes, c.per_layer_config
    bias = bool(getattr(c, "attention_bias", False))
    keq = bool(getattr(c, "attention_k_eq_v", False))
    double = bool(getattr(c, "use_double_wide_mlp", False))
    mixers, widths = [], []
    for i in range(L):
        lc = per_layer[i]
        hd, kv = lc.head_dim, lc.num_key_value_heads
        sliding, shared = types[i] == "sliding_attention", modes[i] == "reuse"
        mixers.append(Mixer(heads=heads, kv_heads=kv, head_dim=hd, q_bias=bias, k_bias=bias, v_bias=bias, o_bias=bias,
                            q_norm=hd, k_norm=0 if shared else hd, window=c.sliding_window if sliding else None,
                            kv_proj=0 if shared else (1 if keq and not sliding else 2)))
        widths.append(c.intermediate_size * (2 if double and shared else 1))
    moe = bool(getattr(c, "enable_moe_block", False))
    E = c.num_experts if moe else 0
    P = int(getattr(c, "hidden_size_per_layer_input", 0) or 0)
    ple_params = (c.vocab_size_per_layer_input * L * P + H * L * P + P + L * 2 * H * P) if P else 0
    windows = {m.window for m in mixers}
    return ModelShape(
        **{**common, "sliding_window": windows.pop() if len(windows) == 1 else None},
        num_experts=E, top_k=c.top_k_experts if moe else 0, expert_intermediate=c.moe_intermediate_size if moe else 0,
        moe_layer=(moe,) * L, router_extra=H + E, moe_norms=3, layer_norms=4 + (P > 0), q_bias=bias, k_bias=bias,
        v_bias=bias, o_bias=bias, mixers=tuple(mixers), mlp_widths=tuple(widths),
        extra_params=ple_params, extra_weights=H * L * P + L * 2 * H * P,
    )


gemma4_shape.per_layer = True  # reads config.per_layer_config (full-attention layers' head_dim and KV heads)


def hy_v4_shape(c, common: dict) -> ModelShape:
    """HY-V4 (modeling_hy_v4.py): DeepSeek-V3.2 MLA with a DSA indexer on the layers whose
    `indexer_types[i] == "full"` ("shared" layers reuse the previous top-k: no indexer), a sigmoid output gate
    Linear(H, heads * v_head_dim) and one sink logit per head; MoE on `mlp_layer_types == "sparse"` with
    `n_shared_experts` shared experts. Hyper-connections (N = hc_mult residual streams): per layer two
    HYV4HyperConnection (attn_hc, ffn_hc), each fn (2N x N*H) + base (2N) + scale (2), and one final
    HYV4HyperHead: hc_fn (N x N*H) + hc_base (N) + hc_scale (1). Their per-token matmuls are the fn / hc_fn
    Linear layers; the stream mixing itself is elementwise."""
    s = mla_moe_shape(c, common)
    q_rank, v = s.mla[0], s.mla[4]
    kinds = c.indexer_types
    mixers = tuple(replace(s.attention_mixer, gate=s.heads * v, sinks=True,
                           **(dict(index_heads=c.index_n_heads, index_dim=c.index_head_dim, index_q_rank=q_rank)
                              if kinds[i] == "full" else {}))
                   for i in range(c.num_hidden_layers))
    N, H, L = c.hc_mult, c.hidden_size, c.num_hidden_layers
    hc_weights = L * 2 * (2 * N) * (N * H) + N * (N * H)
    return replace(s, mixers=mixers, extra_weights=hc_weights, extra_params=hc_weights + L * 2 * (2 * N + 2) + N + 1)


def _ngram_table_rows(c, ple_index: int) -> int:
    """Rows of one Qwen4ExpTextNGramEmbedding table: its heads' prime vocab sizes (the (g+1)-th prime at or after
    ngram_vocab_size_base, g the global head index), summed and padded to make_ngram_vocab_size_divisible_by."""
    heads = (c.ngram_size - 1) * c.heads_per_ngram
    primes, p = [], c.ngram_vocab_size_base - 1
    while len(primes) < (ple_index + 1) * heads:
        p += 1
        if p >= 2 and all(p % d for d in range(2, int(p ** 0.5) + 1)):
            primes.append(p)
    total, div = sum(primes[ple_index * heads:]), c.make_ngram_vocab_size_divisible_by
    return -(-total // div) * div


def qwen4_exp_shape(c, common: dict) -> ModelShape:
    """Qwen4-Exp (modeling_qwen4_exp.py, text model). Every layer: a gated DeltaNet ("linear_attention", as in
    qwen3_next) or gated attention ("indexed_attention": q_proj twice as wide, query and sigmoid gate; per-head q/k
    RMSNorms) with a QSA indexer (index_qk_proj H -> (n_heads + 1) x dim, q/k RMSNorms; it scores mean-pooled
    blocks of `indexer_compress_ratio` keys, Mixer.index_block), and a MoE block with a sigmoid-gated shared
    expert. No per-layer RMSNorms: the residual stream is N = hc_count copies of H (hyper-connections), and each
    block is entered through a Qwen4ExpTextGatedResidual: a grouped RMSNorm (N*H), low-rank mixing weights
    Linear(N*H, r), Linear(r, N*H), and an injection Linear(N*H, N); a last one without injection mixes the
    streams down to H before lm_head (its N*H norm counts as the final norm (H) plus ModelShape.extra_params).
    Layers `ple_layer_ids` (1-based) add a PLE layer: a hashed n-gram embedding table (`_ngram_table_rows` x
    ple_embed_dim / ngram heads), key Linear(E_ple, N*H) and value Linear(E_ple, H) projections, three N*H norms and
    a dilated depthwise Conv1d over N*H channels (kernel ple_conv_kernel_size, no bias), which always produces the
    S new outputs from S + (K - 1) * dilation inputs: 2 K N H FLOPs per token, in extra_weights."""
    L, H, N, r = c.num_hidden_layers, c.hidden_size, c.hc_count, c.hc_lowrank
    if c.indexer_kv_heads != 1:
        raise ValueError(f"{type(c).__name__}: indexer_kv_heads={c.indexer_kv_heads}; the QSA indexer of "
                         "modeling_qwen4_exp.py squeezes one key head, and moelab.compute counts that case only.")
    attn = [t != "linear_attention" for t in c.layer_types]
    qd = common["heads"] * common["head_dim"]
    gate_bias = qd if getattr(c, "attention_bias", False) else 0
    index = dict(index_heads=c.indexer_n_heads, index_dim=c.indexer_head_dim, index_block=c.indexer_compress_ratio)
    mixers = _attention_or(c, common, lambda: deltanet_mixer(c), attn, qk_norm="head", gate=qd, gate_bias=gate_bias,
                           **index)
    hc_weights = 2 * L * (2 * N * H * r + N * H * N) + 2 * N * H * r
    hc_params = hc_weights + (2 * L + 1) * N * H - H  # grouped norms; the last one's H is the shape's final norm
    ple_weights = ple_params = 0
    for j, layer in enumerate(c.ple_layer_ids):
        E = c.ple_embed_dim
        per_head = E // ((c.ngram_size - 1) * c.heads_per_ngram)
        w = E * N * H + E * H + c.ple_conv_kernel_size * N * H  # key, value projections; depthwise conv taps
        ple_weights += w
        ple_params += w + 3 * N * H + _ngram_table_rows(c, j) * per_head
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=[True] * L, shared=c.shared_expert_intermediate_size, shared_gate=True, mixers=mixers,
                layer_norms=0, extra_weights=hc_weights + ple_weights, extra_params=hc_params + ple_params)


def inkling_shape(c, common: dict) -> ModelShape:
    """Inkling (modeling_inkling.py, text model). Attention per layer: "hybrid_sliding" layers take swa_* heads,
    KV heads and head_dim and a window of sliding_window_size, other layers the plain fields; per-head q/k RMSNorms;
    r_proj Linear(H, heads * d_rel) whose output mixes a learned (d_rel x rel_extent) bank into relative-position
    logits (heads * d_rel * rel_extent weights per token; rel_extent = sliding_window_size on sliding layers), both
    in the Mixer's extra_weights / extra_params; depthwise short convs (kernel
    sconv_kernel_size) on k and v, and (kernel conv_kernel_size) on the attention and MLP outputs of every layer.
    MoE on `mlp_layer_types == "sparse"`: router Linear(H, E + n_shared) (the n_shared rows give the shared
    experts' weights; their matmul is in extra_weights) and a global scale, n_shared experts of
    moe_intermediate_size, no shared gate; dense layers: SwiGLU with a global scale. The embedding output is
    RMS-normed (one more H-wide norm)."""
    L, H = c.num_hidden_layers, c.hidden_size
    types, moe = c.layer_types, [t == "sparse" for t in c.mlp_layer_types[:L]]
    ks, kc, d_rel = c.sconv_kernel_size, c.conv_kernel_size, c.d_rel
    mixers, convs, extra_p = [], [], H  # embed_norm
    for i in range(L):
        sw = types[i] == "hybrid_sliding"
        h, g, d = ((c.swa_num_attention_heads, c.swa_num_key_value_heads, c.swa_head_dim) if sw
                   else (c.num_attention_heads, c.num_key_value_heads, c.head_dim))
        extent = c.sliding_window_size if sw else c.rel_extent
        mixers.append(Mixer(heads=h, kv_heads=g, head_dim=d, q_norm=d, k_norm=d,
                            window=c.sliding_window_size if sw else None,
                            extra_weights=H * h * d_rel + h * d_rel * extent,  # r_proj, bank
                            extra_params=H * h * d_rel + d_rel * extent + 2 * g * d * ks))  # + k/v conv taps
        convs += [(g * d, ks), (g * d, ks), (H, kc), (H, kc)]
        extra_p += 2 * H * kc + (0 if moe[i] else 1)  # residual-branch conv taps, dense MLP global_scale
    S, n_moe = c.n_shared_experts, sum(moe)
    windows = {m.window for m in mixers}
    return ModelShape(
        **{**common, "sliding_window": windows.pop() if len(windows) == 1 else None, "tied": False},  # never tied
        num_experts=c.n_routed_experts, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
        num_shared=S, shared_intermediate=S * c.moe_intermediate_size, dense_intermediate=c.intermediate_size,
        moe_layer=tuple(moe), router_extra=S * H + 1, mixers=tuple(mixers), extra_convs=tuple(convs),
        extra_weights=n_moe * S * H, extra_params=extra_p,
    )


def inkling2_shape(c, common: dict) -> ModelShape:
    """Inkling 2 (modeling_inkling2.py, text model). Every layer has a MoE block (router Linear(H, E), no shared
    experts) and short convs (conv_kernel_size) on its attention and MLP outputs. Attention ("hybrid_sliding"
    layers: swa_* heads / KV heads / head_dim, window sliding_window_size; other layers: the plain fields): q, k, v
    projections, a learned (heads x head_dim) q scale, a sigmoid output gate Linear(H, heads * head_dim) before o,
    sink logits from Linear(H, heads), relative-position bias from Linear(H, heads * d_rel) with a (heads x d_rel)
    scale and a (d_rel x rel_extent) bank (Mixer extra_weights / extra_params). k and v pass a short conv
    (sconv_kernel_size): on sliding layers a depthwise Conv1d (ModelShape.extra_convs), on full layers a dynamic
    conv whose taps are static weights (K x channels) plus Linear(H, kv_heads * K) of the layer input (its taps
    are applied elementwise: no matmul). Norms: input and post-attention (sliding), q/k/v input and
    post-attention (full), an embedding RMSNorm and the final norm. Block attention residuals (learned queries,
    Inkling2BlockAttentionResidual): a layer's attention input (1 query, full layers 3; none on layer 0) and MLP
    input (1 query), and the final input, each attends over the stacked block states (one per block boundary
    passed, every n_layers_per_attn_res_block layers, plus the current state): 2 x queries x H x states weights per
    token (QK and AV), in extra_weights. lm_head has `unpadded_vocab_size` rows (never tied)."""
    L, H, E = c.num_hidden_layers, c.hidden_size, c.n_routed_experts
    types, n_blk, d_rel = c.layer_types, c.n_layers_per_attn_res_block, c.d_rel
    ks, kc = c.sconv_kernel_size, c.conv_kernel_size
    V_head = getattr(c, "unpadded_vocab_size", None) or c.vocab_size
    mixers, convs = [], []
    extra_p = (c.vocab_size - V_head) * H + H + 2 * L * H * kc  # embedding rows beyond lm_head's, embed_norm, convs
    extra_w = 0
    for i in range(L):
        sw = types[i] == "hybrid_sliding"
        h, g, d = ((c.swa_num_attention_heads, c.swa_num_key_value_heads, c.swa_head_dim) if sw
                   else (c.num_attention_heads, c.num_key_value_heads, c.head_dim))
        extent = c.sliding_window_size if sw else c.rel_extent
        w = H * h + H * h * d_rel + h * d_rel * extent + (0 if sw else 2 * H * g * ks)  # sink, rel, bank, dyn taps
        p = H * h + H * h * d_rel + h * d_rel + d_rel * extent + h * d  # + rel scale, bank, q scale
        p += 2 * g * d * ks + (0 if sw else 2 * H * g * ks)  # k/v conv taps (static), dynamic tap projections
        mixers.append(Mixer(heads=h, kv_heads=g, head_dim=d, gate=h * d, window=c.sliding_window_size if sw else None,
                            extra_weights=w, extra_params=p))
        if sw:
            convs += [(g * d, ks), (g * d, ks)]
        convs += [(H, kc), (H, kc)]
        extra_p += (0 if sw else 2 * H)  # q/k/v input norms: one more than the sliding layer's input norm
        blocks = (i - 1) // n_blk + 1 if i else 0  # block states entering layer i
        queries = 1 if sw else 3
        if i:
            extra_p += queries * H
            extra_w += 2 * queries * H * (blocks + 1)
        extra_p += H
        extra_w += 2 * H * (blocks + (i % n_blk == 0) + 1)
    final_blocks = (L - 1) // n_blk + 1
    extra_p += H
    extra_w += 2 * H * (final_blocks + 1)
    windows = {m.window for m in mixers}
    return ModelShape(
        **{**common, "sliding_window": windows.pop() if len(windows) == 1 else None, "tied": False, "vocab": V_head},
        num_experts=E, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
        moe_layer=(True,) * L, mixers=tuple(mixers), extra_convs=tuple(convs), extra_weights=extra_w,
        extra_params=extra_p,
    )
