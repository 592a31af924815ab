"""
Forward-pass FLOPs by component, prefill and decode, with attention as a function of context.

Convention: 1 multiply-add = 2 FLOPs, and only matrix multiplications are counted (the same
thing `torch.utils.flop_counter.FlopCounterMode` counts). Elementwise work -- norms, SiLU,
softmax, RoPE, residual adds, the router's top-k -- is O(H) per token per layer, i.e. about
1/H of the matmul work, and is left out. Biases are left out (FlopCounterMode counts `addmm`
as its matmul). Embedding lookups are 0 FLOPs.

Per token and layer, with H hidden, h query heads of width d, g KV heads, I_e expert width:
    attention_proj     2 * (H*h*d + 2*H*g*d + h*d*H)        q, k, v, o
    attention_scores   2 * h * d * n_keys                   Q K^T
    attention_values   2 * h * d * n_keys                   softmax(QK^T) V
    router             2 * H * E
    experts            2 * k * 3 * H * I_e                  top-k SwiGLU experts
    shared_experts     2 * 3 * H * I_s + 2 * H              (qwen2_moe)
    dense_mlp          2 * 3 * H * I                        (dense layers; 2 * 2 * H * I for relu^2 MLPs)
    mixer              hybrid layers: 2 * projection weights + `conv_flops` + `scan_flops`
and once per token that produces logits: head = 2 * H * V.
Per-layer differences (output gates, per-layer heads or KV heads, sinks, MLA, a sparse-attention
indexer, KV sharing) come from the layer's `Mixer` (moelab.arch.shapes). Parts outside these
components (per-layer input embeddings, hyper-connections, short convs: `ModelShape.extra_weights`,
`extra_convs`) go to `other`. Hybrid layers (Mamba, Mamba-2, gated
DeltaNet, lightning attention, short conv) go to `mixer`: their projections plus `scan_flops` and
`conv_flops`, closed forms of the transformers reference PyTorch paths.
Exactness: tests/test_compute_families.py checks the total against FlopCounterMode on tiny models
of every traced family, for a prefill from an empty cache and for a one-token decode step
(`as_transformers=True` for MLA decode and Llama 4, see `forward_flops`).

n_keys: a forward of S new tokens after P cached tokens. Dense attention kernels (eager,
SDPA math) compute every query against all P+S keys and mask afterwards, so
n_keys = P + S for every query (`causal_skip=False`, the default, and what FlopCounterMode
reports). Kernels that skip masked blocks (FlashAttention) do query i against P+i+1 keys,
capped by a sliding window (`causal_skip=True`). Decode (S=1) gives n_keys = P+1 either way.
A layer with a sliding window W (or a chunk, llama4) caches only the last W-1 tokens (transformers'
DynamicSlidingWindowLayer), so there P becomes min(P, W-1): decode past the window multiplies W keys.

Reference: Kaplan et al. 2020 (arXiv:2001.08361) Table 1 for the per-token accounting;
Chinchilla (arXiv:2203.15556) Appendix F for the attention terms.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .params import mixer_weights
from .shape import model_shape


@dataclass(frozen=True)
class FlopBreakdown:
    """FLOPs of a forward pass (or per token) by component; `.total` sums them.

    >>> from moelab.compute import flops_per_token, mixtral_8x7b_config
    >>> f = flops_per_token(mixtral_8x7b_config(), context=4096, phase="decode")
    >>> f.share("router") < 0.001
    True
    """

    embeddings: float = 0.0
    attention_proj: float = 0.0
    attention_scores: float = 0.0  # Q K^T
    attention_values: float = 0.0  # A V
    mixer: float = 0.0  # recurrent / conv mixers of hybrid layers: projections, depthwise conv, scan matmuls
    router: float = 0.0
    experts: float = 0.0
    shared_experts: float = 0.0
    dense_mlp: float = 0.0
    head: float = 0.0
    other: float = 0.0  # ModelShape.extra_weights and extra_convs (gemma4 per-layer input projections,
    #                     hyper-connections, axk2 gated norms, inkling short convs)

    @property
    def total(self) -> float:
        return float(sum(getattr(self, f.name) for f in fields(self)))

    @property
    def attention(self) -> float:
        """attention_proj + attention_scores + attention_values"""
        return self.attention_proj + self.attention_scores + self.attention_values

    def share(self, component: str) -> float:
        """Fraction of the total spent in `component` (a field name or "attention")."""
        return getattr(self, component) / self.total

    def scale(self, factor: float) -> "FlopBreakdown":
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def to_dict(self) -> dict[str, float]:
        d = {f.name: float(getattr(self, f.name)) for f in fields(self)}
        d["total"] = self.total
        return d


def scan_flops(scan: tuple, batch: int, seq_len: int, past: int = 0) -> float:
    """Matmul FLOPs of a hybrid layer's sequence mixing, as the transformers 5.x reference PyTorch paths compute it
    (what FlopCounterMode sees without the CUDA kernels).

    >>> scan_flops(("mamba", 128, 8), batch=2, seq_len=12)  # 2 * 2 * 12 * 128 * 8
    49152.0

    From an empty cache (past == 0), over `batch` sequences of S = `seq_len` tokens:
        mamba      y_t = h_t C_t per step                                   2 B S I N
        ssd        Mamba-2 chunked scan, c = ceil(S / Q) chunks of Q:
                                                   2 B h [c Q^2 (n + p) + 2 c Q p n + (c+1)^2 p n]
        deltanet   gated delta rule, c = ceil(S / Q) chunks of Q (padded): B h c (4 Q^2 d_k + 2 Q^2 d_v + 6 Q d_k d_v)
        lightning  blocks of b <= block tokens:                             sum_blocks B h (4 b^2 d + 4 b d^2)
    After `past` cached tokens, the recurrent (one-token decode) forms, per new token:
        mamba 2 B I N;  ssd 2 B h p n (y = state C);  deltanet 0 (elementwise);  lightning 4 B h d^2.
    """
    if not scan:
        return 0.0
    kind, B, S = scan[0], batch, seq_len
    if kind == "mamba":
        _, inner, state = scan
        return 2.0 * B * S * inner * state
    if kind == "ssd":
        _, Q, h, p, n = scan
        if past:
            return 2.0 * B * S * h * p * n
        c = -(-S // Q)
        return 2.0 * B * h * (c * Q * Q * (n + p) + 2 * c * Q * p * n + (c + 1) ** 2 * p * n)
    if kind == "deltanet":
        _, Q, h, dk, dv = scan
        if past:
            return 0.0
        c = -(-S // Q)
        return float(B * h * c * (4 * Q * Q * dk + 2 * Q * Q * dv + 6 * Q * dk * dv))
    if kind == "lightning":
        _, block, h, d = scan
        if past:
            return 4.0 * B * S * h * d * d
        sizes = [min(block, S - i) for i in range(0, S, block)]
        return float(sum(B * h * (4 * b * b * d + 4 * b * d * d) for b in sizes))
    if kind in LINEAR_SCANS:  # the families of moelab.arch.shapes_linear
        return LINEAR_SCANS[kind](scan, B, S, past)
    raise ValueError(f"unknown scan kind {kind!r} in {scan!r}; known: mamba, ssd, deltanet, lightning, "
                     f"{', '.join(LINEAR_SCANS)}")


def kda_scan_flops(scan: tuple, batch: int, seq_len: int, past: int = 0) -> float:
    """Matmul FLOPs of Kimi delta attention (KDA: kimi_linear, bailing_hybrid), the transformers 5.x reference
    `chunk_kimi_delta_attention` from an empty cache, c = ceil(S / Q) chunks of Q (padded), per sequence and head:

    >>> kda_scan_flops(("kda", 64, 2, 16, 16), batch=1, seq_len=70)  # 2 heads x 2 chunks x (6 Q^2 16 + 6 Q 16^2)
    1966080.0

        attn @ v_beta, attn @ (k_beta * exp g)                           2 c Q^2 (d_v + d_k)
        per chunk: (q exp g) @ S, k_cumdecay @ S, attn_intra @ v_new,
                   (k exp(..))^T @ v_new                                 c (6 Q d_k d_v + 2 Q^2 d_v)
    so B h c (2 Q^2 d_k + 4 Q^2 d_v + 6 Q d_k d_v). The per-channel decay makes the intra-chunk scores
    (k_beta k^T, q k^T with the decay mask) broadcast products and sums, which FlopCounterMode does not count;
    the one-token recurrent step (past > 0) is elementwise too: 0.
    """
    _, Q, h, dk, dv = scan
    if past:
        return 0.0
    c = -(-seq_len // Q)
    return float(batch * h * c * (2 * Q * Q * dk + 4 * Q * Q * dv + 6 * Q * dk * dv))


LINEAR_SCANS = {"kda": kda_scan_flops}  # scan kind -> FLOPs(scan, batch, seq_len, past), see `scan_flops`


def conv_flops(conv: tuple | None, batch: int, seq_len: int, past: int = 0) -> float:
    """FLOPs FlopCounterMode gives a depthwise causal Conv1d of C channels, kernel K.

    >>> conv_flops((128, 4), batch=2, seq_len=12)  # 2 * 2 * (12 + 3) * 4 * 128
    30720.0

    From an empty cache it is padded
    by K - 1 (S + K - 1 outputs per channel); a cached step convolves the K cached inputs and the S new ones
    unpadded (S + 1 outputs, the reference `causal_conv1d_update`). 2 x outputs x K x C per sequence."""
    if not conv:
        return 0.0
    C, K = conv
    outputs = seq_len + 1 if past else seq_len + K - 1
    return 2.0 * batch * outputs * K * C


def compressed_attention_keys(m, batch: int, seq_len: int, past: int = 0, causal_skip: bool = False):
    """(keys summed over the new queries, indexer FLOPs) of a deepseek_v4 compressed-attention layer
    (`Mixer.compress = (rate, index_heads, index_dim)`; rate 0: a sliding layer), as its transformers 5.x eager code
    runs it.

    >>> from moelab.arch.shapes import Mixer
    >>> m = Mixer(heads=4, head_dim=16, window=64, compress=(4, 2, 8))
    >>> compressed_attention_keys(m, batch=2, seq_len=12)  # 2 x 12 x (12 + 3) keys; 2 x 2 x 12 x 2 x 8 x 3
    (360.0, 2304.0)

    The sliding cache keeps window - 1 tokens, so each of the S new queries multiplies min(P, window - 1) + S local
    keys (`causal_skip`: the window-capped causal count instead) and all n = (P + S) // rate compressed entries the
    compressor has emitted so far; a CSA layer's indexer scores every query against them: 2 B S h_i d_i n."""
    rate, index_heads, index_dim = m.compress
    n = (past + seq_len) // rate if rate else 0
    local = _keys_sum(seq_len, past, causal_skip, m.window)
    return float(batch * (local + seq_len * n)), 2.0 * batch * seq_len * index_heads * index_dim * n


