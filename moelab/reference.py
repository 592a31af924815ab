"""A hand-written top-k MoE forward (notebook 01's einops block), independent of transformers' experts code.

    >>> import torch
    >>> from transformers import MixtralConfig, MixtralForCausalLM
    >>> cfg = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                     num_attention_heads=2, num_key_value_heads=1, num_local_experts=8, num_experts_per_tok=2)
    >>> block = MixtralForCausalLM(cfg).eval().model.layers[0].mlp
    >>> x = torch.randn(6, 16)
    >>> torch.allclose(moe_forward(block, x), block(x[None])[0], atol=1e-5)
    True

Used by tests as the reference for interventions (e.g. top-k = 1 against `moelab.intervene(model,
top_k=1)`). Mixtral semantics (Jiang et al. 2024, eq. 2): softmax over all E logits, top-k,
renormalise, SwiGLU experts `down(silu(gate(x)) * up(x))`, weighted sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum


def route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral routing: (weights (tokens, k) summing to 1, index (tokens, k))."""
    top_p, top_i = logits.float().softmax(-1).topk(k, dim=-1)  # (tokens, k)
    return top_p / top_p.sum(-1, keepdim=True), top_i


def moe_forward(block, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Output (tokens, H) of a MixtralSparseMoeBlock `block` on hidden states `x` (tokens, H), top-`k`."""
    k = block.gate.top_k if k is None else k
    W_g = block.gate.weight                      # (E, H)
    W_gu = block.experts.gate_up_proj            # (E, 2I, H)
    W_d = block.experts.down_proj                # (E, H, I)
    logits = einsum(x, W_g, "t h, e h -> t e")   # (tokens, E)
    weights, top_i = route(logits, k)            # (tokens, k)
    gate_up = einsum(x, W_gu[top_i], "t h, t k i2 h -> t k i2")   # (tokens, k, 2I)
    gate, up = gate_up.chunk(2, dim=-1)                           # (tokens, k, I)
    out = einsum(F.silu(gate) * up, W_d[top_i], "t k i, t k h i -> t k h")   # (tokens, k, H)
    return einsum(out, weights.to(out.dtype), "t k h, t k -> t h")          # (tokens, H)


def model_forward(model, input_ids: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Logits of a Mixtral model whose every MoE block is replaced by `moe_forward(..., k)`.

    Swaps each block's forward for the duration of the call (forward hooks would not do: they run
    after the real block), then restores it; the model's parameters are never written.
    """
    blocks = [layer.mlp for layer in model.model.layers]
    try:
        for b in blocks:
            b.forward = (lambda blk: lambda h: moe_forward(blk, h.reshape(-1, h.shape[-1]), k).reshape(h.shape))(b)
        with torch.no_grad():
            return model(input_ids).logits
    finally:
        for b in blocks:
            b.__dict__.pop("forward", None)  # back to the class's forward
