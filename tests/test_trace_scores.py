"""Selection scores (`moelab.trace(model, scores=True)`): what each router's top-k runs on, bias included.

Ground truth is the model itself: the experts its experts module received (the canonical
record) must be the top-k of the recorded scores, group limit applied, on every traced
architecture, with router weights and selection biases randomised so that the bias
changes choices and no two scores tie. Layers that route by token id (DeepSeek-V4's hash
layers) are held to what they do instead: experts = tid2eid[token_id], weighted by the
recorded scores.
"""

import numpy as np
import pytest
import torch

import moelab
from moelab.arch import UnsupportedModelError, find_routers
from moelab.arch.capabilities import adapter_model_types, build_tiny
from moelab.arch.scores import experts_from_scores
from moelab.trace_schema import TraceMismatchError

COVERED = sorted(mt for mt in adapter_model_types() if mt != "llama4")   # llama4 is the multimodal wrapper
FAST = ["mixtral", "deepseek_v3", "gpt_oss", "llama4_text", "ernie4_5_moe", "afmoe", "kolibri1"]
# model types whose router adds a per-expert bias to the scores for selection only (read off the modeling files)
BIASED = {"deepseek_v3", "glm4_moe", "sarvam_moe", "dots1", "beam", "exaone_moe", "glm4_moe_lite", "mimo_v2_flash",
          "nemotron_h", "solar_open", "hy_v3", "kolibri1", "laguna", "minimax_m2", "minimax_m3_vl_text",
          "ernie4_5_moe", "afmoe", "lfm2_moe",
          "axk1", "axk2", "deepseek_v32", "glm_moe_dsa", "sarvam_mla", "hy_v4", "bailing_hybrid", "kimi_linear",
          "dots3_note_text", "dots3_note", "inkling_text", "inkling2_text", "deepseek_v4",
          "ergo", "kolibri1_1", "minicpm5_moe", "param2moe"}                  # transformers 5.25
IDS = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(1))


def _available(mt):
    from transformers import CONFIG_MAPPING

    if mt not in CONFIG_MAPPING:
        pytest.skip(f"{mt} is not in this transformers version")


def _block_biases(model, router, E):
    """Every float (E,)-sized tensor named *bias* on the router's sparse block, outside its experts module."""
    block = router.path.rpartition(".")[0]
    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if (name.startswith(block + ".") and not name.startswith(router.experts_path + ".")
                and "bias" in name.rsplit(".", 1)[-1] and t.numel() == E and t.is_floating_point()):
            out[name] = t
    return out


@torch.no_grad()
def _randomised(model_type, seed=0, **config):
    """A tiny model whose routers have random weights (no ties) and random selection biases (that matter)."""
    _available(model_type)
    if config:
        from transformers import AutoModelForCausalLM

        from moelab.arch.tiny import tiny_config

        cfg = tiny_config(model_type)
        for k, v in config.items():
            setattr(cfg.get_text_config(), k, v)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg).eval()
    else:
        model = build_tiny(model_type, seed=seed)
    g = torch.Generator().manual_seed(seed)
    biases = {}
    for r in find_routers(model):
        E = r.module.num_experts if isinstance(getattr(r.module, "num_experts", None), int) else None
        for p in r.module.parameters():
            if p.dim() == 2:
                E = E or p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for name, t in _block_biases(model, r, E).items():
            t.copy_((torch.randn(t.shape, generator=g) * 0.1).to(t.dtype))
            biases.setdefault(r.layer, []).append(t.detach().reshape(-1).float().clone().numpy())
        table = r.module._buffers.get("tid2eid")          # DeepSeek-V4 hash layer: k distinct experts per token id
        if table is not None:
            table.copy_(torch.stack([torch.randperm(E, generator=g)[:table.shape[1]] for _ in range(len(table))]))
    return model, biases


def _trace(model, **kw):
    with moelab.trace(model, **kw) as tr, torch.no_grad():
        out = model(IDS).logits
    return tr, out


