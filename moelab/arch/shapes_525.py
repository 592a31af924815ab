"""Shape readers for the MoE families new in transformers 5.25: ergo, kolibri1_1, minicpm5_moe (param2moe builds
GLM-4-MoE's modules and reads `moelab.arch.shapes_families.glm4_moe_shape`).

    >>> from types import SimpleNamespace
    >>> from moelab.arch.shapes import common_fields
    >>> c = SimpleNamespace(vocab_size=128, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
    ...                     num_key_value_heads=2, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
    ...                     first_dense_intermediate_size=64, shared_intermediate_size=32, sliding_window=64,
    ...                     layer_types=["sliding_attention"] * 3 + ["full_attention"],
    ...                     mlp_layer_types=["dense", "sparse", "sparse", "sparse"])   # an ErgoConfig's fields
    >>> s = ergo_shape(c, common_fields(c, "ergo"))
    >>> (s.glu, s.moe_layer, s.num_shared, [m.window for m in s.mixers])
    (False, (False, True, True, True), 1, [64, 64, 64, None])

What each adds beyond the readers of
`moelab.arch.shapes_families`:
    ergo          fused qkv projection, per-head q/k RMSNorm, head_dim = hidden / heads; sliding layers except every
                  `global_attention_every_n_layers`-th; relu^2 MLPs without a gate (dense MLP of the first
                  `num_dense_blocks` layers, shared expert, routed experts); the shared expert ends in an RMSNorm; each
                  routed expert's output goes through that expert's own RMSNorm (an (E, H) weight per MoE layer, all
                  of it counted active, as the gradient of one token reaches every row's slot of the gathered weight);
                  4 norms and 2 learned residual gates (H weights each) per layer
    kolibri1_1    Kolibri 1's block (4 norms, per-head q/k RMSNorm, one shared expert) with dense MLPs of
                  `mlp_only_intermediate_size` on `mlp_only_layers`, and layers that read another layer's keys and
                  values (`kv_source_layers`): no k_proj, v_proj or k_norm there. Its sparse-attention indexers have no
                  weights; their scoring matmuls (the first `index_num_heads` query heads against every key) run only
                  for queries that see more than index_topk + index_num_local_tokens + index_num_sink_tokens keys
                  (2184 by default; pool selection past `index_pool_size`), and are NOT counted by forward_flops:
                  the count is exact below that context
    minicpm5_moe  DeepSeek-V3 MoE (shared experts n_shared_experts x moe_intermediate_size), `mlp_layer_types`,
                  attention with a fused q + output-gate projection (q_gate_proj, H -> 2 heads x head_dim, biased like
                  k/v/o by `attention_bias`)

Reference: the modeling_*.py files of transformers 5.25 (`__init__` of the Attention, MoE and DecoderLayer classes);
tests/test_compute_families.py checks each against `model.parameters()` and FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import replace

from .shapes import ModelShape
from .shapes_families import _mixers, _moe, _sparse_types


def ergo_shape(c, common: dict) -> ModelShape:
    E = c.num_experts
    moe = _sparse_types(c)
    common = {**common, "head_dim": c.hidden_size // c.num_attention_heads}  # ErgoAttention ignores any head_dim
    return _moe(c, common, experts=E, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=moe, dense=c.first_dense_intermediate_size, shared=c.shared_intermediate_size, num_shared=1,
                glu=False, layer_norms=6, moe_norms=1, extra_params=E * c.hidden_size * sum(moe),
                mixers=_mixers(c, common, bias=(), qk_norm="head"))


def kolibri1_1_shape(c, common: dict) -> ModelShape:
    L = c.num_hidden_layers
    only = set(c.mlp_only_layers or [])
    reuse = [src != i for i, src in enumerate(c.kv_source_layers)]
    mixers = tuple(replace(m, kv_proj=0, k_norm=0) if reuse[i] else m
                   for i, m in enumerate(_mixers(c, common, bias=(), qk_norm="head")))
    return _moe(c, common, experts=c.num_experts, top_k=c.num_experts_per_tok, expert_width=c.moe_intermediate_size,
                moe_layer=[i not in only for i in range(L)], dense=c.mlp_only_intermediate_size,
                shared=c.shared_expert_intermediate_size, layer_norms=4, mixers=mixers)


def minicpm5_moe_shape(c, common: dict) -> ModelShape:
    ns, ab = int(c.n_shared_experts or 0), bool(getattr(c, "attention_bias", False))
    q = common["heads"] * common["head_dim"]
    return _moe(c, common, experts=c.n_routed_experts, top_k=c.num_experts_per_tok,
                expert_width=c.moe_intermediate_size, moe_layer=_sparse_types(c), dense=c.intermediate_size,
                shared=c.moe_intermediate_size * ns, num_shared=ns,
                mixers=_mixers(c, common, gate=q, gate_bias=q * ab))
