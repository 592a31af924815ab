"""Shape readers for the MoE families with standard (softmax) attention beyond the first eight.

    >>> from moelab.arch.tiny import tiny_config
    >>> from moelab.arch.config_shape import model_shape
    >>> s = model_shape(tiny_config("glm4_moe"))
    >>> (s.moe_layer, s.num_shared, s.router_extra)
    ((False, True, True, True), 1, 0)

Each reader is a few lines on top of two helpers: `_mixers` (one attention `Mixer` per layer:
biases, q/k norms, output gates, sinks, sliding windows, per-layer head counts) and `_moe`
(experts, shared experts, dense layers). The layer rule each family uses to choose MoE or dense
MLPs is named in its reader. Every reader is checked by tests/test_compute_families.py against
`sum(p.numel() for p in model.parameters())` and against `FlopCounterMode` on a tiny model, with
the config's optional parts switched on (biases, shared experts, dense layers) where they exist.

Parameter vs buffer: an `e_score_correction_bias` (or `expert_bias`) is counted in `router_extra`
only where the modeling file makes it an `nn.Parameter` (ernie4_5_moe, laguna, afmoe); deepseek-style
routers (glm4_moe, dots1, exaone_moe, beam, hy_v3, kolibri1, mimo_v2_flash, minimax_m2/m3, solar_open)
register it as a buffer, which `model.parameters()` does not count.

Reference: the modeling_*.py files of transformers 5.24 (`__init__` of the Attention, MoE and
DecoderLayer classes).
"""

from __future__ import annotations

from dataclasses import replace

from .shapes import Mixer, ModelShape, deepseek_v3_shape


def _window(c, i: int) -> int | None:
    """Layer i's sliding window: from `layer_types` when the config has it, else the config-wide one."""
    types = getattr(c, "layer_types", None)
    if types:
        return (getattr(c, "sliding_window", None) or None) if types[i] == "sliding_attention" else None
    if getattr(c, "use_sliding_window", True) is False:
        return None
    return getattr(c, "sliding_window", None) or None


def _mixers(c, common: dict, *, bias=("q", "k", "v", "o"), qk_norm: str | None = None, per_layer=None,
            **kw) -> tuple[Mixer, ...]:
    """One attention Mixer per layer. bias: which projections get `config.attention_bias`;
    qk_norm: "head" (RMSNorm over head_dim) or "full" (over all heads, olmo-style) or None;
    per_layer(i) -> dict of per-layer overrides (heads, kv_heads, sinks, ...)."""
    ab = bool(getattr(c, "attention_bias", False))
    out = []
    for i in range(c.num_hidden_layers):
        m = dict(heads=common["heads"], kv_heads=common["kv_heads"], head_dim=common["head_dim"], window=_window(c, i),
                 **{f"{p}_bias": ab and p in bias for p in "qkvo"}, **kw)
        m.update(per_layer(i) if per_layer else {})
        hd = m["head_dim"]
        if qk_norm == "head":
            m.update(q_norm=hd, k_norm=hd)
        elif qk_norm == "full":
            m.update(q_norm=m["heads"] * hd, k_norm=m["kv_heads"] * hd)
        out.append(Mixer(**m))
    return tuple(out)


def _moe(c, common: dict, *, experts: int, top_k: int, expert_width: int, moe_layer, mixers, shared: int = 0,
         num_shared: int | None = None, dense: int = 0, **kw) -> ModelShape:
    # the shape-wide window only when every attention layer has it (memory.fits caps context with it)
    windows = {m.window for m in mixers if m.kind == "attention"}
    common = {**common, "sliding_window": windows.pop() if len(windows) == 1 else None}
    return ModelShape(**common, num_experts=experts, top_k=top_k, expert_intermediate=expert_width,
                      moe_layer=tuple(moe_layer), shared_intermediate=shared,
                      num_shared=(1 if shared else 0) if num_shared is None else num_shared,
                      dense_intermediate=dense, mixers=mixers, **kw)


# --- which layers are MoE ------------------------------------------------------------------------------------


def _sparse_types(c):
    """`config.mlp_layer_types[i] == "sparse"` (glm4_moe_lite, beam, exaone_moe, hy_v3, laguna, mellum, mimo, ...)."""
    return [t == "sparse" for t in c.mlp_layer_types[: c.num_hidden_layers]]  # the list may be longer than L


def _first_k(c):
    """`layer_idx >= config.first_k_dense_replace` (deepseek_v2/v3, glm4_moe, dots1)."""
    return [i >= int(c.first_k_dense_replace or 0) for i in range(c.num_hidden_layers)]


