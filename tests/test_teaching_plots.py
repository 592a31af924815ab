"""The notebooks' hand-built figures, now library functions: they build and plot the given numbers."""

import numpy as np
import pandas as pd

import moelab
from moelab.metrics import capacity_drops
from moelab.plots import teaching


def test_capacity_drops_plot_draws_each_layer_and_batch():
    ex = np.random.default_rng(0).integers(0, 4, size=(256, 2, 1))
    drops = capacity_drops(moelab.RoutingTrace.from_arrays(ex, num_experts=4), [1.0, 1.5, 2.0], [32, 128])
    fig = teaching.capacity_drops_plot(drops)
    lines = fig.axes[0].lines
    assert len(lines) == 4
    s = drops["dropped"].xs((0, 32), level=("layer", "batch_size"))
    line = next(l for l in lines if l.get_label() == "layer 0, batch 32")
    np.testing.assert_allclose(line.get_ydata(), 100 * s.sort_index().to_numpy())
    assert line.get_linestyle() == "--"


def test_moe_vs_dense_bars_show_the_fastest_implementation():
    ratios = pd.DataFrame({"baseline": ["dense_total"] * 3, "phase": ["decode"] * 3, "batch": [1, 1, 8],
                           "measured": [1.5, 2.0, 1.1], "flop_ratio": [3.6] * 3, "byte_ratio": [3.0, 3.0, 1.2]})
    fig = teaching.moe_vs_dense_bars(ratios)
    heights = [p.get_height() for p in fig.axes[0].containers[0]]
    assert heights == [2.0, 1.1]


def test_roofline_cost_plot_labels_every_routing_source():
    from moelab.compute import MIXTRAL_A100_VLLM, decode_roofline, mixtral_8x7b_config

    roofs = {src: decode_roofline(mixtral_8x7b_config(), "A100-80GB-SXM", [1, 4, 16], experts_touched=et,
                                  price_per_hour=1.0) for src, et in [("uniform routing", "uniform"), ("8 experts", 8)]}
    fig = teaching.roofline_cost_plot(roofs, published=MIXTRAL_A100_VLLM)
    labels = [l.get_label() for l in fig.axes[0].lines]
    assert "roofline, uniform routing" in labels and "roofline, 8 experts" in labels
    assert any(lab.startswith("published") for lab in labels)


def test_toy_heatmaps_one_panel_per_mode_and_layer():
    from moelab.toy import ToyConfig, collapse_lesson

    runs = collapse_lesson(ToyConfig(steps=4, batch=32))
    fig = teaching.toy_load_heatmaps(runs)
    assert len([a for a in fig.axes if a.images]) == 3 * 2
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), runs["none"].loads[:, 0, :].T)


def test_balance_compare_keeps_its_legend_off_the_cv_lines():
    from moelab.plots.balance_compare import balance_compare

    rng = np.random.default_rng(0)
    flat = pd.DataFrame(rng.dirichlet(np.full(8, 40), 4), index=pd.Index(range(4), name="layer"))
    skew = pd.DataFrame(rng.dirichlet(np.full(8, 0.6), 4), index=pd.Index(range(4), name="layer"))
    fig = balance_compare({"per-layer": flat, "pooled": skew}, perplexity={"per-layer": 97.3, "pooled": 99.5})
    fig.draw_without_rendering()
    cv_ax = next(ax for ax in fig.axes if ax.get_title() == "per-layer imbalance")
    legend = cv_ax.get_legend().get_window_extent()
    assert not legend.overlaps(cv_ax.get_window_extent())                     # nothing it can cover
    assert [t.get_text() for t in cv_ax.get_legend().get_texts()][:2] == ["per-layer, ppl 97.3", "pooled, ppl 99.5"]