def _keys_sum(S: int, P: int, causal_skip: bool, window: int | None) -> float:
    """Sum over the S new queries of the number of keys each is multiplied with.

    A windowed layer's cache (transformers' DynamicSlidingWindowLayer, sliding and chunked layers alike) keeps the last
    window - 1 tokens, so a dense kernel multiplies each new query with min(P, window - 1) + S keys:

    >>> _keys_sum(1, 70, False, 16), _keys_sum(1, 70, False, None), _keys_sum(3, 70, False, 16)  # 15 + 1, 70 + 1, 3 x 18
    (16.0, 71.0, 54.0)
    """
    if not causal_skip:
        return float(S * ((min(P, window - 1) if window else P) + S))
    if window is None:
        return float(S * P + S * (S + 1) / 2)
    return float(sum(min(P + i + 1, window) for i in range(S)))


def _blocks_sum(S: int, P: int, block: int) -> int:
    """Sum over the S new queries (P + 1 ... P + S visible keys) of the complete key blocks each scores:
    sum_n floor(n / block) for n = P+1 .. P+S, from F(N) = sum_{n<=N} floor(n / b) = b q (q - 1) / 2 + q (N % b + 1),
    q = N // b."""
    def F(N):
        q = N // block
        return block * q * (q - 1) // 2 + q * (N % block + 1)

    return F(P + S) - F(P)


