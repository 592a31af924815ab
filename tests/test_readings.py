"""balance_reading names each layer balanced / uneven / collapsed from its own numbers."""

import numpy as np
import pandas as pd
import pytest

import moelab
from moelab.readings import balance_reading, nearest_row


def _trace(per_layer):                      # list of (tokens,) expert arrays, one per layer, k = 1
    return moelab.RoutingTrace.from_arrays(np.stack(per_layer, 1)[:, :, None], num_experts=8)


def test_uniform_layer_is_balanced_and_one_expert_layer_is_collapsed():
    uniform = np.arange(8).repeat(100)
    one = np.zeros(800, int)
    r = balance_reading(_trace([uniform, one]))
    assert r["reading"].tolist() == ["balanced", "collapsed"]
    assert r.loc[0, "cv"] == 0 and r.loc[1, "busiest_expert"] == 0 and r.loc[1, "max_share"] == 1


def test_skewed_but_every_expert_used_is_uneven():
    counts = [300, 100, 100, 100, 60, 60, 40, 40]          # min share 5 %, CV > 0.35
    ex = np.repeat(np.arange(8), counts)
    r = balance_reading(_trace([ex]))
    assert r.loc[0, "reading"] == "uneven"
    assert r.loc[0, "min_share"] == pytest.approx(40 / 800)
    assert r.loc[0, "cv"] == pytest.approx(np.std(counts) / np.mean(counts))


def test_empty_trace_is_refused():
    with pytest.raises(ValueError, match="empty"):
        balance_reading(moelab.RoutingTrace.from_arrays(np.zeros((0, 1, 1), int), num_experts=8))


def test_nearest_row_picks_the_closest_reference_value():
    ref = pd.DataFrame({"x": [0.0, 0.3, 0.9]}, index=["bias 0", "bias 1", "bias 2"])
    assert nearest_row(pd.Series([0.29, 0.7, -1.0], name="x"), ref).tolist() == ["bias 1", "bias 2", "bias 0"]