def _all(c):
    return [True] * c.num_hidden_layers


def _qwen_rule(c):
    """flint (qwen2_moe rule): not in `mlp_only_layers` and `(i + 1) % decoder_sparse_step == 0`."""
    only = set(getattr(c, "mlp_only_layers", None) or [])
    step = getattr(c, "decoder_sparse_step", 1) or 1
    return [(i not in only) and c.num_experts > 0 and (i + 1) % step == 0 for i in range(c.num_hidden_layers)]


# --- readers ---------------------------------------------------------------------------------------------------


def mla_moe_shape(c, common: dict) -> ModelShape:
    """DeepSeek-V3 MLA attention (see `moelab.arch.shapes.deepseek_v3_shape`) under other layer stacks:
    deepseek_v2 (dense / shared-expert biases from `mlp_bias`), glm4_moe_lite, sarvam_mla, axk1 (+ a
    post-MoE RMSNorm), deepseek_v32 and glm_moe_dsa (+ a DSA indexer on every layer), dots3_note_text (+ a
    RMSNorm on the rotary k, a per-head output gate, a DSA indexer on "indexed_attention" layers, sliding
    windows). MoE layers from `mlp_layer_types` when the config has them, else `first_k_dense_replace`."""
    mt, L = common["model_type"], c.num_hidden_layers
    moe = _sparse_types(c) if getattr(c, "mlp_layer_types", None) else _first_k(c)
    s = deepseek_v3_shape(_Over(c, first_k_dense_replace=0), common)
    mb = bool(getattr(c, "mlp_bias", False)) and mt == "deepseek_v2"
    kw = dict(moe_layer=tuple(moe), mlp_bias=mb, shared_bias=mb, moe_norms=int(mt == "axk1"))
    dsa = dict(index_heads=getattr(c, "index_n_heads", 0), index_dim=getattr(c, "index_head_dim", 0),
               index_q_rank=s.mla[0])
    if mt in ("deepseek_v32", "glm_moe_dsa"):
        kw["mixers"] = (replace(s.attention_mixer, **dsa),) * L
    elif mt == "dots3_note_text":
        types, per_layer = c.layer_types, getattr(c, "per_layer_config", None)  # full-size dots3: heads, ranks vary
        q_rank, _, _, rope, v = s.mla

        def layer(i):
            lc = per_layer[i] if per_layer is not None else c
            heads, nope = lc.num_attention_heads, lc.qk_nope_head_dim
            return dict(heads=heads, kv_heads=heads, head_dim=nope + rope, mla=(q_rank, lc.kv_lora_rank, nope, rope, v),
                        window=_window(c, i), k_norm=rope, gate=heads,
                        **(dsa if types[i] == "indexed_attention" else {}))

        kw["mixers"] = tuple(replace(s.attention_mixer, **layer(i)) for i in range(L))
    return replace(s, **kw)


mla_moe_shape.per_layer = True  # reads config.per_layer_config where a config has one (dots3_note)


class _Over:
    """A config view with some fields replaced (a field the modeling file reads under another name)."""

    def __init__(self, c, **values):
        self._c, self._v = c, values

    def __getattr__(self, name):
        return self._v[name] if name in self._v else getattr(self._c, name)


def glm4_moe_shape(c, common: dict) -> ModelShape:
    """glm4_moe, sarvam_moe: q/k/v biases (`attention_bias`), optional per-head q/k norm (`use_qk_norm`)."""
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_first_k(c), dense=c.intermediate_size,
                shared=c.moe_intermediate_size * int(c.n_shared_experts or 0), num_shared=int(c.n_shared_experts or 0),
                mixers=_mixers(c, common, bias="qkv", qk_norm="head" if getattr(c, "use_qk_norm", False) else None))


def dots1_shape(c, common: dict) -> ModelShape:
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_first_k(c), dense=c.intermediate_size,
                shared=c.moe_intermediate_size * int(c.n_shared_experts or 0), num_shared=int(c.n_shared_experts or 0),
                mixers=_mixers(c, common, qk_norm="head"))


