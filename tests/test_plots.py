"""Figures: each returns a Figure showing the metric's numbers, in one fixed colour scheme."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import moelab
from moelab import metrics, plots


@pytest.fixture(scope="module")
def trace():
    rng = np.random.default_rng(0)
    T, L, E = 600, 4, 8
    ex = np.argsort(rng.random((T, L, E)) + np.linspace(0, 0.6, E), -1)[..., :2]
    seq = np.arange(T) // 100
    dom = np.where(seq % 2 == 0, "code", "math")
    return moelab.RoutingTrace.from_arrays(ex, num_experts=E, sequence=seq, domain=dom, layer_ids=[0, 1, 2, 3])


def test_expert_colors_are_okabe_ito_and_stable_across_e():
    assert plots.expert_colors(8) == ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
    assert plots.expert_colors(64)[:8] == plots.expert_colors(8)
    assert len(set(plots.expert_colors(26))) == 26                     # distinct as far as the palette goes


def test_load_heatmap_shows_the_expert_load_fractions(trace):
    fig = plots.load_heatmap(trace)
    assert isinstance(fig, Figure)
    shown = fig.axes[0].images[0].get_array()
    ref = metrics.expert_load(trace)["fraction"].unstack("expert").to_numpy()
    assert np.allclose(shown, ref)


def test_domain_distribution_bars_has_a_panel_per_layer_and_a_bar_per_expert_and_domain(trace):
    fig = plots.domain_distribution_bars(trace)
    panels = [ax for ax in fig.axes if ax.patches]
    assert [ax.get_title() for ax in panels] == ["layer 0", "layer 1", "layer 3"]
    assert len(panels[0].patches) == 8 * 2
    heights = [p.get_height() for p in panels[0].patches[:8]]          # first domain, "code"
    ref = metrics.domain_distribution(trace).xs(("code", 0), level=("domain", "layer"))["fraction"]
    assert np.allclose(heights, ref)


def test_repeat_rates_plot_draws_the_rates_and_random_baselines(trace):
    df = metrics.repeat_rates(trace, by="domain")
    ax = plots.repeat_rates_plot(df).axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert np.allclose(lines["math: first choice"].get_ydata(), 100 * df.xs("math")["first"])
    assert lines["random: any"].get_ydata()[0] == pytest.approx(100 * (1 - 30 / 56))


def test_heatmaps_show_the_chosen_layer(trace):
    co = metrics.coactivation(trace)
    shown = plots.coactivation_heatmap(co, layer=2).axes[0].images[0].get_array()
    ref = co.loc[2].to_numpy() * 100
    off = ~np.eye(8, dtype=bool)
    assert np.allclose(shown[off], ref[off]) and np.ma.getmaskarray(shown)[~off].all() | np.isnan(shown.data[~off]).all()
    tr = plots.transitions_heatmap(trace, layer=1).axes[0].images[0].get_array()
    assert np.allclose(tr, metrics.layer_transitions(trace).loc[1].to_numpy())
    with pytest.raises(KeyError, match="layer 9 is not in the frame"):
        plots.coactivation_heatmap(co, layer=9)


def test_specialization_bars_accept_domain_and_vocab_frames(trace):
    fig = plots.specialization_bars(metrics.domain_specialization(trace))
    assert len([ax for ax in fig.axes if ax.patches]) == 3
    vocab = metrics.vocab_specialization(trace.select(np.arange(600)), by="sequence")
    ax = plots.specialization_bars(vocab, layers=[0]).axes[0]
    assert [to_hex(p.get_facecolor()).upper() for p in ax.patches] == plots.expert_colors(8)


def test_saturation_curve_and_agreement_plot(trace):
    sat = metrics.router_saturation({10: trace, 20: trace}, trace)
    fig = plots.saturation_curve(sat)
    assert all(np.allclose(l.get_ydata(), 100) for l in fig.axes[0].get_lines())
    ag = plots.agreement_plot({"self": metrics.agreement(trace, trace)})
    assert len(ag.axes[0].get_lines()) == 3


def test_wrong_input_names_the_metric_to_use():
    with pytest.raises(ValueError, match=r"metrics.repeat_rates\(trace\)"):
        plots.repeat_rates_plot(pd.DataFrame({"x": [1]}))


def test_token_colors_html_colours_each_token_by_its_first_choice_and_escapes():
    html = plots.token_colors_html(["<script>", "▁x", "&"], [2, 0, 7], num_experts=8)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html
    spans = html.split('<div class="moelab-legend"')[0].split("<span")[1:]
    colors = plots.expert_colors(8)
    assert [colors[e] in s for s, e in zip(spans, [2, 0, 7])] == [True] * 3
    assert ">x</span>" not in html and "> x</span>" in html              # ▁ shown as a space
    assert html.count("expert 7") >= 2                                  # tooltip + legend


def test_token_colors_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="3 tokens"):
        plots.token_colors_html(["a", "b", "c"], [0, 1], num_experts=8)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        plots.token_colors_figure(["a"], [5], num_experts=4)


def test_token_colors_figure_wraps_lines_and_colours_boxes():
    toks = ["abcd"] * 5                                                 # 20 chars at width 8 -> 3 lines
    fig = plots.token_colors_figure(toks, [0, 1, 2, 3, 4], num_experts=8, width=8)
    ax = fig.axes[0]
    boxes = ax.patches
    assert sorted({round(p.get_y()) for p in boxes}) == [0, 1, 2]
    assert [to_hex(p.get_facecolor()).upper() for p in boxes] == plots.expert_colors(5)


def test_save_writes_stable_names_and_reproducible_pdf(tmp_path, trace):
    fig = plots.load_heatmap(trace)
    paths = plots.save(fig, "Load heatmap / Mixtral", tmp_path, formats=("png", "pdf"))
    assert [p.name for p in paths] == ["load-heatmap-mixtral.png", "load-heatmap-mixtral.pdf"]
    first = paths[1].read_bytes()
    plots.save(plots.load_heatmap(trace), "Load heatmap / Mixtral", tmp_path, formats=("pdf",))  # a re-run
    assert paths[1].read_bytes() == first                              # no timestamps


def test_figures_use_no_pyplot_state_and_metrics_import_no_torch(trace):
    import matplotlib.pyplot as plt

    plots.load_heatmap(trace)
    assert plt.get_fignums() == []
    code = "import sys, moelab.metrics, moelab.plots; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
