"""The papers' numbers: every entry names its source; Table 5 is internally consistent."""

import numpy as np

from moelab import papers
from moelab.metrics import random_repeat_rates


def test_every_entry_names_a_section_table_or_figure():
    for name, e in {**papers.MIXTRAL, **papers.OLMOE}.items():
        assert e.source and any(w in e.source for w in ("§", "Table", "Figure", "abstract", "paper", "transformers")), name


def test_table5_has_the_papers_layers_and_sits_above_random_at_layer_15():
    t = papers.mixtral_table5()
    assert list(t.columns.levels[1]) == [0, 15, 31]
    first_r, any_r = (100 * r for r in random_repeat_rates(8, 2))
    assert (t[("first", 15)] > first_r).all() and (t[("any", 15)] > any_r).all()
    assert ((t.xs("any", axis=1, level=0) >= t.xs("first", axis=1, level=0)).all()).all()   # any ⊇ first
    assert np.isfinite(t.to_numpy()).all()


def test_the_mixtral_paper_is_not_credited_with_a_training_loss():
    e = papers.MIXTRAL["training_loss"]
    assert e.value is None and "does not describe" in e.note
