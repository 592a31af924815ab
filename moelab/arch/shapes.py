"""
The architecture numbers that compute accounting needs, read from a transformers config.

Every accounting function in `moelab.compute` (params, FLOPs, memory, roofline) works on a
`ModelShape`: a flat record of the few integers that decide the cost of a decoder-only
transformer with (optionally) Mixture-of-Experts MLPs. `model_shape(config)` reads one from a
transformers config object or a plain dict (with a "model_type" key), so the accounting never
touches a model's weights.

Each MoE adapter in `moelab.arch.registry` names its reader below (`Adapter.shape`); the dense
readers (mistral, llama) are in `DENSE_READERS`. What each adds to the plain Llama/Mistral block:
    mistral, llama   dense SwiGLU MLP (llama: optional attention/MLP biases)
    mixtral          E experts, top-k softmax router                       (arXiv:2401.04088)
    phimoe           Mixtral + LayerNorm with bias, optional attention / lm_head biases
    qwen2_moe        fine-grained experts + 1 shared expert with a sigmoid gate, qkv biases,
                     dense layers via `mlp_only_layers` / `decoder_sparse_step`
    qwen3_moe        fine-grained experts, per-head q/k RMSNorm, same sparse-layer rule
    olmoe            fine-grained experts, q/k RMSNorm over the full projection (arXiv:2409.02060)

The other families' readers live in `moelab.arch.shapes_families` (standard attention: gates,
sinks, per-layer heads, MLA variants, dense/MoE layer rules) and `moelab.arch.shapes_hybrid`
(Mamba / Mamba-2 / gated DeltaNet / lightning attention / short-conv layers, as `Mixer` records) and
`moelab.arch.shapes_extra` (per-layer input embeddings, KV sharing, hyper-connections, short convs,
relative-position logits, block attention residuals: gemma4, hy_v4, qwen4_exp, inkling, inkling2).

References: the modeling_*.py files of transformers 5.x (the parameter shapes here are the
ones those modules create; tests check the sum against `model.parameters()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Mixer:
    """One decoder layer's token mixer: an attention block (the default) or a recurrent / conv mixer.

    >>> Mixer(heads=4, kv_heads=2, head_dim=16).kind
    'attention'

    A `ModelShape` whose layers all share one attention block leaves `mixers` empty and keeps the
    numbers in its own fields; readers of families whose layers differ (per-layer head counts,
    sinks on sliding layers only, Mamba / linear-attention / short-conv layers) give one Mixer per layer.
    """

    kind: str = "attention"  # "attention" | "mamba" | "mamba2" | "gated_deltanet" | "short_conv" | "lightning" | "none"
    heads: int = 0  # query heads
    kv_heads: int = 0  # key/value heads
    head_dim: int = 0  # q/k width per head
    v_head_dim: int = 0  # v/o width per head (0 = head_dim; mimo_v2_flash differs)
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    q_norm: int = 0  # weights of the q normalisation
    k_norm: int = 0  # weights of the k normalisation
    gate: int = 0  # output gate Linear(H, gate), no bias (afmoe, beam: heads*head_dim; laguna per-head: heads)
    gate_bias: int = 0  # parameters of a separate gate bias (beam: one per head)
    sinks: bool = False  # one learned sink logit per head
    window: int | None = None  # sliding window of this layer (None = full causal)
    mla: tuple[int, int, int, int, int] | None = None  # (q_lora_rank or 0, kv_lora_rank, qk_nope, qk_rope, v_dim)
    index_heads: int = 0  # sparse-attention indexer: heads of its q projection, 0 = none
    index_dim: int = 0  # width of one indexer head (its k projection has one head)
    index_q_rank: int = 0  # 0: the indexer's q comes from H, q/k RMSNorms (minimax_m3); > 0: DeepSeek sparse
    #                        attention (DSA): q from the q_lora_rank latent, a k LayerNorm with bias, and a
    #                        Linear(H, index_heads) weighting the heads' scores (deepseek_v32, glm_moe_dsa, dots3)
    # non-attention mixers (kind != "attention"): closed forms from the modeling file, computed by the reader
    params: int = 0  # every parameter of the mixer
    weights: int = 0  # weights of its per-token matmuls (FLOPs per token = 2 * weights)
    conv: tuple[int, int] | None = None  # (channels, kernel) of its depthwise causal nn.Conv1d, None = none
    scan: tuple = ()  # the sequence mixing's matmul sizes (moelab.compute.flops.scan_flops): ("mamba", inner, state),
    #                   ("ssd", chunk, heads, head_dim, state), ("deltanet", chunk, heads, k_dim, v_dim),
    #                   ("lightning", block, heads, head_dim); () = none
    #                   moelab.arch.shapes_linear adds kind "kda" (Kimi delta attention) with scan
    #                   ("kda", chunk, heads, k_dim, v_dim) (moelab.compute.flops.LINEAR_SCANS)
    # what an attention block has beyond the fields above (moelab.arch.shapes_linear: axk2, deepseek_v4;
    # moelab.arch.shapes_extra: inkling). An attention Mixer with `weights` set (deepseek_v4) takes `weights` /
    # `params` as its closed form instead of the q/k/v/o one (heads, head_dim, window still size the scores).
    compress: tuple = ()  # deepseek_v4 compressed attention: (rate, index_heads, index_dim); the keys are the sliding
    #                       cache (window - 1 cached + the new tokens) plus one compressed entry per `rate` tokens,
    #                       which an indexer of index_heads x index_dim scores (index_heads 0: no indexer; rate 0: no
    #                       compressor, a deepseek_v4 sliding layer); () = none
    index_block: int = 0  # 0: the indexer scores every key; > 0: QSA indexer (qwen4_exp): keys mean-pooled in blocks of
    #                       this many, a query with n visible keys scores n // index_block blocks (one index k head)
    extra_weights: int = 0  # attention: per-token matmul weights beyond the fields above (axk2: the fused q +
    #                         output-gate projection; inkling: r_proj and the relative-position bank, sink and
    #                         dynamic-conv weight projections); 2 FLOPs each per token
    extra_params: int = 0  # attention: the parameters of those parts (not derived from extra_weights: a bank of
    #                        d_rel x extent weights multiplies every head's d_rel states)
    kv_proj: int = 2  # K/V projections this attention layer computes: 2 (k_proj and v_proj), 1 (k = v, no v_proj:
    #                   gemma4 attention_k_eq_v), 0 (reads another layer's keys and values: gemma4 KV sharing)

    @property
    def vd(self) -> int:
        return self.v_head_dim or self.head_dim



@dataclass(frozen=True)
class ModelShape:
    """The integers that decide parameter counts, FLOPs and bytes of a decoder-only LM.

    >>> from moelab.compute import model_shape, mixtral_8x7b_config
    >>> s = model_shape(mixtral_8x7b_config())
    >>> (s.hidden, s.num_experts, s.top_k, s.num_moe_layers)
    (4096, 8, 2, 32)
    """

    model_type: str
    vocab: int  # V, rows of the embedding table
    hidden: int  # H, residual stream width
    layers: int  # L, decoder blocks
    heads: int  # query heads
    kv_heads: int  # key/value heads (GQA: kv_heads < heads)
    head_dim: int  # per-head width
    tied: bool  # lm_head shares the embedding matrix
    # MoE MLP (num_experts == 0 means the model is dense)
    num_experts: int = 0  # E routed experts per MoE layer
    top_k: int = 0  # k experts per token
    expert_intermediate: int = 0  # SwiGLU width of one routed expert
    shared_intermediate: int = 0  # width of the always-on shared expert (qwen2_moe), 0 = none
    shared_gate: bool = False  # sigmoid gate Linear(H, 1) on the shared expert (qwen2_moe)
    dense_intermediate: int = 0  # SwiGLU width of the MLP in dense layers
    moe_layer: tuple[bool, ...] = field(default=())  # per layer: MoE MLP (True) or dense MLP
    # biases and norms
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False  # dense MLP biases (llama mlp_bias)
    q_norm: int = 0  # weights of the q normalisation per layer (0 = none)
    k_norm: int = 0  # weights of the k normalisation per layer
    norm_bias: bool = False  # LayerNorm (weight + bias) instead of RMSNorm (weight)
    lm_head_bias: bool = False
    sliding_window: int | None = None  # attention window (None = full causal attention)
    # newer families (DeepSeek-V3, GPT-OSS, Llama 4)
    num_shared: int = 0  # shared experts per MoE layer (their total width is shared_intermediate)
    router_bias: bool = False  # Linear(H, E) router with a bias (gpt_oss)
    expert_bias: bool = False  # routed experts with gate_up / down biases (gpt_oss)
    attn_sinks: bool = False  # one learned sink logit per head per layer (gpt_oss)
    mla: tuple[int, int, int, int, int] | None = None  # (q_lora_rank or 0, kv_lora_rank, qk_nope, qk_rope, v_dim)
    # the families of moelab.arch.shapes_families
    layer_norms: int = 2  # H-wide norms per decoder layer (1: parallel block / one block per layer; 4: sandwich norms)
    shared_bias: bool = False  # shared-expert Linear layers have biases (deepseek_v2 / aria mlp_bias, ernie use_bias)
    router_extra: int = 0  # per MoE layer: router parameters with no matmul, e.g. an e_score_correction_bias or
    #                        expert_bias stored as an nn.Parameter (numel counts it; the same thing as a buffer is not)
    mixers: tuple[Mixer, ...] = ()  # per layer token mixer when layers differ; () = every layer is `attention_mixer`
    mlp_layer: tuple[bool, ...] = ()  # per layer: has an MLP at all (nemotron_h mixer-only layers); () = every layer
    glu: bool = True  # MLPs and experts are gated (gate, up, down); False: up, down only (nemotron_h relu^2)
    dense_experts: bool = False  # the transformers eager experts run every expert on every token, inputs zeroed
    #                              off the top-k (llama4); counted only by forward_flops(as_transformers=True)
    moe_norms: int = 0  # extra H-wide norms per MoE layer (axk1's post_mlp_layernorm on the MoE output)
    moe_latent: int = 0  # experts work in this width: Linear(H, latent) before, Linear(latent, H) after (nemotron_h)
    # parts outside the token mixers and MLPs (moelab.arch.shapes_extra, moelab.arch.shapes_linear)
    mlp_widths: tuple[int, ...] = ()  # per layer: width of its dense MLP (0 = none), counted on MoE layers too (gemma4
    #                                   runs a dense MLP beside the MoE block; KV-shared layers may be double-wide);
    #                                   () = `dense_intermediate` on the dense layers
    extra_params: int = 0  # parameters outside the components above (gemma4's per-layer input embeddings and their
    #                        projections; hyper-connections; axk2's gated norms), ParamCount.other; all active
    extra_weights: int = 0  # per-token multiply-adds of those parts, whole model (FLOPs 2 * extra_weights per
    #                         token; weight-free mixes such as deepseek_v4's comb^T @ streams count here too)
    extra_convs: tuple[tuple[int, int], ...] = ()  # (channels, kernel) of depthwise causal convs outside the mixers
    #                                                (inkling's short convs on k, v and the residual branches); FLOPs
    #                                                by moelab.compute.flops.conv_flops, parameters in extra_params

    @property
    def attention_mixer(self) -> Mixer:
        """The attention block described by this shape's own fields (what every layer has when `mixers` is empty)."""
        return Mixer(heads=self.heads, kv_heads=self.kv_heads, head_dim=self.head_dim, q_bias=self.q_bias,
                     k_bias=self.k_bias, v_bias=self.v_bias, o_bias=self.o_bias, q_norm=self.q_norm, k_norm=self.k_norm,
                     sinks=self.attn_sinks, window=self.sliding_window, mla=self.mla)

    @property
    def layer_mixers(self) -> tuple[Mixer, ...]:
        return self.mixers or (self.attention_mixer,) * self.layers

    @property
    def num_dense_mlp_layers(self) -> int:
        """Layers with a dense MLP: not MoE, and with an MLP at all."""
        has = self.mlp_layer or (True,) * self.layers
        return sum(h and not m for h, m in zip(has, self.moe_layer))

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and any(self.moe_layer)

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layer)

    @property
    def num_dense_layers(self) -> int:
        return self.layers - self.num_moe_layers


