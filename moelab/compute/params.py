"""
Parameter counts, total and active per token, by component.

"Active" follows the convention of the Mixtral paper (arXiv:2401.04088, "13B active"): every
parameter except the routed experts a token does not use, i.e. routed experts count k/E of
their total; embeddings, attention, router, shared experts, dense MLPs, norms and the head
count fully. (A token's embedding lookup reads one row, not the table; `flops.py` therefore
gives embeddings 0 FLOPs, and `roofline.py` reads one row per token.)

Tied embeddings (`tie_word_embeddings=True`) are counted once, under `embeddings`; `head` is
then 0 (plus an lm_head bias if any).

Reference numbers (tests/test_compute.py):
    Mixtral 8x7B  46.70B total, 12.88B active      Mistral 7B  7.24B
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..arch.shapes import Mixer
from .shape import ModelShape, model_shape


@dataclass(frozen=True)
class Count:
    """Parameters of one component: `total` stored, `active` used per token."""

    total: int
    active: int


@dataclass(frozen=True)
class ParamCount:
    """Per-component parameter counts; `.total` and `.active` are the sums (ints).

    >>> from moelab.compute import count_params, mixtral_8x7b_config
    >>> p = count_params(mixtral_8x7b_config())
    >>> round(p.total / 1e9, 2), round(p.active / 1e9, 2)
    (46.7, 12.88)
    """

    embeddings: Count  # token embedding table (V x H)
    attention: Count  # token mixers: q, k, v, o projections (+ biases, q/k norms, gates, sinks); Mamba /
    #                   linear-attention / short-conv mixers of hybrid layers (closed forms, moelab.arch.shapes_hybrid)
    router: Count  # Linear(H, E) per MoE layer
    experts: Count  # routed experts: E x 3 x H x I_e per MoE layer; active k/E of it (+ latent projections, fully)
    shared_experts: Count  # always-on shared expert + its gate (qwen2_moe)
    dense_mlp: Count  # SwiGLU MLP of dense layers (all layers of a dense model)
    norms: Count  # pre-attention, pre-MLP and final norms
    head: Count  # lm_head (0 when tied to the embeddings)
    other: Count = Count(0, 0)  # ModelShape.extra_params: gemma4 per-layer input embeddings, hyper-connection mixers

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name).total for f in fields(self))

    @property
    def active(self) -> int:
        return sum(getattr(self, f.name).active for f in fields(self))

    def to_dict(self) -> dict[str, dict[str, int]]:
        """{component: {"total": n, "active": n}} plus a "sum" row."""
        d = {f.name: {"total": getattr(self, f.name).total, "active": getattr(self, f.name).active} for f in fields(self)}
        d["sum"] = {"total": self.total, "active": self.active}
        return d

    def to_frame(self):
        """The breakdown as a pandas DataFrame (rows: components + "sum")."""
        import pandas as pd

        return pd.DataFrame(self.to_dict()).T

    def __str__(self) -> str:
        rows = [f"{'component':<15}{'total':>16}{'active':>16}"]
        for name, c in self.to_dict().items():
            rows.append(f"{name:<15}{c['total']:>16,}{c['active']:>16,}")
        return "\n".join(rows)


def _swiglu(h: int, i: int, bias: bool = False, glu: bool = True) -> int:
    # gate_proj (H->I), up_proj (H->I), down_proj (I->H); experts store gate|up fused, same count.
    # glu=False: up_proj and down_proj only (nemotron_h's relu^2 MLPs)
    if not glu:
        return 2 * h * i + ((i + h) if bias else 0)
    return 3 * h * i + ((2 * i + h) if bias else 0)


def mixer_weights(m: Mixer, hidden: int) -> int:
    """Per-token matmul weights of ONE layer's token mixer (projections; no biases or norms).

    >>> mixer_weights(Mixer(heads=2, kv_heads=1, head_dim=4), hidden=8)  # q 8x8, k 8x4, v 8x4, o 8x8
    192
    """
    if m.kind != "attention" or m.weights:  # closed form computed by the reader (deepseek_v4's attention too)
        return m.weights
    H = hidden
    if m.mla is not None:  # q_a/q_b (or q), kv_a_with_mqa, kv_b, o (DeepSeek-V3 MLA)
        q_rank, kv_rank, nope, rope, v = m.mla
        q = H * q_rank + q_rank * m.heads * (nope + rope) if q_rank else H * m.heads * (nope + rope)
        return q + H * (kv_rank + rope) + kv_rank * m.heads * (nope + v) + m.heads * v * H + _indexer_weights(m, H) \
            + H * m.gate + m.extra_weights
    q, k, v = m.heads * m.head_dim, m.kv_heads * m.head_dim * (m.kv_proj > 0), m.kv_heads * m.vd * (m.kv_proj > 1)
    return H * q + H * k + H * v + m.heads * m.vd * H + H * m.gate + _indexer_weights(m, H) + m.extra_weights


def _indexer_weights(m: Mixer, H: int) -> int:
    if not m.index_heads:
        return 0
    if m.index_q_rank:  # DSA: wq_b (q_rank -> heads x dim), wk (H -> dim), weights_proj (H -> heads)
        return m.index_q_rank * m.index_heads * m.index_dim + H * m.index_dim + H * m.index_heads
    return H * m.index_heads * m.index_dim + H * m.index_dim  # q_proj, k_proj (minimax_m3)


def mixer_params(m: Mixer, hidden: int) -> int:
    """Parameters of ONE layer's token mixer (projections, biases, q/k norms, sinks, gates).

    >>> mixer_params(Mixer(heads=2, kv_heads=1, head_dim=4, q_norm=4, k_norm=4, sinks=True), hidden=8)  # 192 + 8 + 2
    202
    """
    if m.kind != "attention" or m.weights:
        return m.params
    n = mixer_weights(m, hidden) - m.extra_weights + m.extra_params
    if m.mla is not None:
        q_rank, kv_rank, nope, rope, v = m.mla
        return n + (q_rank * (1 + m.q_bias) if q_rank else 0) + kv_rank + (kv_rank + rope) * m.k_bias \
            + hidden * m.o_bias + 2 * m.index_dim * (m.index_heads > 0) + m.k_norm + m.heads * m.sinks
    n += m.heads * m.head_dim * m.q_bias + m.kv_heads * m.head_dim * m.k_bias * (m.kv_proj > 0) \
        + m.kv_heads * m.vd * m.v_bias * (m.kv_proj > 1)
    n += hidden * m.o_bias + m.q_norm + m.k_norm + m.heads * m.sinks + m.gate_bias
    return n + 2 * m.index_dim * (m.index_heads > 0)  # indexer q_norm and k_norm


def attention_weights(s: ModelShape) -> int:
    """Projection weights of ONE attention layer (the first one; what the matmuls multiply by; no biases or norms)."""
    return mixer_weights(next((m for m in s.layer_mixers if m.kind == "attention"), s.attention_mixer), s.hidden)


def attention_params(s: ModelShape) -> int:
    """Attention parameters of ONE layer (the first attention layer: projections, biases, q/k norms, sinks)."""
    return mixer_params(next((m for m in s.layer_mixers if m.kind == "attention"), s.attention_mixer), s.hidden)


def expert_params(s: ModelShape) -> int:
    """Parameters of ONE routed expert (SwiGLU; gpt_oss adds gate_up and down biases; nemotron_h: up/down in the
    latent width)."""
    return _swiglu(s.moe_latent or s.hidden, s.expert_intermediate, s.expert_bias, s.glu)


def latent_params(s: ModelShape) -> int:
    """The latent projections around the experts of ONE MoE layer (nemotron_h `moe_latent_size`; 0 without)."""
    return (2 * s.hidden * s.moe_latent + (s.moe_latent + s.hidden) * s.mlp_bias) if s.moe_latent else 0


def count_params(config) -> ParamCount:
    """Total and active-per-token parameters of a model, from its config alone.

    >>> from moelab.compute import count_params, mistral_7b_config
    >>> round(count_params(mistral_7b_config()).total / 1e9, 2)
    7.24
    """
    s = model_shape(config)
    H, V, L, E, k = s.hidden, s.vocab, s.layers, s.num_experts, s.top_k
    n_moe, n_dense = s.num_moe_layers, s.num_dense_mlp_layers
    norm = H * (2 if s.norm_bias else 1)

    emb = V * H
    attn = sum(mixer_params(m, H) for m in s.layer_mixers)
    router = n_moe * (H * E + (E if s.router_bias else 0) + s.router_extra)
    experts_total = n_moe * (E * expert_params(s) + latent_params(s))
    experts_active = n_moe * (k * expert_params(s) + latent_params(s))
    shared = n_moe * (_swiglu(H, s.shared_intermediate, s.shared_bias and s.shared_intermediate > 0, s.glu)
                      + (H if s.shared_gate else 0))
    dense = n_dense * _swiglu(H, s.dense_intermediate, s.mlp_bias, s.glu)
    if s.mlp_widths:  # per-layer widths, MoE layers included (gemma4)
        dense = sum(_swiglu(H, w, s.mlp_bias, s.glu) for w in s.mlp_widths if w)
    norms = (s.layer_norms * L + 1 + s.moe_norms * n_moe) * norm
    head = (0 if s.tied else V * H) + (V if s.lm_head_bias else 0)

    full = lambda n: Count(n, n)  # noqa: E731
    return ParamCount(
        embeddings=full(emb),
        attention=full(attn),
        router=full(router),
        experts=Count(experts_total, experts_active),
        shared_experts=full(shared),
        dense_mlp=full(dense),
        norms=full(norms),
        head=full(head),
        other=full(s.extra_params),
    )
