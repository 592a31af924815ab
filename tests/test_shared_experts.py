"""Shared experts run for every token and are never routed load: metrics and plots count routed experts only.

A test-only pre-hook on each experts module (the routed experts, never the shared ones) is the reference:
what it received is counted per expert and compared with the trace, `metrics.expert_load`,
`metrics.balance` and the min share of `plots.balance_compare.layer_load_table`.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

import moelab
from moelab import metrics, plots
from moelab.arch.base import layer_of
from moelab.arch.tiny import tiny_config
from moelab.plots.balance_compare import balance_compare, layer_load_table

# model type -> (config overrides, n_routed field, the shared-expert submodule of an MoE block, shared count)
MODELS = {
    "deepseek_v3": (dict(n_shared_experts=2, first_k_dense_replace=2), "n_routed_experts", "shared_experts",
                    lambda c: c.n_shared_experts),
    "qwen2_moe": (dict(), "num_experts", "shared_expert", lambda c: int(c.shared_expert_intermediate_size > 0)),
    "llama4_text": (dict(interleave_moe_layer_step=1), "num_local_experts", "shared_expert", lambda c: 1),
}


def _available(mt):
    from transformers import CONFIG_MAPPING

    if mt not in CONFIG_MAPPING:
        pytest.skip(f"{mt} is not in this transformers version")


def _routed_counts_hook(model, E):
    """Per layer id: how many tokens each routed expert received, read off the experts module's own inputs."""
    got, handles = {}, []
    for path, m in model.named_modules():
        if not path.endswith(".experts"):
            continue

        def pre(mod, args, kwargs, layer=layer_of(path)):
            if len(args) >= 3 or "top_k_index" in kwargs:                       # (hidden, index, weights)
                index = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
                got[layer] = np.bincount(index.reshape(-1).numpy(), minlength=E)
            else:  # Llama 4: row e*T + t of the input is hidden[t] * weight(t, e), zero off the choice
                rows = args[0].reshape(E, -1, args[0].shape[-1])                # (E, T, H)
                got[layer] = (rows != 0).any(-1).sum(-1).numpy()
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
    return got, handles


@pytest.fixture(scope="module", params=list(MODELS))
def traced(request):
    mt = request.param
    _available(mt)
    overrides, routed_field, shared_name, shared_count = MODELS[mt]
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(mt)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    E = int(getattr(cfg, routed_field))
    got, handles = _routed_counts_hook(model, E)
    ids = torch.randint(3, 100, (3, 11), generator=torch.Generator().manual_seed(1))
    try:
        with moelab.trace(model) as tr, torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return mt, model, cfg, E, shared_name, shared_count(cfg), got, tr


def test_the_trace_records_routed_expert_ids_only_and_meta_counts_the_shared_ones(traced):
    mt, model, cfg, E, shared_name, n_shared, got, tr = traced
    assert tr.num_experts == E and int(tr.experts.max()) < E
    assert tr.meta["shared_experts"] == n_shared >= 1
    # the model really has them: one shared-expert module beside every traced experts module
    blocks = [p.rpartition(".")[0] for p, _ in model.named_modules() if p.endswith(".experts")]
    assert len(blocks) == tr.num_layers
    for block in blocks:
        assert hasattr(model.get_submodule(block), shared_name), f"{mt}: {block} has no {shared_name}"


def test_expert_load_sums_to_tokens_times_k_over_the_routed_experts(traced):
    mt, model, cfg, E, shared_name, n_shared, got, tr = traced
    load = metrics.expert_load(tr)
    assert set(load.index.get_level_values("expert")) == set(range(E))           # no column for a shared expert
    per_layer = load["count"].groupby(level="layer").sum()
    assert (per_layer == tr.num_tokens * tr.top_k).all()
    for layer in tr.layer_ids:
        np.testing.assert_array_equal(load.loc[layer, "count"].to_numpy(), got[int(layer)])


def test_balance_metrics_are_over_routed_experts_and_match_the_hooks_count(traced):
    mt, model, cfg, E, shared_name, n_shared, got, tr = traced
    bal = metrics.balance(tr)
    table = layer_load_table({"m": tr}).loc["m"]
    for layer in tr.layer_ids:
        n = got[int(layer)].astype(float)                                         # (E,) routed only
        assert bal.loc[layer, "cv"] == pytest.approx(n.std() / n.mean())
        assert bal.loc[layer, "maxvio"] == pytest.approx((n.max() - n.mean()) / n.mean())
        q = n / n.sum()
        ent = -(q[q > 0] * np.log(q[q > 0])).sum() / np.log(E)
        assert bal.loc[layer, "entropy"] == pytest.approx(ent)
        assert table.loc[layer, "min_share"] == pytest.approx(n.min() / n.sum())


def test_dense_layers_are_not_in_the_trace_and_layer_ids_are_the_models_own(traced):
    mt, model, cfg, E, shared_name, n_shared, got, tr = traced
    assert tr.layer_ids.tolist() == sorted(got)                                   # exactly where experts ran
    if mt == "deepseek_v3":
        dense = cfg.first_k_dense_replace
        assert tr.layer_ids.tolist() == list(range(dense, cfg.num_hidden_layers))
        for i in range(dense):                                                    # a plain MLP: nothing routed
            mlp = model.model.layers[i].mlp
            assert not any(p.endswith("experts") for p, _ in mlp.named_modules()), type(mlp).__name__
        assert tr.layer_names[0] == f"layers.{dense}.router"


def _texts(fig):
    return [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]


def test_load_plots_say_the_shared_experts_are_left_out(traced):
    mt, model, cfg, E, shared_name, n_shared, got, tr = traced
    note = f"+{n_shared} shared expert{'s' if n_shared > 1 else ''} run for every token (not shown)"
    assert note in _texts(plots.load_heatmap(tr))
    assert note in _texts(balance_compare({"m": tr}))


def test_load_plots_have_no_shared_note_without_shared_experts(traced):
    tr = traced[-1]
    plain = moelab.RoutingTrace.from_arrays(tr.experts, num_experts=tr.num_experts, layer_ids=tr.layer_ids,
                                            meta={**tr.meta, "shared_experts": 0})
    bare = moelab.RoutingTrace.from_arrays(tr.experts, num_experts=tr.num_experts)   # no meta at all
    for t in (plain, bare):
        assert not any("shared" in s for s in _texts(plots.load_heatmap(t)))
        assert not any("shared" in s for s in _texts(balance_compare({"m": t})))
    frame = metrics.expert_load(tr)                                               # a frame carries no meta: say so
    assert any("+2 shared experts" in s for s in _texts(plots.load_heatmap(frame, shared_experts=2)))
    assert not any("shared" in s for s in _texts(plots.load_heatmap(frame)))