def ernie4_5_moe_shape(c, common: dict) -> ModelShape:
    """`use_bias` on attention, MLPs and lm_head; the router's e_score_correction_bias is a Parameter;
    MoE on `(i + 1) % moe_layer_interval == 0` within [moe_layer_start_index, moe_layer_end_index]."""
    ub, L = bool(getattr(c, "use_bias", False)), c.num_hidden_layers
    end = L - 1 if c.moe_layer_end_index == -1 else c.moe_layer_end_index
    moe = [(i + 1) % c.moe_layer_interval == 0 and c.moe_layer_start_index <= i <= end for i in range(L)]
    ns = int(getattr(c, "moe_num_shared_experts", 0) or 0)
    return _moe(c, common, experts=c.moe_num_experts, top_k=c.moe_k, expert_width=c.moe_intermediate_size,
                moe_layer=moe, dense=c.intermediate_size, shared=c.moe_intermediate_size * ns, num_shared=ns,
                mlp_bias=ub, shared_bias=ub, lm_head_bias=ub, router_extra=c.moe_num_experts,
                mixers=_mixers(_Over(c, attention_bias=ub), common))


def hunyuan_v1_moe_shape(c, common: dict) -> ModelShape:
    """Per-head q/k norm, experts and the always-on shared MLP both `intermediate_size` wide, every layer MoE."""
    if not isinstance(c.num_experts, int) or not isinstance(c.moe_topk, int):
        raise ValueError(f"hunyuan_v1_moe with per-layer num_experts={c.num_experts!r} / moe_topk={c.moe_topk!r}: "
                         "moelab.compute counts one expert count for all layers; give ints")
    return _moe(c, common, experts=c.num_experts, top_k=c.moe_topk, expert_width=c.intermediate_size,
                moe_layer=_all(c), shared=c.intermediate_size, mixers=_mixers(c, common, qk_norm="head"))


def olmo_style_shape(c, common: dict) -> ModelShape:
    """flex_olmo, minimax_m2: every layer MoE (`num_experts` / `num_local_experts` x `intermediate_size`),
    q/k RMSNorm over the whole projection; minimax_m2 has no attention biases."""
    E = getattr(c, "num_experts", None) or c.num_local_experts
    bias = () if common["model_type"] == "minimax_m2" else ("q", "k", "v", "o")
    return _moe(c, common, experts=E, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=_all(c), mixers=_mixers(c, common, bias=bias, qk_norm="full"))


def granitemoe_shape(c, common: dict) -> ModelShape:
    """granitemoe, granitemoeshared (shared MLP of `shared_intermediate_size`, none when 0),
    granitemoe_swa (+ sinks)."""
    return _moe(c, common, experts=c.num_local_experts, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=_all(c), shared=int(getattr(c, "shared_intermediate_size", 0) or 0),
                mixers=_mixers(c, common, sinks=common["model_type"] == "granitemoe_swa"))


def aria_text_shape(c, common: dict) -> ModelShape:
    ns = int(c.moe_num_shared_experts or 0)
    return _moe(c, common, experts=c.moe_num_experts, top_k=c.moe_topk, expert_width=c.intermediate_size,
                moe_layer=_all(c), shared=c.intermediate_size * ns, num_shared=ns,
                shared_bias=bool(getattr(c, "mlp_bias", False)), mixers=_mixers(c, common))


def afmoe_shape(c, common: dict) -> ModelShape:
    """Gated attention (Linear(H, heads*head_dim) gate), 4 norms per layer, first `num_dense_layers` dense,
    `expert_bias` Parameter."""
    hd = common["head_dim"]
    ns = int(c.num_shared_experts or 0)
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=[i >= c.num_dense_layers for i in range(c.num_hidden_layers)], dense=c.intermediate_size,
                shared=c.moe_intermediate_size * ns, num_shared=ns, router_extra=c.num_experts, layer_norms=4,
                mixers=_mixers(c, common, qk_norm="head", gate=common["heads"] * hd))


def beam_shape(c, common: dict) -> ModelShape:
    """Gated attention with a per-head gate bias, 4 norms per layer, `mlp_layer_types`, no shared experts."""
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_sparse_types(c), dense=c.intermediate_size,
                layer_norms=4, mixers=_mixers(c, common, qk_norm="head", gate=common["heads"] * common["head_dim"],
                                              gate_bias=common["heads"]))


def cohere2_moe_shape(c, common: dict) -> ModelShape:
    """Parallel block (one norm per layer); dense layers use `prefix_dense_intermediate_size`."""
    ns = int(c.num_shared_experts or 0)
    dense = getattr(c, "prefix_dense_intermediate_size", None) or 0
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=_sparse_types(c), dense=dense, shared=c.intermediate_size * ns, num_shared=ns,
                layer_norms=1, mixers=_mixers(c, common))