def _head_dim(c) -> int:
    hd = getattr(c, "head_dim", None)
    return int(hd) if hd else c.hidden_size // c.num_attention_heads


def _window(c) -> int | None:
    if getattr(c, "use_sliding_window", True) is False:  # qwen*: the field exists but is off
        return None
    return getattr(c, "sliding_window", None) or None


def _sparse_layers(c, num_experts: int) -> tuple[bool, ...]:
    # qwen2_moe / qwen3_moe rule (modeling_qwen*_moe.py, DecoderLayer.__init__)
    only = set(getattr(c, "mlp_only_layers", None) or [])
    step = getattr(c, "decoder_sparse_step", 1) or 1
    return tuple(
        (i not in only) and num_experts > 0 and (i + 1) % step == 0 for i in range(c.num_hidden_layers)
    )


def _attn(c) -> dict:
    ab = bool(getattr(c, "attention_bias", False))
    return dict(q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab)


def dense_shape(c, common: dict) -> ModelShape:
    """mistral, llama: dense SwiGLU MLP (llama: optional attention/MLP biases)."""
    return ModelShape(**common, dense_intermediate=c.intermediate_size, moe_layer=(False,) * c.num_hidden_layers,
                      mlp_bias=bool(getattr(c, "mlp_bias", False)), **_attn(c))


