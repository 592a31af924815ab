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


def test_table5_random_levels_are_the_uniform_repeat_rates_the_caption_states():
    e = papers.MIXTRAL["table5_random"].value
    first_r, any_r = (100 * r for r in random_repeat_rates(8, 2))
    assert e["first"] == first_r and abs(e["any"] - any_r) < 0.5          # caption rounds 46.4 % to 46 %


def test_olmoe_saturation_markers_are_the_numbers_its_quoted_text_states():
    ref = papers.olmoe_saturation_reference()
    quote = papers.OLMOE["router_saturation"].value
    for share, value in zip(ref["share"], ref["value"]):
        assert f"after 1% of pretraining" in quote if share == 0.01 else f"At {share:.0%} of pretraining" in quote
        assert f"∼{value:.0f}%" in quote
    assert set(ref["metric"]) == {"topk"} and "§5.1" in ref["source"].iloc[0]


def test_olmoe_random_saturation_is_the_uniform_chance_level():
    from moelab.metrics.baselines import independent_saturation

    r = papers.OLMOE["saturation_random"].value
    u = np.full(64, 1 / 64)
    assert round(100 * independent_saturation(u, k=1), 1) == r["top1"]
    assert 100 * independent_saturation(u, k=8) == r["top8"]


def test_every_typed_in_table_says_where_it_was_verified():
    assert "Verified:" in papers.MIXTRAL["table5"].note
    for key, text in papers.VERIFIED.items():
        assert "file id" in text or "https://" in text, key


def test_near_uniform_mixtral_load_is_credited_to_olmoe_not_to_the_mixtral_paper():
    assert "uniform routing baseline" in papers.OLMOE["mixtral_near_uniform"].value
    assert "§5.3" in papers.OLMOE["mixtral_near_uniform"].source
    assert "does not state that the load is uniform" in papers.MIXTRAL["figure7_domains"].note


def test_olmoe_section5_entries_name_their_subsection_and_figure():
    expected = {"router_saturation": ("§5.1", "Figure 20"), "coactivation": ("§5.2", "Figure 21"),
                "coactivation_merge": ("§5.2", "Equation 6"), "domain_specialization": ("§5.3", "Figure 22"),
                "mixtral_near_uniform": ("§5.3", "Figure 22"), "vocabulary_specialization": ("§5.4", "Figure 23")}
    for key, words in expected.items():
        source = papers.OLMOE[key].source
        assert all(w in source for w in words), (key, source)
        assert papers.cite(papers.OLMOE[key]).endswith(f"({source})")


def test_quoted_entries_are_marked_as_quotes():
    for name, e in {**papers.MIXTRAL, **papers.OLMOE}.items():
        if isinstance(e.value, str) and e.value.startswith("'"):
            assert e.value.rstrip().endswith("'") and e.note.startswith("quoted"), name