def _masked(scores, limit):
    """What the top-k runs on: scores outside the kept groups set to -inf (or to limit["masked_score"])."""
    if not limit:
        return scores
    T, L, E = scores.shape
    n, kept = limit["groups"], limit["kept"]
    g = np.sort(scores.reshape(T, L, n, E // n), axis=-1)[..., ::-1]
    gscore = g[..., :2].sum(-1) if limit["group_score"] == "top2_sum" else g[..., 0]     # (T, L, n)
    rank = np.argsort(np.argsort(-gscore, axis=-1), axis=-1)
    allowed = np.repeat(rank < kept, E // n, axis=-1)
    return np.where(allowed, scores, limit.get("masked_score", -np.inf))


def _reference_choice(scores, k, limit):
    """Brute force: (tokens, layers, E) scores -> chosen sets, and the gap between the k-th and (k+1)-th allowed."""
    masked = _masked(scores, limit)
    order = np.argsort(-masked, axis=-1)
    top = np.take_along_axis(masked, order, -1)
    return np.sort(order[..., :k], -1), top[..., k - 1] - top[..., k]


def _by_score(tr):
    """Layer positions whose experts are chosen by score (not looked up by token id), as a boolean mask."""
    routed = tr.meta["scores_token_routed"]
    return ~np.isin(tr.layer_ids, routed["layers"] if routed else [])


@pytest.mark.parametrize("model_type", [pytest.param(mt, marks=() if mt in FAST else pytest.mark.slow)
                                        for mt in COVERED])
def test_experts_are_the_top_k_of_the_recorded_scores_logits_unchanged_and_scores_round_trip(model_type, tmp_path):
    model, biases = _randomised(model_type)
    with torch.no_grad():
        plain = model(IDS).logits
    tr, traced = _trace(model, scores=True, logits=True)
    assert torch.equal(plain, traced)                                   # (b) bitwise unchanged
    assert tr.scores.dtype == np.float32 and tr.scores.shape == tr.logits.shape and np.isfinite(tr.scores).all()
    by_score = _by_score(tr)                                            # all layers but DeepSeek-V4's hash layers
    assert by_score.any()
    chosen, gap = _reference_choice(tr.scores[:, by_score], tr.top_k, tr.meta["scores_group_limit"])
    experts = np.sort(tr.experts.astype(np.int64), -1)
    np.testing.assert_array_equal(experts[:, by_score], chosen)         # (a) experts = top-k(scores)
    assert (gap > 0).all()                                              # no tie decided it
    assert ("bias" in tr.meta["scores"]) == (model_type in BIASED), tr.meta["scores"]
    if model_type in BIASED:   # a tracer that left the bias out would fail (a): without it, some choices differ
        layer = {lid: j for j, lid in enumerate(tr.layer_ids[by_score].tolist())}
        unbiased = tr.scores[:, by_score].copy()
        for lid, (b,) in biases.items():
            unbiased[:, layer[lid]] -= b
        assert (_reference_choice(unbiased, tr.top_k, tr.meta["scores_group_limit"])[0] != chosen).any()
    if not by_score.all():     # (a') token-routed layers: the model's table looked up by token id, not a top-k
        _assert_token_routed(model, tr)
    tr.save(tmp_path / "t.parquet")                                     # (c) bit-exact round trip
    back = moelab.load_trace(tmp_path / "t.parquet")
    np.testing.assert_array_equal(back.scores.view(np.uint32), tr.scores.view(np.uint32))
    assert back.meta["scores"] == tr.meta["scores"]


def _assert_token_routed(model, tr):
    """Hash layers: experts = table[token_id] (the model's own buffer), weighted by the recorded scores."""
    routed = tr.meta["scores_token_routed"]
    table = model.get_submodule(routed["table"].rpartition(".")[0]).tid2eid.numpy()
    for lid in routed["layers"]:
        j = tr.layer_ids.tolist().index(lid)
        np.testing.assert_array_equal(tr.experts[:, j].astype(np.int64), table[tr.token_id])
        chosen = np.take_along_axis(tr.scores[:, j], tr.experts[:, j].astype(np.int64), -1)
        np.testing.assert_allclose(tr.weights[:, j], chosen / chosen.sum(-1, keepdims=True)
                                   * model.config.routed_scaling_factor, rtol=1e-5)
        assert (_reference_choice(tr.scores[:, [j]], tr.top_k, None)[0][:, 0] != np.sort(table[tr.token_id])).any()


@pytest.mark.parametrize("model_type", ["mixtral", "deepseek_v3", "lfm2_moe", "gpt_oss", "dbrx", "deepseek_v4"])
def test_in_bfloat16_the_experts_are_a_top_k_of_the_recorded_scores(model_type):
    """bf16 logits can tie: the recorded experts are then *a* top-k (no unchosen allowed score above a chosen one)."""
    model, _ = _randomised(model_type)
    model.to(torch.bfloat16)
    with torch.no_grad():
        plain = model(IDS).logits
    tr, traced = _trace(model, scores=True)
    assert torch.equal(plain, traced) and tr.scores.dtype == np.float32
    by_score = _by_score(tr)
    s, limit = tr.scores[:, by_score], tr.meta["scores_group_limit"]
    chosen = np.zeros(s.shape, bool)
    np.put_along_axis(chosen, tr.experts[:, by_score].astype(np.int64), True, axis=-1)
    _, gap = _reference_choice(s, tr.top_k, limit)
    allowed = np.ones(s.shape, bool)
    if limit:   # the chosen experts lie in the kept groups; their group scores are the highest
        n = limit["groups"]
        assert (chosen.reshape(*s.shape[:2], n, -1).any(-1).sum(-1) <= limit["kept"]).all()
        allowed = np.repeat(chosen.reshape(*s.shape[:2], n, -1).any(-1), s.shape[-1] // n, axis=-1)
    low = np.where(chosen, s, np.inf).min(-1)
    high = np.where(allowed & ~chosen, s, -np.inf).max(-1)
    assert (low >= high).all() and (gap >= 0).all()


def test_axk2_with_groups_scores_the_experts_outside_the_kept_groups_zero_so_they_can_still_be_chosen():
    """AXK2TopkRouter.apply_group_scoring masks with 0.0, not -inf: an excluded expert beats a negative kept one."""
    model, _ = _randomised("axk2", n_group=2, topk_group=1)
    tr, _ = _trace(model, scores=True)
    limit = tr.meta["scores_group_limit"]
    assert limit == {"groups": 2, "kept": 1, "group_score": "top2_sum", "masked_score": 0.0}
    chosen, gap = _reference_choice(tr.scores, tr.top_k, limit)
    np.testing.assert_array_equal(np.sort(tr.experts.astype(np.int64), -1), chosen)
    assert (gap > 0).all()
    with torch.no_grad():      # now only expert 0 of each group of 4 has a positive score
        for r in find_routers(model):
            r.module.e_score_correction_bias.copy_(torch.tensor([0.0, -2, -2, -2] * 2))
    tr, _ = _trace(model, scores=True)
    masked = _masked(tr.scores, limit)                 # the 3 excluded experts tie at 0.0: *a* top-2 of these
    picked = np.take_along_axis(masked, tr.experts.astype(np.int64), -1)
    assert (picked.min(-1) >= np.sort(masked, -1)[..., -tr.top_k]).all()
    outside = np.take_along_axis(np.isneginf(_masked(tr.scores, {**limit, "masked_score": -np.inf})),
                                 tr.experts.astype(np.int64), -1)
    assert outside.any(-1).all()     # every token ran an expert from a group the limit excluded


def test_deepseek_v4_hash_layers_are_named_in_the_metadata_and_not_derived_from_scores(tmp_path):
    model, _ = _randomised("deepseek_v4")
    tr, _ = _trace(model, scores=True)
    hashed = [i for i, t in enumerate(model.config.mlp_layer_types) if t == "hash_moe"]
    routed = tr.meta["scores_token_routed"]
    assert hashed and routed == {"layers": hashed, "table": f"model.layers.{hashed[0]}.mlp.gate.tid2eid",
                                 "scores": "sqrtsoftplus(logits)"}
    assert f"layers {hashed} take tid2eid[token_id]" in tr.meta["scores_selection"]
    first_scored = min(set(tr.layer_ids.tolist()) - set(hashed))
    assert tr.meta["scores_bias"] == f"model.layers.{first_scored}.mlp.gate.e_score_correction_bias"
    from_scores = experts_from_scores(tr)
    by_score = _by_score(tr)
    assert (from_scores[:, ~by_score] == -1).all()
    np.testing.assert_array_equal(np.sort(from_scores[:, by_score], -1),
                                  np.sort(tr.experts[:, by_score].astype(np.int64), -1))
    tr.save(tmp_path / "t.parquet")
    assert moelab.load_trace(tmp_path / "t.parquet").meta["scores_token_routed"] == routed


@pytest.mark.parametrize("model_type, scoring_func", [("inkling2_text", "sqrtsoftplus"), ("deepseek_v4", "sigmoid")])
def test_the_recorded_scores_use_the_configured_scoring_func(model_type, scoring_func):
    model, _ = _randomised(model_type, scoring_func=scoring_func)
    tr, _ = _trace(model, scores=True)
    assert tr.meta["scores"] == f"{scoring_func}(logits) + e_score_correction_bias"
    by_score = _by_score(tr)
    chosen, gap = _reference_choice(tr.scores[:, by_score], tr.top_k, None)
    np.testing.assert_array_equal(np.sort(tr.experts[:, by_score].astype(np.int64), -1), chosen)
    assert (gap > 0).all()


def test_deepseek_v2_group_limited_greedy_keeps_the_groups_with_the_highest_score():
    model, _ = _randomised("deepseek_v2", topk_method="group_limited_greedy", n_group=2, topk_group=1)
    tr, _ = _trace(model, scores=True)
    assert tr.meta["scores_group_limit"] == {"groups": 2, "kept": 1, "group_score": "max"}
    chosen, gap = _reference_choice(tr.scores, tr.top_k, tr.meta["scores_group_limit"])
    np.testing.assert_array_equal(np.sort(tr.experts.astype(np.int64), -1), chosen)
    free, _ = _reference_choice(tr.scores, tr.top_k, None)
    assert (free != chosen).any()       # the group limit changed some choices, so the test can fail without it


@pytest.mark.parametrize("model_type, formula", [
    ("mixtral", "softmax(logits)"),
    ("deepseek_v3", "sigmoid(logits) + e_score_correction_bias"),
    ("gpt_oss", "logits"),
    ("ernie4_5_moe", "softmax(logits) + e_score_correction_bias"),
    ("afmoe", "sigmoid(logits) + expert_bias"),
    ("kolibri1", "logits + e_score_correction_bias"),
    ("dbrx", "softmax(logits)"),
    ("axk1", "sigmoid(logits) + e_score_correction_bias"),
    ("inkling2_text", "sigmoid(logits) + e_score_correction_bias"),
    ("deepseek_v4", "sqrtsoftplus(logits) + e_score_correction_bias"),
])
def test_metadata_names_the_formula_and_how_experts_are_chosen(model_type, formula):
    model, _ = _randomised(model_type)
    tr, _ = _trace(model, scores=True)
    assert tr.meta["scores"] == formula
    bias = tr.meta["scores_bias"]     # the first MoE layer's bias, by its path in the model
    assert (bias is None) == ("+" not in formula)
    if bias:
        first = tr.layer_ids[_by_score(tr)][0]          # the first layer that chooses by score
        assert bias.endswith(formula.rsplit(" + ", 1)[1]) and f"layers.{first}." in bias
        assert bias in {name for name, _ in [*model.named_parameters(), *model.named_buffers()]}
    assert tr.meta["scores_selection"].startswith(f"top-{tr.top_k}")
    assert tr.logits is None                              # scores alone do not record logits


def test_experts_from_scores_applies_the_group_limit_written_in_the_metadata():
    model, _ = _randomised("deepseek_v3")
    tr, _ = _trace(model, scores=True)
    np.testing.assert_array_equal(np.sort(experts_from_scores(tr), -1), np.sort(tr.experts.astype(np.int64), -1))


def test_scores_on_a_trace_without_them_say_to_pass_scores_true(mixtral, ids):
    with moelab.trace(mixtral) as tr, torch.no_grad():
        mixtral(ids)
    assert tr.scores is None
    with pytest.raises(ValueError, match=r"moelab\.trace\(model, scores=True\)"):
        experts_from_scores(tr)


def test_a_missing_selection_bias_is_an_error_naming_the_router():
    model = build_tiny("deepseek_v3")
    gate = find_routers(model)[0]
    del gate.module._buffers["e_score_correction_bias"]
    with pytest.raises(UnsupportedModelError, match=rf"router '{gate.path}' adds a selection bias"):
        moelab.trace(model, scores=True)


def test_streamed_parts_keep_scores_and_a_resumed_run_without_scores_is_refused_on_load(tmp_path):
    model, _ = _randomised("deepseek_v3")
    with moelab.trace(model, scores=True, path=tmp_path / "run", flush_tokens=9) as tr, torch.no_grad():
        model(IDS)
        model(IDS[:, :4])
    parts = sorted((tmp_path / "run").glob("part-*.parquet"))
    assert len(parts) >= 2 and tr.scores.shape == (2 * 9 + 2 * 4, tr.num_layers, tr.num_experts)
    mem, _ = _trace(model, scores=True)
    np.testing.assert_array_equal(tr.scores[:18].view(np.uint32), mem.scores.view(np.uint32))
    from moelab.scan import scan_trace

    assert scan_trace(tmp_path / "run").columns == []           # scores are not an extra per-token column
    with moelab.trace(model, path=tmp_path / "run", append=True, retain=False), torch.no_grad():
        model(IDS)
    with pytest.raises(TraceMismatchError, match="only some have scores"):
        moelab.load_trace(tmp_path / "run")


def test_from_arrays_select_and_concat_carry_scores_and_check_their_shape():
    rng = np.random.default_rng(0)
    sc = rng.normal(size=(6, 2, 4)).astype(np.float32)
    ex = np.argsort(-sc, -1)[..., :2]
    t = moelab.RoutingTrace.from_arrays(ex, num_experts=4, scores=sc)
    both = moelab.RoutingTrace.concat([t.select(slice(0, 2)), t.select(slice(2, None))])
    np.testing.assert_array_equal(both.scores, sc)
    assert "scores" in repr(t) and t.columns == {}
    with pytest.raises(TraceMismatchError, match=r"scores has shape \(6, 2, 3\)"):
        moelab.RoutingTrace.from_arrays(ex, num_experts=4, scores=sc[..., :3])


def test_a_file_with_a_user_column_named_scores_still_loads_it_as_a_column(tmp_path):
    t = moelab.RoutingTrace.from_arrays(np.zeros((3, 1, 2), int) + [0, 1], num_experts=4)
    t = t.with_columns(scores=np.array([1.0, 2.0, 3.0]))
    t.save(tmp_path / "u.parquet")
    back = moelab.load_trace(tmp_path / "u.parquet")
    assert back.scores is None and back.columns["scores"].tolist() == [1.0, 2.0, 3.0]