def forward_flops(
    config,
    batch: int = 1,
    seq_len: int = 1,
    past: int = 0,
    logits: str = "all",
    causal_skip: bool = False,
    as_transformers: bool = False,
) -> FlopBreakdown:
    """Matmul FLOPs of one forward pass over `batch` x `seq_len` new tokens after `past` cached ones.

    logits: "all" (every position, like `model(input_ids)`), "last" (one per sequence, like
    `generate` / `logits_to_keep=1`) or "none".
    as_transformers: also count two things the transformers 5.x eager code computes beyond the usual accounting
    (what FlopCounterMode sees on such a model): MLA models cache the compressed latent and re-expand every
    cached position through kv_b_proj each step (2 B (P+S) r_kv h (d_nope + d_v) per layer instead of for the
    S new tokens); Llama 4's experts run every expert on every token (E, not k, expert MLPs per token).
    Hybrid layers with a cache (past > 0) follow the one-token decode path (`scan_flops`, `conv_flops`).

    >>> from transformers import MistralConfig
    >>> c = MistralConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...                   num_attention_heads=2, num_key_value_heads=1, sliding_window=None)
    >>> forward_flops(c, seq_len=1).total  # 2*192 q,k,v,o + 2*2*(2*4*1) QK^T,AV + 2*384 MLP + 2*80 head
    1344.0
    """
    if logits not in ("all", "last", "none"):
        raise ValueError(f"logits={logits!r}: use 'all', 'last' or 'none'")
    s = model_shape(config)
    H, T = s.hidden, batch * seq_len
    n_moe, n_dense = s.num_moe_layers, s.num_dense_mlp_layers
    proj = attn_qk = attn_av = mixer = 0.0
    for m in s.layer_mixers:
        if m.kind != "attention":  # recurrent / conv mixers (see module docstring)
            mixer += 2.0 * mixer_weights(m, H) * T + scan_flops(m.scan, batch, seq_len, past)
            mixer += conv_flops(m.conv, batch, seq_len, past)
            continue
        proj += 2.0 * mixer_weights(m, H) * T
        if m.mla and as_transformers:  # kv_b_proj re-expands the P cached latents too
            cached = min(past, m.window - 1) if m.window else past  # a sliding layer keeps window - 1 latents
            proj += 2.0 * m.mla[1] * m.heads * (m.mla[2] + m.mla[4]) * batch * cached
        keys = batch * _keys_sum(seq_len, past, causal_skip, m.window)
        if m.compress:  # deepseek_v4: a truncated sliding cache plus compressed entries, scored by an indexer
            keys, index_flops = compressed_attention_keys(m, batch, seq_len, past, causal_skip)
            attn_qk += index_flops
        qk_dim, v_dim = (m.mla[2] + m.mla[3], m.mla[4]) if m.mla else (m.head_dim, m.vd)
        index_width = m.index_dim + (1 if m.index_q_rank else 0)  # DSA also weights the heads: [1, h] @ [h, keys]
        index_keys = _blocks_sum(seq_len, past, m.index_block) if m.index_block else seq_len * (past + seq_len)
        attn_qk += 2.0 * (m.heads * qk_dim * keys + m.index_heads * index_width * batch * index_keys)
        attn_av += 2.0 * m.heads * v_dim * keys
    n_logits = {"all": T, "last": batch, "none": 0}[logits]
    g = 3 if s.glu else 2  # matmuls per MLP: gate, up, down (or up, down)
    k_run = s.num_experts if s.dense_experts and as_transformers else s.top_k  # expert MLPs run per token
    return FlopBreakdown(
        attention_proj=proj,
        attention_scores=attn_qk,
        attention_values=attn_av,
        mixer=mixer,
        router=2.0 * H * s.num_experts * T * n_moe,
        experts=(2.0 * k_run * g * (s.moe_latent or H) * s.expert_intermediate + 4.0 * H * s.moe_latent) * T * n_moe,
        shared_experts=(2.0 * g * H * s.shared_intermediate + 2.0 * H * s.shared_gate) * T * n_moe,
        dense_mlp=2.0 * g * H * (sum(s.mlp_widths) if s.mlp_widths else s.dense_intermediate * n_dense) * T,
        head=2.0 * H * s.vocab * n_logits,
        other=2.0 * s.extra_weights * T + sum(conv_flops(cv, batch, seq_len, past) for cv in s.extra_convs),
    )


