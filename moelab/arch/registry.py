"""The registry: one `Adapter` per MoE architecture, and which model types are not covered (with why).

    >>> from moelab.arch.registry import ADAPTERS, UNSUPPORTED
    >>> [a.name for a in ADAPTERS][:5]
    ['mixtral', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'phimoe']
    >>> "jetmoe" in UNSUPPORTED
    True

Adding an architecture = one `Adapter(...)` here (its shape reader in `moelab.arch.shape`
when `moelab.compute` should count it) plus nothing else: the registry sweep
(tests/test_arch_sweep.py) builds a tiny random config of every MoE model type in the
installed transformers and checks parity with what its experts module received.
A router that does not return its raw logits names the child module that computes them
(`logits_from`, Gemma 4). Scoring names: softmax (over all E), sigmoid, softmax_topk
(softmax over the k chosen logits, so the weights sum to 1), sparsemixer (PhiMoE).
"""

from __future__ import annotations

from . import shapes as S
from . import shapes_families as F
from . import shapes_hybrid as H
from . import shapes_linear as LIN
from . import shapes_extra as X
from . import shapes_525 as N
from .base import Adapter

A = Adapter
_DS = dict(scoring="sigmoid", renormalised="norm_topk_prob", shared_attr="n_shared_experts",
           scaling_attr="routed_scaling_factor", group_attrs=("n_group", "topk_group"), selection_bias=True)

