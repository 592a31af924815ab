"""
The architecture numbers that compute accounting needs, read from a transformers config.

Every accounting function in `moelab.compute` (params, FLOPs, memory, roofline) works on a
`ModelShape`: a flat record of the few integers that decide the cost of a decoder-only
transformer with (optionally) Mixture-of-Experts MLPs. `model_shape(config)` reads one from a
transformers config object or a plain dict (with a "model_type" key), so the accounting never
touches a model's weights.

Supported model types (what each adds to the plain Llama/Mistral block):
    mistral, llama   dense SwiGLU MLP (llama: optional attention/MLP biases)
    mixtral          E experts, top-k softmax router                       (arXiv:2401.04088)
    phimoe           Mixtral + LayerNorm with bias, optional attention / lm_head biases
    qwen2_moe        fine-grained experts + 1 shared expert with a sigmoid gate, qkv biases,
                     dense layers via `mlp_only_layers` / `decoder_sparse_step`
    qwen3_moe        fine-grained experts, per-head q/k RMSNorm, same sparse-layer rule
    olmoe            fine-grained experts, q/k RMSNorm over the full projection (arXiv:2409.02060)

References: the modeling_*.py files of transformers 5.x (the parameter shapes here are the
ones those modules create; tests check the sum against `model.parameters()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUPPORTED_MODEL_TYPES = ("mixtral", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "mistral", "llama")


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

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and any(self.moe_layer)

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layer)

    @property
    def num_dense_layers(self) -> int:
        return self.layers - self.num_moe_layers


def as_config(config):
    """A transformers config object from a config object or a dict with a "model_type" key.

    >>> as_config({"model_type": "mistral", "hidden_size": 64}).hidden_size
    64
    """
    if isinstance(config, dict):
        if "model_type" not in config:
            raise ValueError(
                f"config dict has no 'model_type' key (keys: {sorted(config)[:8]}...); "
                f"add one of {SUPPORTED_MODEL_TYPES}, e.g. {{'model_type': 'mixtral', ...}}"
            )
        from transformers import AutoConfig

        d = dict(config)
        return AutoConfig.for_model(d.pop("model_type"), **d)
    return config


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


def model_shape(config) -> ModelShape:
    """Read a `ModelShape` from a transformers config (or a dict with "model_type").

    >>> from transformers import MixtralConfig
    >>> model_shape(MixtralConfig(num_hidden_layers=2)).layers
    2
    """
    if isinstance(config, ModelShape):
        return config
    c = as_config(config)
    mt = getattr(c, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type {mt!r} is not supported by moelab.compute; supported: {SUPPORTED_MODEL_TYPES}. "
            "Add its parameter shapes to moelab/compute/shape.py (and a test against model.parameters())."
        )
    L = c.num_hidden_layers
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    common = dict(
        model_type=mt,
        vocab=c.vocab_size,
        hidden=c.hidden_size,
        layers=L,
        heads=c.num_attention_heads,
        kv_heads=kv,
        head_dim=_head_dim(c),
        tied=bool(getattr(c, "tie_word_embeddings", False)),
        sliding_window=_window(c),
    )
    if mt in ("mistral", "llama"):
        ab = bool(getattr(c, "attention_bias", False))
        return ModelShape(
            **common, dense_intermediate=c.intermediate_size, moe_layer=(False,) * L,
            q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab, mlp_bias=bool(getattr(c, "mlp_bias", False)),
        )
    if mt in ("mixtral", "phimoe"):
        ab = bool(getattr(c, "attention_bias", False))
        return ModelShape(
            **common, num_experts=c.num_local_experts, top_k=c.num_experts_per_tok,
            expert_intermediate=c.intermediate_size, moe_layer=(True,) * L,
            q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab,
            norm_bias=(mt == "phimoe"), lm_head_bias=bool(getattr(c, "lm_head_bias", False)),
        )
    if mt == "olmoe":
        ab = bool(getattr(c, "attention_bias", False))
        return ModelShape(
            **common, num_experts=c.num_experts, top_k=c.num_experts_per_tok,
            expert_intermediate=c.intermediate_size, moe_layer=(True,) * L,
            q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab,
            q_norm=c.hidden_size, k_norm=(c.hidden_size // c.num_attention_heads) * kv,
        )
    E = c.num_experts
    if mt == "qwen2_moe":
        qb = bool(getattr(c, "qkv_bias", True))
        return ModelShape(
            **common, num_experts=E, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
            shared_intermediate=c.shared_expert_intermediate_size, shared_gate=True,
            dense_intermediate=c.intermediate_size, moe_layer=_sparse_layers(c, E),
            q_bias=qb, k_bias=qb, v_bias=qb,
        )
    # qwen3_moe
    ab = bool(getattr(c, "attention_bias", False))
    hd = common["head_dim"]
    return ModelShape(
        **common, num_experts=E, top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
        dense_intermediate=c.intermediate_size, moe_layer=_sparse_layers(c, E),
        q_bias=ab, k_bias=ab, v_bias=ab, o_bias=ab, q_norm=hd, k_norm=hd,
    )
