"""The README's thirty-seconds example runs as written, and its stated shape is what it prints."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def thirty_seconds_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Thirty seconds"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_thirty_seconds_example_runs_and_its_shape_comment_is_true(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # it saves run.parquet in the working folder
    code = thirty_seconds_block()
    stated = re.search(r"tr\.experts\.shape\s+# \((\d+), (\d+), (\d+)\)", code)
    assert stated, "the example states tr.experts.shape in a comment"
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)        # noqa: S102 - the README's own example
    tr = ns["tr"]
    assert tr.experts.shape == tuple(int(g) for g in stated.groups())
    assert set(tr.columns["domain"].tolist()) == {"code", "fr"}


def test_every_public_name_in_the_api_table_exists():
    import moelab

    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Public API"):text.index("## Command line")]
    names = set(re.findall(r"^\| `moelab\.(\w+)", table, re.M))
    assert names, "the API table lists moelab.* names"
    missing = [n for n in sorted(names) if not hasattr(moelab, n)]
    assert not missing, missing


@pytest.mark.parametrize("path", ["docs/metrics.md", "docs/compute.md", "docs/serving.md", "docs/explorer.md",
                                  "docs/interventions.md", "docs/scale.md", "requirements/lock.txt"])
def test_files_the_readme_links_exist(path):
    assert (README.parent / path).is_file()


def test_the_readme_names_every_untraced_moe_type_and_states_the_swept_counts():
    from moelab.arch import UNSUPPORTED
    from moelab.arch.capabilities import adapter_model_types, moe_model_types

    text = README.read_text(encoding="utf-8")
    swept = moe_model_types()
    traced = [mt for mt in swept if mt in adapter_model_types()]
    listed = [mt for mt in swept if mt in UNSUPPORTED]
    assert f"of its {len(swept)} decoder-only MoE causal-LM types, **{len(traced)} are traced**" in text
    assert f"The other {len(listed)} are listed" in text
    missing = [mt for mt in UNSUPPORTED if f"| {mt} |" not in text and f"{mt} and" not in text
               and f"and {mt} are listed" not in text]
    assert not missing, f"untraced model types the README does not name: {missing}"