def flops_per_token(
    config,
    context: int = 2048,
    phase: str = "decode",
    causal_skip: bool = False,
    include_head: bool = True,
) -> FlopBreakdown:
    """FLOPs per token: prefill of a `context`-token prompt (averaged over its tokens), or
    one decode step with `context` tokens already in the KV cache.

    >>> from moelab.compute import mixtral_8x7b_config
    >>> round(flops_per_token(mixtral_8x7b_config(), context=0, phase="decode").total / 1e9, 1)
    25.5
    """
    logits = "all" if include_head else "none"
    if phase == "prefill":
        if context < 1:
            raise ValueError(f"prefill needs context >= 1 prompt tokens, got context={context}")
        return forward_flops(config, 1, context, 0, logits, causal_skip).scale(1.0 / context)
    if phase == "decode":
        return forward_flops(config, 1, 1, context, logits, causal_skip)
    raise ValueError(f"phase={phase!r}: use 'prefill' or 'decode'")


def router_share(config, context: int = 2048, phase: str = "decode") -> float:
    """Fraction of forward FLOPs spent in the router matmul(s).

    >>> from moelab.compute import mixtral_8x7b_config
    >>> f"{router_share(mixtral_8x7b_config(), context=4096):.4%}"
    '0.0076%'
    """
    return flops_per_token(config, context=context, phase=phase).share("router")