def exaone_moe_shape(c, common: dict) -> ModelShape:
    ns = int(c.num_shared_experts or 0)
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_sparse_types(c), dense=c.intermediate_size, shared=c.moe_intermediate_size * ns,
                num_shared=ns, mixers=_mixers(c, common, bias=(), qk_norm="head"))


def flint_shape(c, common: dict) -> ModelShape:
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_qwen_rule(c), dense=c.intermediate_size, shared=c.shared_expert_intermediate_size,
                mixers=_mixers(c, common, qk_norm="head", sinks=True))


def hy_v3_shape(c, common: dict) -> ModelShape:
    """`mlp_bias` on the dense and shared MLPs."""
    ns, mb = int(c.num_shared_experts or 0), bool(getattr(c, "mlp_bias", False))
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_sparse_types(c), dense=c.intermediate_size, shared=c.moe_intermediate_size * ns,
                num_shared=ns, mlp_bias=mb, shared_bias=mb, mixers=_mixers(c, common, qk_norm="head"))


def kolibri1_shape(c, common: dict) -> ModelShape:
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_all(c), shared=c.shared_expert_intermediate_size, layer_norms=4,
                mixers=_mixers(c, common, bias=(), qk_norm="head"))


def laguna_shape(c, common: dict) -> ModelShape:
    """Per-layer query heads (`num_attention_heads_per_layer`), a g_proj gate (per head or per channel),
    e_score_correction_bias as a Parameter."""
    heads = list(getattr(c, "num_attention_heads_per_layer", None) or [common["heads"]] * c.num_hidden_layers)
    per_head = c.gating is True or c.gating == "per-head"
    hd = common["head_dim"]
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_sparse_types(c), dense=c.intermediate_size, shared=c.shared_expert_intermediate_size,
                router_extra=c.num_experts,
                mixers=_mixers(c, common, qk_norm="head",
                               per_layer=lambda i: dict(heads=heads[i], gate=heads[i] * (1 if per_head else hd))))


def mellum_shape(c, common: dict) -> ModelShape:
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=_sparse_types(c), dense=c.intermediate_size, mixers=_mixers(c, common, qk_norm="head"))


def mimo_v2_flash_shape(c, common: dict) -> ModelShape:
    """Sliding layers have 2x the KV heads and sinks; v/o use `v_head_dim`; o_proj has no bias."""
    sliding = [t == "sliding_attention" for t in c.layer_types]
    kv = common["kv_heads"]
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_sparse_types(c), dense=c.intermediate_size,
                mixers=_mixers(c, common, bias="qkv", v_head_dim=c.v_head_dim,
                               per_layer=lambda i: dict(kv_heads=kv * (2 if sliding[i] else 1), sinks=sliding[i])))


def minimax_m3_shape(c, common: dict) -> ModelShape:
    """minimax_m3_vl_text: per-head q/k norm, a top-k block indexer on "minimax_m3_sparse" layers
    (`index_n_heads` x `index_head_dim`), dense layers of `dense_intermediate_size`, one shared expert."""
    sparse = [t == "minimax_m3_sparse" for t in c.layer_types]
    nh, d = c.index_n_heads, c.index_head_dim
    return _moe(c, common, experts=c.num_local_experts, top_k=c.num_experts_per_tok, expert_width=c.intermediate_size,
                moe_layer=_sparse_types(c), dense=c.dense_intermediate_size, shared=c.shared_intermediate_size,
                mixers=_mixers(c, common, bias=(), qk_norm="head", per_layer=lambda i: dict(
                    index_heads=nh if sparse[i] else 0, index_dim=d if sparse[i] else 0)))


def solar_open_shape(c, common: dict) -> ModelShape:
    ns = int(c.n_shared_experts or 0)
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_all(c), shared=c.moe_intermediate_size * ns,
                num_shared=ns, mixers=_mixers(c, common, bias="qkv"))


def dbrx_shape(c, common: dict) -> ModelShape:
    """Fused Wqkv, LayerNorms without bias (one weight each), every layer MoE; the sizes live in the sub-configs
    `attn_config` (kv_n_heads) and `ffn_config` (moe_num_experts, moe_top_k, ffn_hidden_size)."""
    ffn, attn = c.ffn_config, c.attn_config
    common = {**common, "kv_heads": attn.kv_n_heads}
    return _moe(c, common, experts=ffn.moe_num_experts, top_k=ffn.moe_top_k, expert_width=ffn.ffn_hidden_size,
                moe_layer=_all(c), mixers=_mixers(c, common, bias=()))
