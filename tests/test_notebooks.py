"""Every notebook executes top to bottom on the embedded model (MOELAB_FAST=1), and writes its figures.

Figures and executed notebooks go to a temporary folder, never into figures/ or notebooks/.
A failing cell fails the test with moelab.notebooks.NotebookError naming the notebook and the cell.
Budget: the ten notebooks together take a few minutes on 2 CPU cores in fast mode.
"""

from __future__ import annotations

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")

from moelab.models import default_model_dir  # noqa: E402
from moelab.notebooks import NotebookError, list_notebooks, run_all  # noqa: E402

pytestmark = pytest.mark.slow

# files each notebook must write (stable names, see figures/README.md)
EXPECTED = {
    "01": ["01_moe_block.png", "01_capacity_buffers.png", "01_synthetic_router_load.png", "01_capacity_drops.png",
           "01_synthetic_balance.csv", "01_capacity_drops.csv"],
    "02": ["02_load_heatmap.png", "02_balance.csv"],
    "03": ["03_table5_repeat_rates.png", "03_table5_repeat_rates.pdf", "03_table5_repeat_rates.csv",
           "03_table5_paper_layout.csv", "03_fig7_domain_distribution.png", "03_fig7_domain_distribution.pdf",
           "03_fig7_domain_distribution.csv", "03_fig7_languages.png", "03_fig8_code.png", "03_fig8_code.pdf",
           "03_fig8_prose.png", "03_fig8_prose.pdf", "03_fig8_code_last.png", "03_fig8_prose_last.png",
           "03_explorer.html"],
    "04": ["04_coactivation.png", "04_coactivation.pdf", "04_coactivation.csv", "04_domain_specialization.png",
           "04_domain_specialization.csv", "04_vocab_specialization.png", "04_vocab_specialization.csv",
           "04_transitions.png", "04_transitions.csv", "04_saturation.png", "04_saturation.pdf", "04_saturation.csv",
           "04_pooled_vs_per_layer.png", "04_pooled_vs_per_layer.csv"],
    "05": ["05_params_mixtral.csv", "05_dense_baselines.csv", "05_router_share.csv", "05_memory_fits.csv", "05_modern_moes.csv",
           "05_moe_vs_dense.png", "05_moe_vs_dense.csv", "05_decode_bytes_vs_batch.png", "05_roofline.png",
           "05_compare_published.csv", "05_claims.csv"],
    "06": ["06_precision_agreement.png", "06_precision_agreement.csv", "06_flip_margins.csv"],
    "07": ["07_ablation_heatmaps.png", "07_importance_vs_usage.png", "07_frontier.png", "07_replay_gap.png",
           "07_bias_sweep.png", "07_ablation_sweep.csv", "07_frontier.csv", "07_replay_gap.csv", "07_bias_sweep.csv"],
    "08": ["08_hit_rate_curves.png", "08_offload_speed.png", "08_ep_imbalance.png", "08_break_even.png",
           "08_hit_rates.csv", "08_bytes_per_token.csv", "08_offload_speed.csv", "08_ep_windows.csv", "08_break_even.csv", "08_claims.csv"],
    "09": ["09_collapse_heatmaps.png", "09_collapse.csv", "09_variants.csv"],
    "10": [],
}
NOTEBOOKS = [p.stem for p in list_notebooks()]


def test_every_notebook_has_expected_outputs_listed():
    assert sorted(n[:2] for n in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path):
    assert (default_model_dir() / "config.json").is_file(), (
        f"the embedded model is missing at {default_model_dir()}; the notebooks run on it"
    )
    figures = tmp_path / "figures"
    runs = run_all(out=figures, only=[name], params={"fast": 1, "model": None, "dtype": None, "device": "cpu"},
                   write_to=tmp_path / "executed", progress=False)
    assert [r.name for r in runs] == [name]
    assert runs[0].executed.is_file() and runs[0].executed.parent == tmp_path / "executed"
    missing = [f for f in EXPECTED[name[:2]] if not (figures / f).is_file() or (figures / f).stat().st_size == 0]
    assert not missing, f"{name} did not write {missing}"


def test_failing_cell_is_named(tmp_path):
    (tmp_path / "01_broken.py").write_text(
        '# %% [markdown]\n# # broken\n\n# %%\nx = 1\n\n# %%\nraise ValueError("boom in cell two")\n'
    )
    with pytest.raises(NotebookError) as e:
        run_all(out=tmp_path / "figs", notebooks=tmp_path, progress=False)
    msg = str(e.value)
    assert "01_broken" in msg and "code cell 2 of 2" in msg and "boom in cell two" in msg
    assert (tmp_path / "01_broken.ipynb").is_file()          # the partial notebook is kept for reading
