"""Notebook 08's figures show what the tables hold: per-layer spread, every utilisation."""

import numpy as np
import pandas as pd

from moelab.serving import break_even_table, hit_rate_table
from moelab.serving.plots import break_even_plot, hit_rate_curves


def test_hit_rate_bands_span_the_per_layer_min_and_max():
    ex = np.random.default_rng(0).integers(0, 8, (2_000, 3, 1))
    ex[:, 0] = 0  # layer 0 always asks for expert 0: hit rate ~1, far from the iid layers
    t = hit_rate_table(ex, [2, 4], ["lru"], label="toy")
    fig = hit_rate_curves(t)
    ax = fig.axes[0]
    (band,) = ax.collections  # one band per policy
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    lru = t[t.policy == "lru"]
    assert np.isclose(ys.max(), lru.hit_rate.max()) and np.isclose(ys.min(), lru.hit_rate.min())
    assert any("min-max over 3 layers" in x.get_text() for x in ax.get_legend().get_texts())


def test_break_even_plot_has_one_panel_per_utilisation():
    df = pd.concat([break_even_table([1e8, 1e9], 1.5, 2000, 1.29, utilisation=u).assign(setup="s", utilisation=u)
                    for u in (0.3, 0.9)])
    fig = break_even_plot(df)
    assert [a.get_title() for a in fig.axes] == ["GPU utilisation 30%", "GPU utilisation 90%"]
    assert len(break_even_plot(df[df.utilisation == 0.3].drop(columns="utilisation")).axes) == 1
