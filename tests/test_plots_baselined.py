"""Every statistic figure of notebooks 03/04 draws its load-aware baseline next to the observed value."""

import numpy as np
import pandas as pd
import pytest

from moelab.plots.baselined import (lift_heatmap, repeat_rates_vs_baseline, saturation_vs_training,
                                    specialization_scatter, vocab_vs_chance)


def _rates():
    idx = pd.MultiIndex.from_product([["code", "prose"], [0, 1, 2]], names=["domain", "layer"])
    return pd.DataFrame({"first": 0.3, "any": 0.6, "first_shuffled": 0.2, "any_shuffled": 0.5,
                         "first_random": 0.125, "any_random": 0.464}, index=idx)


def test_repeat_rates_draw_observed_and_shuffled_line_per_domain():
    fig = repeat_rates_vs_baseline(_rates())
    first = fig.axes[0]
    ys = sorted({round(float(y), 6) for line in first.get_lines() for y in line.get_ydata()})
    assert ys == [12.5, 20.0, 30.0]                  # random, shuffled, observed (in %)
    assert len(first.get_lines()) == 2 * 2 + 1       # (observed, shuffled) x 2 domains + random


def test_repeat_rates_refuse_a_frame_without_the_shuffled_baseline():
    with pytest.raises(ValueError, match="first_shuffled"):
        repeat_rates_vs_baseline(_rates().drop(columns=["first_shuffled"]))


def test_lift_heatmap_shows_the_layer_asked_for_and_blank_diagonal():
    idx = pd.MultiIndex.from_product([[0, 1], range(3)], names=["layer", "expert"])
    lift = pd.DataFrame(np.ones((6, 3)), index=idx, columns=range(3))
    lift.loc[(1, 0), 2] = 4.0
    for layer in (0, 1):
        lift.loc[(layer, 0), 0] = lift.loc[(layer, 1), 1] = lift.loc[(layer, 2), 2] = np.nan
    img = lift_heatmap(lift, layer=1).axes[0].get_images()[0].get_array()
    assert img[0, 2] == 4.0 and np.ma.is_masked(img[0, 0])
    with pytest.raises(KeyError, match="layer 7"):
        lift_heatmap(lift, layer=7)


def test_specialization_scatter_puts_each_domain_expert_at_load_vs_specialization():
    idx = pd.MultiIndex.from_product([["a", "b"], [0], [0, 1]], names=["domain", "layer", "expert"])
    svl = pd.DataFrame({"specialization": [0.9, 0.1, 0.8, 0.2], "load": [0.85, 0.15, 0.85, 0.15]}, index=idx)
    ax = specialization_scatter(svl).axes[0]
    pts = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(map(tuple, pts.round(2).tolist())) == [(0.15, 0.1), (0.15, 0.2), (0.85, 0.8), (0.85, 0.9)]


def test_vocab_vs_chance_draws_both_per_kind():
    layers = pd.Index([0, 1], name="layer")
    s = pd.DataFrame({"input token": [0.6, 0.7]}, index=layers)
    c = pd.DataFrame({"input token": [0.4, 0.4]}, index=layers)
    assert len(vocab_vs_chance(s, c).axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="no column"):
        vocab_vs_chance(s, c.rename(columns={"input token": "x"}))


def test_saturation_ends_at_100_percent_at_the_end_of_training():
    idx = pd.MultiIndex.from_product([[10, 50], [0, 1]], names=["checkpoint", "layer"])
    sat = pd.DataFrame({"top1": [0.2, 0.3, 0.6, 0.7], "topk": [0.3, 0.4, 0.7, 0.8], "k": 2}, index=idx)
    ref = pd.DataFrame({"share": [0.01], "value": [60.0], "metric": ["topk"]})
    fig = saturation_vs_training(sat, {10: 0.1, 50: 0.5}, reference=ref)
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [10.0, 50.0, 100.0] and line.get_ydata()[-1] == 100.0
    assert any(list(l.get_xdata()) == [1.0] for l in fig.axes[1].get_lines())      # the reference point
    with pytest.raises(KeyError, match="50"):
        saturation_vs_training(sat, {10: 0.1})


def test_distribution_marks_the_overall_load_of_every_expert():
    from moelab.plots.baselined import distribution_vs_overall

    idx = pd.MultiIndex.from_product([["a", "b"], [0], range(2)], names=["domain", "layer", "expert"])
    dist = pd.DataFrame({"fraction": [0.9, 0.1, 0.5, 0.5], "count": [9, 1, 5, 5]}, index=idx)
    overall = pd.Series([0.7, 0.3], index=pd.MultiIndex.from_product([[0], range(2)], names=["layer", "expert"]))
    ax = distribution_vs_overall(dist, overall).axes[0]
    marks = [c for c in ax.collections if c.get_label() == "all tokens (load)"]
    assert len(marks) == 1 and sorted(seg[0][1] for seg in marks[0].get_segments()) == [0.3, 0.7]


def test_saturation_draws_each_layers_chance_level_in_its_colour_and_names_it():
    idx = pd.MultiIndex.from_product([[10, 50], [0, 1]], names=["checkpoint", "layer"])
    sat = pd.DataFrame({"top1": [0.2, 0.3, 0.6, 0.7], "topk": [0.3, 0.4, 0.7, 0.8], "k": 2}, index=idx)
    chance = pd.DataFrame({"top1": [0.125, 0.5], "topk": [0.25, 0.6], "k": 2}, index=pd.Index([0, 1], name="layer"))
    fig = saturation_vs_training(sat, {10: 0.1, 50: 0.5}, chance=chance, caption="source: test")
    for ax, col in zip(fig.axes[:2], ["top1", "topk"]):
        lines = ax.get_lines()
        for layer in (0, 1):
            curve = next(l for l in lines if l.get_label() == f"layer {layer}")
            dashed = [l for l in lines if l.get_linestyle() == "--" and l.get_color() == curve.get_color()
                      and len(l.get_ydata()) == 2]
            assert [d.get_ydata()[0] for d in dashed] == [pytest.approx(100 * chance.loc[layer, col])]
    assert "chance (independent routing, same loads)" in [t.get_text() for t in fig.legends[0].get_texts()]
    with pytest.raises(ValueError, match="saturation_chance"):
        saturation_vs_training(sat, {10: 0.1, 50: 0.5}, chance=chance.drop(columns="topk"))
