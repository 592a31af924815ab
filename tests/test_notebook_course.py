"""The course notebooks read like a course: each opens with what you learn and need, reads its
parameters with one library call, has a checkable exercise (a solution cell and an assert), and
closes with a summary and where to go next. Read from the sources, without running them."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10"]


def _source(prefix: str) -> str:
    found = sorted(NOTEBOOKS.glob(f"{prefix}_*.py"))
    assert found, f"no notebook {prefix}_*.py in {NOTEBOOKS}"
    return found[0].read_text(encoding="utf-8")


def _cells(src: str) -> list[str]:
    return ["# %%" + c for c in src.split("\n# %%")[1:]]


@pytest.mark.parametrize("prefix", COURSE)
def test_notebook_opens_with_what_you_learn_and_need_and_closes_with_where_next(prefix):
    src = _source(prefix)
    head = src[: src.index('# %% tags=["parameters"]')]
    assert "**What you will learn.**" in head and "**What you need.**" in head
    tail = src[src.rindex("## Summary"):] if "## Summary" in src else ""
    assert tail and "**Where next.**" in tail, f"{prefix} has no closing summary with 'Where next'"


@pytest.mark.parametrize("prefix", COURSE)
def test_parameters_come_from_one_library_call(prefix):
    params = next(c for c in _cells(_source(prefix)) if c.startswith('# %% tags=["parameters"]'))
    assert "notebook_params(" in params and "os.environ" not in params


@pytest.mark.parametrize("prefix", COURSE)
def test_every_exercise_has_a_solution_cell_followed_by_an_assert(prefix):
    cells = _cells(_source(prefix))
    solutions = [i for i, c in enumerate(cells) if c.startswith('# %% tags=["solution"]')]
    assert solutions, f"notebook {prefix} has no exercise with a solution cell"
    for i in solutions:
        check = cells[i + 1] if i + 1 < len(cells) else ""
        assert "assert " in check, f"notebook {prefix}: the cell after solution cell {i} does not check the answer"
        blank = cells[i - 1]
        assert "None" in blank, f"notebook {prefix}: the cell before solution cell {i} should leave the answer blank"