ADAPTERS: tuple[Adapter, ...] = (
    A("mixtral", ("mixtral",), ("MixtralTopKRouter",), "num_local_experts", shape=S.mixtral_shape),
    A("qwen2_moe", ("qwen2_moe",), ("Qwen2MoeTopKRouter",), "num_experts", renormalised="norm_topk_prob",
      shared_attr="shared_expert_intermediate_size", shared_is_width=True, shape=S.qwen2_moe_shape),
    A("qwen3_moe", ("qwen3_moe",), ("Qwen3MoeTopKRouter",), "num_experts", renormalised="norm_topk_prob",
      shape=S.qwen3_moe_shape),
    A("olmoe", ("olmoe",), ("OlmoeTopKRouter",), "num_experts", renormalised="norm_topk_prob", shape=S.olmoe_shape),
    A("phimoe", ("phimoe",), ("PhimoeTopKRouter",), "num_local_experts", renormalised=False, scoring="sparsemixer",
      shape=S.mixtral_shape),
    A("deepseek_v3", ("deepseek_v3",), ("DeepseekV3TopkRouter",), "n_routed_experts", shape=S.deepseek_v3_shape, **_DS),
    A("deepseek_v2", ("deepseek_v2",), ("DeepseekV2TopkRouter",), "n_routed_experts", renormalised="norm_topk_prob",
      shared_attr="n_shared_experts", scaling_attr="routed_scaling_factor", group_attrs=("n_group", "topk_group"),
      shape=F.mla_moe_shape),
    A("glm4_moe", ("glm4_moe", "sarvam_moe"), ("Glm4MoeTopkRouter",), "n_routed_experts",
      shape=F.glm4_moe_shape, **_DS),
    A("dots1", ("dots1",), ("Dots1TopkRouter",), "n_routed_experts", shape=F.dots1_shape, **_DS),
    A("gpt_oss", ("gpt_oss",), ("GptOssTopKRouter",), "num_local_experts", scoring="softmax_topk",
      shape=S.gpt_oss_shape),
    A("llama4", ("llama4_text", "llama4"), ("Llama4Router",), "num_local_experts", renormalised=False,
      scoring="sigmoid", record="router", logits_at=1, shared_attr=1, shape=S.llama4_shape),
    A("qwen3_next", ("qwen3_next",), ("Qwen3NextTopKRouter",), "num_experts", renormalised="norm_topk_prob",
      shared_attr="shared_expert_intermediate_size", shared_is_width=True, shape=H.qwen3_next_shape),
    A("jamba", ("jamba",), ("JambaTopKRouter",), "num_experts", renormalised=False, shape=H.jamba_shape),
    A("granitemoe", ("granitemoe",), ("GraniteMoeTopKRouter",), "num_local_experts", scoring="softmax_topk",
      shape=F.granitemoe_shape),
    A("granitemoeshared", ("granitemoeshared",), ("GraniteMoeSharedTopKRouter",), "num_local_experts",
      scoring="softmax_topk", shared_attr="shared_intermediate_size", shared_is_width=True, shape=F.granitemoe_shape),
    A("granitemoehybrid", ("granitemoehybrid",), ("GraniteMoeHybridTopKRouter",), "num_local_experts",
      scoring="softmax_topk", shared_attr="shared_intermediate_size", shared_is_width=True,
      shape=H.granitemoehybrid_shape),
    A("minimax", ("minimax",), ("MiniMaxTopKRouter",), "num_local_experts", shape=H.minimax_shape),
    A("ernie4_5_moe", ("ernie4_5_moe",), ("Ernie4_5_MoeTopKRouter",), "moe_num_experts", top_k_attr="moe_k",
      selection_bias=True, shared_attr="moe_num_shared_experts", shape=F.ernie4_5_moe_shape),
    A("hunyuan_v1_moe", ("hunyuan_v1_moe",), ("HunYuanMoEV1Gate",), "num_experts", top_k_attr="moe_topk",
      shared_attr="use_mixed_mlp_moe", shape=F.hunyuan_v1_moe_shape),
    A("flex_olmo", ("flex_olmo",), ("FlexOlmoTopKRouter",), "num_experts", renormalised="norm_topk_prob",
      shape=F.olmo_style_shape),
    # newer families: the standard 5.x (logits, weights, index) router and experts(hidden, index, weights)
    A("afmoe", ("afmoe",), ("AfmoeTokenChoiceRouter",), "num_experts", scoring="sigmoid", selection_bias=True,
      shared_attr="num_shared_experts", scaling_attr="route_scale", shape=F.afmoe_shape),
    A("aria", ("aria_text",), ("AriaTextTopKRouter",), "moe_num_experts", top_k_attr="moe_topk",
      shared_attr="moe_num_shared_experts", shape=F.aria_text_shape),
    A("beam", ("beam",), ("BeamTopKRouter",), "n_routed_experts", shape=F.beam_shape, **_DS),
    A("cohere2_moe", ("cohere2_moe",), ("Cohere2MoeTopKRouter",), "num_experts", scoring="config-dependent",
      renormalised="norm_topk_prob", shape=F.cohere2_moe_shape),
    A("exaone_moe", ("exaone_moe",), ("ExaoneMoeTopkRouter",), "num_experts", shape=F.exaone_moe_shape, **_DS),
    A("flint", ("flint",), ("FlintTopKRouter",), "num_experts", scoring="sigmoid", renormalised="norm_topk_prob",
      shape=F.flint_shape),
    A("glm4_moe_lite", ("glm4_moe_lite",), ("Glm4MoeLiteTopkRouter",), "n_routed_experts",
      shape=F.mla_moe_shape, **_DS),
    A("granitemoe_swa", ("granitemoe_swa",), ("GraniteMoeSWATopKRouter",), "num_local_experts",
      scoring="softmax_topk", shape=F.granitemoe_shape),
    A("hy_v3", ("hy_v3",), ("HYV3TopKRouter",), "num_experts", scoring="sigmoid", selection_bias=True,
      shape=F.hy_v3_shape),
    # Kolibri: selects on logits + bias, then weights the chosen by sigmoid(logits) (moelab.arch.scores)
    A("kolibri1", ("kolibri1",), ("Kolibri1TopKRouter",), "num_experts", scoring="sigmoid", selection_bias=True,
      renormalised="norm_topk_prob", shared_attr="shared_expert_intermediate_size", shared_is_width=True,
      shape=F.kolibri1_shape),
    A("laguna", ("laguna",), ("LagunaTopKRouter",), "num_experts", scoring="sigmoid", selection_bias=True,
      shape=F.laguna_shape),
    A("lara_mini", ("lara_mini",), ("LaraMiniTopKRouter",), "num_experts", renormalised="norm_topk_prob",
      shape=H.lara_mini_shape),
    A("mellum", ("mellum",), ("MellumTopKRouter",), "num_experts", renormalised="norm_topk_prob", shape=F.mellum_shape),
    A("mimo_v2_flash", ("mimo_v2_flash",), ("MiMoV2FlashTopkRouter",), "n_routed_experts",
      shape=F.mimo_v2_flash_shape, **_DS),
    A("minimax_m2", ("minimax_m2",), ("MiniMaxM2TopKRouter",), "num_local_experts", scoring="sigmoid",
      selection_bias=True, shape=F.olmo_style_shape),
    A("minimax_m3_vl", ("minimax_m3_vl_text",), ("MiniMaxM3VLTopKRouter",), "num_local_experts",
      scoring="sigmoid", selection_bias=True, shape=F.minimax_m3_shape),
    A("nemotron_h", ("nemotron_h",), ("NemotronHTopkRouter",), "n_routed_experts", shape=H.nemotron_h_shape, **_DS),
    A("solar_open", ("solar_open",), ("SolarOpenTopkRouter",), "n_routed_experts", shape=F.solar_open_shape, **_DS),
    A("lfm2_moe", ("lfm2_moe",), ("Lfm2MoeTopKRouter",), "num_experts", scoring="sigmoid",
      selection_bias="use_expert_bias", renormalised="norm_topk_prob", scaling_attr="routed_scaling_factor", shape=H.lfm2_moe_shape),
    # DBRX: the router returns only the logits; the block does softmax -> top-k -> p-norm (p = 1 by default).
    # moe_normalize_expert_weights is that p: 1 sums the weights to 1, None leaves them, 2 makes unit L2 norm
    # (the metadata then says renormalised although the weights do not sum to 1)
    A("dbrx", ("dbrx",), ("DbrxRouter",), "moe_num_experts", top_k_attr="moe_top_k",
      renormalised="moe_normalize_expert_weights", shape=F.dbrx_shape),
    # DeepSeek-V3 routing (sigmoid, selection bias, groups, routed scaling) under other attention / layer stacks
    A("axk1", ("axk1",), ("AXK1TopkRouter",), "n_routed_experts", shape=F.mla_moe_shape, **_DS),
    # A.X-K2: n_group / topk_group default to None (plain top-k); grouped, it masks other groups to 0.0, not -inf
    A("axk2", ("axk2",), ("AXK2TopkRouter",), "n_routed_experts", shape=LIN.axk2_shape, **_DS),
    A("deepseek_v32", ("deepseek_v32",), ("DeepseekV32TopkRouter",), "n_routed_experts",
      shape=F.mla_moe_shape, **_DS),
    A("glm_moe_dsa", ("glm_moe_dsa",), ("GlmMoeDsaTopkRouter",), "n_routed_experts", shape=F.mla_moe_shape, **_DS),
    A("sarvam_mla", ("sarvam_mla",), ("DeepseekV3TopkRouter",), "n_routed_experts", shape=F.mla_moe_shape, **_DS),
    A("hy_v4", ("hy_v4",), ("HYV4TopkRouter",), "n_routed_experts", shape=X.hy_v4_shape, **_DS),
    A("bailing_hybrid", ("bailing_hybrid",), ("BailingHybridTopkRouter",), "num_experts", shape=LIN.kda_moe_shape,
      **_DS),
    A("kimi_linear", ("kimi_linear",), ("KimiLinearTopkRouter",), "num_experts", shape=LIN.kda_moe_shape, **_DS),
    A("dots3_note", ("dots3_note_text", "dots3_note"), ("Dots3NoteTextTopkRouter",), "n_routed_experts",
      shape=F.mla_moe_shape, **_DS),
    # Inkling: sigmoid logits of the k chosen and the shared experts, normalised together (so the routed
    # weights sum to less than 1), times route_scale and a learned global scale
    A("inkling", ("inkling_text",), ("InklingTopkRouter",), "n_routed_experts", scoring="sigmoid",
      renormalised=False, selection_bias=True, shared_attr="n_shared_experts", scaling_attr="route_scale",
      shape=X.inkling_shape),
    A("inkling2", ("inkling2_text",), ("Inkling2TopKRouter",), "n_routed_experts", scoring="config-dependent",
      selection_bias=True, scaling_attr="routed_scaling_factor", shape=X.inkling2_shape),
    A("qwen3_5_moe", ("qwen3_5_moe_text", "qwen3_5_moe"), ("Qwen3_5MoeTopKRouter",), "num_experts",
      shared_attr="shared_expert_intermediate_size", shared_is_width=True, shape=H.qwen3_next_shape),
    A("qwen4_exp", ("qwen4_exp_text", "qwen4_exp"), ("Qwen4ExpTextTopKRouter",), "num_experts",
      renormalised="norm_topk_prob", shared_attr="shared_expert_intermediate_size", shared_is_width=True,
      shape=X.qwen4_exp_shape),
    # DeepSeek-V4: its first layers (mlp_layer_types "hash_moe") choose experts by a frozen token-id table
    # (tid2eid) and weight them by the gate's scores; the experts receive (index, weights) on every layer.
    # selection_bias and top-k hold on its "moe" layers only; scoring is config.scoring_func (sqrtsoftplus)
    A("deepseek_v4", ("deepseek_v4",), ("DeepseekV4TopKRouter", "DeepseekV4HashRouter"), "n_routed_experts",
      scoring="config-dependent", selection_bias=True, shared_attr=1, scaling_attr="routed_scaling_factor",
      shape=LIN.deepseek_v4_shape),
    # Gemma 4: an optional MoE block (config.enable_moe_block) beside each layer's dense MLP, which runs for every
    # token (one shared expert). Gemma4TextRouter returns softmax probabilities where others return logits, so the
    # raw logits are read off its `proj` child; the experts receive the renormalised top-k probabilities times a
    # learned per-expert scale (router.per_expert_scale)
    A("gemma4", ("gemma4_text", "gemma4"), ("Gemma4TextRouter",), "num_experts", top_k_attr="top_k_experts",
      logits_from="proj", shared_attr=1, shape=X.gemma4_shape),
    # transformers 5.25: four new MoE types (their config classes are absent before it; the sweep and tests skip
    # types missing from CONFIG_MAPPING)
    # Ergo: DeepSeek-V3-style sigmoid + selection bias (no groups), weights renormalised times
    # moe_routed_scaling_factor; each route's output gets its expert's own RMSNorm inside the experts module, after
    # the (index, weights) the record reads
    A("ergo", ("ergo",), ("ErgoTopkRouter",), "num_experts", scoring="sigmoid", selection_bias=True, shared_attr=1,
      scaling_attr="moe_routed_scaling_factor", shape=N.ergo_shape, min_transformers="5.25"),
    # Kolibri 1.1: Kolibri 1's router and experts; weightless sparse-attention indexers and KV sharing in attention
    A("kolibri1_1", ("kolibri1_1",), ("Kolibri1_1TopKRouter",), "num_experts", scoring="sigmoid",
      selection_bias=True, renormalised="norm_topk_prob", shared_attr="shared_expert_intermediate_size",
      shared_is_width=True, shape=N.kolibri1_1_shape, min_transformers="5.25"),
    # MiniCPM5-MoE: DeepSeek-V3 routing (grouped, sigmoid + bias, routed scaling) with the logits in float32,
    # output-gated attention (a fused q + gate projection)
    A("minicpm5_moe", ("minicpm5_moe",), ("MiniCPM5MoeTopkRouter",), "n_routed_experts", shape=N.minicpm5_moe_shape,
      min_transformers="5.25", **_DS),
    # Param2-MoE: its config builds GLM-4-MoE's modules (Glm4MoeForCausalLM) with RoPE over the full head
    A("param2moe", ("param2moe",), ("Glm4MoeTopkRouter",), "n_routed_experts", shape=F.glm4_moe_shape,
      min_transformers="5.25", **_DS),
)