def mixtral_shape(c, common: dict) -> ModelShape:
    """mixtral, phimoe: every layer MoE; phimoe adds LayerNorm biases and optional lm_head bias."""
    return ModelShape(
        **common, num_experts=c.num_local_experts, top_k=c.num_experts_per_tok,
        expert_intermediate=c.intermediate_size, moe_layer=(True,) * c.num_hidden_layers, **_attn(c),
        norm_bias=(common["model_type"] == "phimoe"), lm_head_bias=bool(getattr(c, "lm_head_bias", False)),
    )


def olmoe_shape(c, common: dict) -> ModelShape:
    return ModelShape(
        **common, num_experts=c.num_experts, top_k=c.num_experts_per_tok,
        expert_intermediate=c.intermediate_size, moe_layer=(True,) * c.num_hidden_layers, **_attn(c),
        q_norm=c.hidden_size, k_norm=(c.hidden_size // c.num_attention_heads) * common["kv_heads"],
    )


def qwen2_moe_shape(c, common: dict) -> ModelShape:
    qb = bool(getattr(c, "qkv_bias", True))
    s = ModelShape(
        **common, num_experts=c.num_experts, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
        shared_intermediate=c.shared_expert_intermediate_size, shared_gate=True,
        dense_intermediate=c.intermediate_size, moe_layer=_sparse_layers(c, c.num_experts),
        q_bias=qb, k_bias=qb, v_bias=qb,
    )
    return _layer_windows(s, c, "sliding_attention", getattr(c, "sliding_window", None))  # max_window_layers decides


def qwen3_moe_shape(c, common: dict) -> ModelShape:
    hd = common["head_dim"]
    return ModelShape(
        **common, num_experts=c.num_experts, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
        dense_intermediate=c.intermediate_size, moe_layer=_sparse_layers(c, c.num_experts), **_attn(c),
        q_norm=hd, k_norm=hd,
    )


def deepseek_v3_shape(c, common: dict) -> ModelShape:
    """MLA attention, first `first_k_dense_replace` layers dense, `n_shared_experts` shared experts (arXiv:2412.19437)."""
    L, dense = c.num_hidden_layers, int(c.first_k_dense_replace or 0)
    heads = common["heads"]
    common = {**common, "kv_heads": heads, "head_dim": c.qk_nope_head_dim + c.qk_rope_head_dim}
    ab = bool(getattr(c, "attention_bias", False))
    return ModelShape(
        **common, num_experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
        expert_intermediate=c.moe_intermediate_size, num_shared=int(c.n_shared_experts or 0),
        shared_intermediate=c.moe_intermediate_size * int(c.n_shared_experts or 0),
        dense_intermediate=c.intermediate_size, moe_layer=tuple(i >= dense for i in range(L)),
        q_bias=ab, k_bias=ab, o_bias=ab,
        mla=(int(getattr(c, "q_lora_rank", 0) or 0), c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim,
             c.v_head_dim),  # q_lora_rank None (DeepSeek-V2-Lite): a plain q_proj
    )


def gpt_oss_shape(c, common: dict) -> ModelShape:
    """Biased attention with sinks, biased router and experts, softmax over the top-k."""
    ab = bool(getattr(c, "attention_bias", True))
    s = ModelShape(
        **{**common, "sliding_window": None}, num_experts=c.num_local_experts, top_k=c.num_experts_per_tok,
        expert_intermediate=c.intermediate_size, moe_layer=(True,) * c.num_hidden_layers,
        q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab, router_bias=True, expert_bias=True, attn_sinks=True,
    )
    return _layer_windows(s, c, "sliding_attention", getattr(c, "sliding_window", None))


def _layer_windows(s: ModelShape, c, kind: str, window: int | None) -> ModelShape:
    """`s` with the window `window` on exactly the layers `config.layer_types` marks `kind` (gpt_oss's and qwen2_moe's
    sliding layers, llama4's chunked ones: all keep a `window - 1`-token DynamicSlidingWindowLayer cache); `s` itself
    when the config has no layer_types."""
    types = getattr(c, "layer_types", None)
    if not types:
        return s
    m = replace(s.attention_mixer, window=None)
    mixers = tuple(replace(m, window=window if t == kind else None) for t in types)
    windows = {x.window for x in mixers}
    return replace(s, mixers=mixers, sliding_window=windows.pop() if len(windows) == 1 else None)


def llama4_shape(c, common: dict) -> ModelShape:
    """MoE on `config.moe_layers` with one shared expert; dense layers use `intermediate_size_mlp`."""
    moe = set(c.moe_layers)
    ab = bool(getattr(c, "attention_bias", False))
    s = ModelShape(
        **{**common, "sliding_window": None}, num_experts=c.num_local_experts, top_k=c.num_experts_per_tok,
        expert_intermediate=c.intermediate_size, num_shared=1, shared_intermediate=c.intermediate_size,
        dense_intermediate=c.intermediate_size_mlp, moe_layer=tuple(i in moe for i in range(c.num_hidden_layers)),
        q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab, dense_experts=True,
    )
    # chunked layers: a window of attention_chunk_size for the cache and the eager key count (causal_skip=True counts
    # them as a sliding window, an upper bound on the within-chunk keys)
    return _layer_windows(s, c, "chunked_attention", getattr(c, "attention_chunk_size", None))


DENSE_READERS = {"mistral": dense_shape, "llama": dense_shape}


def common_fields(c, model_type: str) -> dict:
    """The fields every decoder-only config has; a clear error naming a missing one."""
    for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        if getattr(c, f, None) is None:
            raise ValueError(f"{type(c).__name__} (model_type={model_type!r}) has no {f!r}; moelab.compute needs it "
                             f"to count parameters. Set config.{f} (e.g. from the model's config.json).")
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return dict(
        model_type=model_type, vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers,
        heads=c.num_attention_heads, kv_heads=kv, head_dim=_head_dim(c),
        tied=bool(getattr(c, "tie_word_embeddings", False)), sliding_window=_window(c),
    )
