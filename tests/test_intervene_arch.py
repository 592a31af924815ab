"""moelab.intervene beyond the first five architectures, on tiny random models built offline:

* DeepSeek-V3 routing (deepseek_v3, glm4_moe, dots1): sigmoid scores, e_score_correction_bias for the
  choice only, group-limited top-k, norm_topk_prob, routed_scaling_factor
* softmax over the k chosen logits (gpt_oss with a router bias, granitemoe)
* qwen3_next and flex_olmo: the qwen3_moe router code

For each: the recomputed router is bitwise the router; every no-op intervention is bitwise a no-op
with each experts implementation; what the experts module receives under ablate / top_k / bias /
force / replay equals an independent per-token reference written here (loops over tokens, no
shared code with moelab.interventions.ops); operations without a defined meaning are refused.
"""

import math

import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

import moelab
from moelab.adapters import adapter_for, find_routers
from moelab.arch.registry import adapter_named
from moelab.arch.tiny import tiny_config
from moelab.interventions import Force, InterventionError, UnsupportedIntervention, intervene, ops
from moelab.interventions.plan import build_plans

SIGMOID = ["deepseek_v3", "glm4_moe", "dots1",   # and the adapters whose router runs DeepseekV3TopkRouter's code
           "mimo_v2_flash", "nemotron_h", "axk1", "sarvam_mla", "bailing_hybrid", "kimi_linear", "exaone_moe",
           "glm4_moe_lite", "solar_open", "deepseek_v32", "glm_moe_dsa", "hy_v4", "dots3_note",
           "sarvam_moe"]                                 # a model type of the glm4_moe adapter (its router class)
TOPK_SOFTMAX = ["gpt_oss", "granitemoe", "granitemoeshared", "granitemoehybrid", "granitemoe_swa"]
QWEN_LIKE = ["qwen3_next", "flex_olmo", "lara_mini", "mellum"]
ARCHS = SIGMOID + TOPK_SOFTMAX + QWEN_LIKE
IMPLS = ["eager", "grouped_mm", "batched_mm"]
_MODELS = {}