# model types with MoE layers that moelab does not trace, and why (the sweep and docs/capabilities.md read this)
UNSUPPORTED: dict[str, str] = {
    "jetmoe": "mixture-of-attention experts (JetMoeMoA) take sorted token batches, not (index, weights)",
    "longcat_flash": "zero-computation experts: ids past the routed experts are identity maps, not experts",
    "nllb_moe": "encoder-decoder (translation), not a decoder-only causal LM",
    "switch_transformers": "encoder-decoder (T5 family), not a decoder-only causal LM",
    "doge": "cross-domain MoE retrieves experts by product keys: no (router, experts) pair to hook",
    "inkling2_loop_text": ("looped layers: layers loop_layer_index_start..loop_layer_index_end - 1 run "
                           "loop_num_passes times per forward through the same MoE block, so one layer id routes "
                           "each token several times; a RoutingTrace holds one choice per (token, layer)"),
    "zaya": ("a skip expert (router class num_experts, no compute): ZayaRouter takes the top-k over num_experts + 1 "
             "classes and rewrites a chosen skip to expert 0 with weight 0 before the experts run, so the experts' "
             "inputs cannot tell a skip from a choice of expert 0, and its logits are (tokens, num_experts + 1)"),
}


def adapter_named(name: str) -> Adapter:
    """The adapter called `name` (an architecture family); a clear error listing the names otherwise."""
    for a in ADAPTERS:
        if a.name == name or name in a.model_types:
            return a
    raise KeyError(f"no moelab adapter named {name!r}; known: {', '.join(a.name for a in ADAPTERS)}")


def supported_architectures() -> list[str]:
    return [a.name for a in ADAPTERS]