def build(arch):
    """A tiny random model whose routers are far from uniform, with a nonzero random selection bias."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        cfg = tiny_config(arch if arch in CONFIG_MAPPING else adapter_named(arch).model_types[0])
        if arch == "deepseek_v3":
            cfg.n_group, cfg.topk_group = 4, 2                  # 4 groups of 2, keep 2: the limit bites
        model = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():
            for r in find_routers(model):
                r.module.weight.normal_(0, 0.5)
                b = getattr(r.module, "e_score_correction_bias", None)
                if b is not None:
                    b.copy_(torch.randn(b.shape) * 0.3)
                if getattr(r.module, "bias", None) is not None:  # gpt_oss's router bias
                    r.module.bias.normal_(0, 0.5)
        _MODELS[arch] = model
    return _MODELS[arch]


@pytest.fixture
def ids():
    return torch.randint(3, 128, (2, 11), generator=torch.Generator().manual_seed(1))


def run(model, ids, **kw):
    with torch.no_grad():
        if kw:
            with intervene(model, **kw):
                return model(ids).logits
        return model(ids).logits


def experts_inputs(model, ids, **kw):
    """Per router layer: (router logits, index, weights) as the experts module received them."""
    seen, handles = {}, []
    for r in find_routers(model):
        handles.append(r.module.register_forward_hook(
            lambda m, a, o, i=r.layer: seen.setdefault(i, {}).update(logits=o[0].detach().clone())))
        handles.append(r.experts.register_forward_pre_hook(
            lambda m, a, i=r.layer: seen.setdefault(i, {}).update(index=a[1].clone(), weights=a[2].clone())))
    try:
        run(model, ids, **kw)
    finally:
        for h in handles:
            h.remove()
    return seen


def own_trace(model, ids):
    with moelab.trace(model) as tr, torch.no_grad():
        model(ids)
    return tr


# -------------------------------------------------------------- the independent per-token reference
def reference_route(arch, model, layer, logits, k=None, blocked=(), bias=None):
    """(index sets, weights by expert) per token, from the model's config and router, one token at a time."""
    cfg = model.config.get_text_config()
    router = next(r.module for r in find_routers(model) if r.layer == layer)
    E = logits.shape[-1]
    k = k or cfg.num_experts_per_tok
    out = []
    for row in logits.double().tolist():
        x = [v + (0.0 if bias is None else float(bias[e])) for e, v in enumerate(row)]
        ok = [e for e in range(E) if e not in blocked]
        if arch in SIGMOID:
            s = [1 / (1 + math.exp(-v)) for v in x]
            c = {e: s[e] + float(router.e_score_correction_bias[e]) for e in ok}
            size = E // cfg.n_group
            gscore = {g: sum(sorted([c[e] for e in range(g * size, (g + 1) * size) if e in c], reverse=True)[:2])
                      if sum(e in c for e in range(g * size, (g + 1) * size)) >= 2 else -math.inf
                      for g in range(cfg.n_group)}
            groups = sorted(gscore, key=lambda g: -gscore[g])[:cfg.topk_group]
            cand = [e for e in ok if e // size in groups]
            chosen = sorted(cand, key=lambda e: -c[e])[:k]
            w = {e: s[e] for e in chosen}
            if cfg.norm_topk_prob:
                tot = sum(w.values())
                w = {e: v / tot for e, v in w.items()}
            w = {e: v * cfg.routed_scaling_factor for e, v in w.items()}
        elif arch in TOPK_SOFTMAX:
            chosen = sorted(ok, key=lambda e: -x[e])[:k]
            z = sum(math.exp(x[e]) for e in chosen)
            w = {e: math.exp(x[e]) / z for e in chosen}
        else:
            z = sum(math.exp(x[e]) for e in ok)
            p = {e: math.exp(x[e]) / z for e in ok}
            chosen = sorted(ok, key=lambda e: -p[e])[:k]
            w = {e: p[e] for e in chosen}
            if cfg.norm_topk_prob:
                tot = sum(w.values())
                w = {e: v / tot for e, v in w.items()}
        out.append(w)
    return out


def assert_matches_reference(got, want):
    idx, w = got["index"].tolist(), got["weights"].double().tolist()
    for t, ref in enumerate(want):
        assert sorted(idx[t]) == sorted(ref), (t, idx[t], ref)
        for e, v in zip(idx[t], w[t]):
            assert v == pytest.approx(ref[e], rel=1e-5, abs=1e-6), (t, e)


# ----------------------------------------------------------------------- bitwise reproduction
@pytest.mark.parametrize("arch", ARCHS)
def test_select_reproduces_the_router_bitwise(arch):
    model = build(arch)
    spec = intervene(model).spec
    x = torch.randn(37, model.config.get_text_config().hidden_size, generator=torch.Generator().manual_seed(2))
    for r in find_routers(model):
        with torch.no_grad():
            logits, w, idx = r.module(x)
        sel = getattr(r.module, "e_score_correction_bias", None)
        w2, idx2 = ops.select(logits, spec, selection_bias=sel, dtype=w.dtype)
        assert torch.equal(idx2, idx) and torch.equal(w2, w) and w2.dtype == w.dtype
        assert torch.equal(ops.weights_for(logits, idx, spec, dtype=w.dtype), w)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_spec_reads_the_routing_rule_off_the_config(arch):
    model = build(arch)
    cfg, spec = model.config.get_text_config(), intervene(model).spec
    assert adapter_for(model).name in ops.VERIFIED
    assert spec.scoring == ("sigmoid" if arch in SIGMOID else "softmax_topk" if arch in TOPK_SOFTMAX else "softmax")
    if arch in SIGMOID:
        assert spec.groups == (cfg.n_group, cfg.topk_group) and spec.scaling == cfg.routed_scaling_factor
        assert spec.renormalise == cfg.norm_topk_prob and spec.selection_bias


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_no_op_is_bitwise_a_no_op(arch, impl, ids):
    model = build(arch)
    model.set_experts_implementation(impl)
    try:
        ref = run(model, ids)
        spec = intervene(model).spec
        tr = own_trace(model, ids)
        own = {int(l): Force(torch.as_tensor(tr.experts[:, j].astype("int64"))) for j, l in enumerate(tr.layer_ids)}
        no_ops = [dict(top_k=spec.top_k), dict(ablate=[]), dict(ablate=[], mode="zero"),
                  dict(bias=torch.zeros(spec.num_experts)), dict(replay=tr), dict(force=own)]
        if spec.scoring != "sigmoid":
            no_ops.append(dict(skip=0.0))
        for kw in no_ops:
            assert torch.equal(run(model, ids, **kw), ref), kw
    finally:
        model.set_experts_implementation("eager")


# ------------------------------------------------------------ operations against the reference
@pytest.mark.parametrize("arch", ARCHS)
def test_an_ablated_expert_never_runs_and_the_rest_route_as_the_architecture_does(arch, ids):
    model = build(arch)
    base = experts_inputs(model, ids)
    layer = min(base)
    busiest = int(base[layer]["index"].flatten().bincount().argmax())
    got = experts_inputs(model, ids, ablate={layer: [busiest]})
    assert (base[layer]["index"] == busiest).any() and not (got[layer]["index"] == busiest).any()
    assert_matches_reference(got[layer], reference_route(arch, model, layer, got[layer]["logits"], blocked=[busiest]))
    for other in base:                                     # layers before the ablated one are untouched
        if other < layer:
            assert torch.equal(got[other]["index"], base[other]["index"])


@pytest.mark.parametrize("arch", ARCHS)
def test_top_k_and_bias_route_as_the_architecture_would(arch, ids):
    model = build(arch)
    spec = intervene(model).spec
    layer = max(experts_inputs(model, ids))
    for k in (1, 3):
        got = experts_inputs(model, ids, top_k={layer: k})[layer]
        assert got["index"].shape[-1] == k
        assert_matches_reference(got, reference_route(arch, model, layer, got["logits"], k=k))
    steer = torch.randn(spec.num_experts, generator=torch.Generator().manual_seed(4))
    got = experts_inputs(model, ids, bias={layer: steer})[layer]
    assert_matches_reference(got, reference_route(arch, model, layer, got["logits"], bias=steer))


@pytest.mark.parametrize("arch", ARCHS)
def test_forced_and_replayed_experts_get_the_architectures_weights(arch, ids):
    model = build(arch)
    base = experts_inputs(model, ids)
    layer = min(base)
    got = experts_inputs(model, ids, force={layer: Force([3, 0])})[layer]
    assert (got["index"] == torch.tensor([3, 0])).all()
    cfg = model.config.get_text_config()
    for t, row in enumerate(got["logits"].double().tolist()):
        if arch in SIGMOID:
            s = [1 / (1 + math.exp(-row[e])) for e in (3, 0)]
            s = [v / sum(s) for v in s] if cfg.norm_topk_prob else s
            want = [v * cfg.routed_scaling_factor for v in s]
        elif arch in TOPK_SOFTMAX:
            z = math.exp(row[3]) + math.exp(row[0])
            want = [math.exp(row[3]) / z, math.exp(row[0]) / z]
        else:
            p = [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
            want = [p[3], p[0]]
            want = [v / sum(want) for v in want] if cfg.norm_topk_prob else want
        assert got["weights"][t].double().tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
    tr = own_trace(model, ids)
    replayed = experts_inputs(model, ids, replay=tr)
    for i in base:
        assert torch.equal(replayed[i]["index"], base[i]["index"]) and torch.equal(replayed[i]["weights"], base[i]["weights"])


@pytest.mark.parametrize("arch", ["gpt_oss", "granitemoe"])
def test_skipping_with_beta_one_is_top1_where_weights_are_a_softmax_over_the_chosen(arch, ids):
    model = build(arch)
    with intervene(model, skip=1.0) as iv, torch.no_grad():
        out = model(ids).logits
    assert torch.allclose(out, run(model, ids, top_k=1), atol=1e-5)
    assert set(iv.effective_k().values()) == {1.0}


def test_the_selection_bias_decides_the_choice_but_not_the_weights(ids):
    model = build("deepseek_v3")
    layer = min(experts_inputs(model, ids))
    router = next(r.module for r in find_routers(model) if r.layer == layer)
    saved = router.e_score_correction_bias.clone()
    try:
        with torch.no_grad():
            router.e_score_correction_bias.zero_()
            router.e_score_correction_bias[5] = 100.0          # expert 5 always chosen ...
        got = experts_inputs(model, ids, top_k={layer: 2})[layer]
        assert (got["index"] == 5).any(-1).all()
        assert_matches_reference(got, reference_route("deepseek_v3", model, layer, got["logits"], k=2))
        assert (got["weights"] < model.config.routed_scaling_factor).all()   # ... weighted by sigmoid(logit)
        ablated = experts_inputs(model, ids, ablate={layer: [5]})[layer]     # blocked despite its huge bias
        assert not (ablated["index"] == 5).any()
    finally:
        with torch.no_grad():
            router.e_score_correction_bias.copy_(saved)


# ------------------------------------------------------------------------- refused, with why
@pytest.mark.parametrize("arch", SIGMOID)
def test_dynamic_skipping_on_sigmoid_scores_is_refused_naming_the_architecture(arch):
    model = build(arch)
    with pytest.raises(UnsupportedIntervention, match=rf"{adapter_for(model).name}: skip beta=0.3 .*sigmoid"):
        intervene(model, skip=0.3)


def test_grouped_routing_refuses_a_k_or_an_ablation_its_kept_groups_cannot_hold():
    model = build("deepseek_v3")                             # 4 groups of 2 experts, 2 kept: at most 4 choices
    with pytest.raises(InterventionError, match="top_k=5: .*topk_group=2 of n_group=4"):
        intervene(model, top_k=5)
    with intervene(model, top_k=4):
        pass
    spec = intervene(model).spec
    with pytest.raises(InterventionError, match=r"ablate=\[0, 2, 4\] .*fewer than that many groups keep 2"):
        intervene(model, ablate=[0, 2, 4])                   # only group 3 keeps 2: the 2nd kept group is a tie
    assert ops.group_capacity(spec, [0, 2, 4]) == 0
    assert ops.group_capacity(spec, [0, 1, 2]) == 4 and ops.group_capacity(spec, [0, 2]) == 4
    wide = ops.RouterSpec("deepseek_v3", num_experts=12, top_k=2, renormalise=True, cast_weights=False,
                          scoring="sigmoid", groups=(3, 2))      # 3 groups of 4, keep 2
    assert ops.group_capacity(wide, [0, 1, 4]) == 5              # groups left with 2, 3, 4: worst pair 2 + 3
    build_plans(wide, [0], dict(ablate=[0, 1, 4], top_k=5))
    with pytest.raises(InterventionError, match=r"ablate=\[0, 1, 4\] .*top_k=6.*may hold only 5"):
        build_plans(wide, [0], dict(ablate=[0, 1, 4], top_k=6))


@pytest.mark.parametrize("arch", ["deepseek_v3", "gpt_oss", "qwen3_next"])
def test_the_batched_studies_are_refused_beyond_the_architectures_they_are_verified_on(arch):
    from moelab.interventions import ablation_sweep, bias_sweep

    model = build(arch)
    with pytest.raises(UnsupportedIntervention, match=f"{arch}: ablation_sweep is not verified"):
        ablation_sweep(model, None, domains=["code"])
    with pytest.raises(UnsupportedIntervention, match=f"{arch}: bias_sweep is not verified"):
        bias_sweep(model, None, layer=min(r.layer for r in find_routers(model)), expert=0, texts=["x"])


@pytest.mark.parametrize("arch", ["deepseek_v3", "gpt_oss", "granitemoe", "qwen3_next"])
def test_no_ops_stay_bitwise_in_bfloat16_where_logits_and_weights_dtypes_differ(arch, ids):
    import copy

    model = copy.deepcopy(build(arch)).to(torch.bfloat16)  # deepseek: fp32 logits; granitemoe: bf16 weights
    spec = intervene(model).spec
    ref = run(model, ids)
    tr = own_trace(model, ids)
    for kw in (dict(top_k=spec.top_k), dict(bias=torch.zeros(spec.num_experts)), dict(replay=tr), dict(ablate=[])):
        assert torch.equal(run(model, ids, **kw), ref), kw
    layer = min(r.layer for r in find_routers(model))
    got = experts_inputs(model, ids, top_k={layer: 1})[layer]
    base = experts_inputs(model, ids)[layer]
    assert got["weights"].dtype == base["weights"].dtype


@pytest.mark.parametrize("arch", ["beam", "axk2", "deepseek_v2", "llama4"])
def test_routers_with_other_code_are_refused_naming_the_architecture_and_operation(arch, ids):
    model = build(arch)              # beam: sorted top-k, scaling after the experts; axk2: other groups -> 0.0
    assert arch not in ops.VERIFIED
    with pytest.raises(UnsupportedIntervention, match=rf"{arch}: top_k=1 is not verified for this architecture"):
        intervene(model, top_k=1)
    with intervene(model), torch.no_grad():                  # an empty block is allowed
        model(ids)


def test_a_sigmoid_router_without_its_selection_bias_is_refused_naming_it():
    import copy

    model = copy.deepcopy(build("deepseek_v3"))
    router = find_routers(model)[0]
    del router.module._buffers["e_score_correction_bias"]    # a router that routes differently from the verified one
    with pytest.raises(UnsupportedIntervention, match=rf"deepseek_v3: top_k=1 needs the router's selection bias, "
                                                      rf"but {router.path} \(DeepseekV3TopkRouter\)"):
        intervene(model, top_k=1)
