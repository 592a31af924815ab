"""A non-editable install works away from the checkout: the wheel carries the corpus and the
embedded models' final weights, and the README example and `moelab trace` run from a temporary
folder in a fresh venv (nothing downloaded: the test venv sees this venv's dependencies)."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_wheel import build_wheel, describe  # noqa: E402

sys.path.pop(0)
sys.path.insert(0, str(ROOT))
from setup import packaged_data_files  # noqa: E402

sys.path.pop(0)
from test_readme import thirty_seconds_block  # noqa: E402


def test_package_data_rule_takes_every_models_final_weights_and_no_checkpoint(tmp_path):
    data = tmp_path / "data"
    for f in ("README.md", "models/README.md", "corpus/MANIFEST.json", "corpus/code/train.txt",
              "models/a/config.json", "models/a/model.safetensors", "models/a/README.md", "models/a/eval.json",
              "models/a/training_log.csv", "models/a/checkpoints/step-000006/config.json",
              "models/a/checkpoints/step-000006/model.safetensors", "models/b-new/config.json",
              "models/b-new/model.safetensors", "models/not-a-model/notes.json"):
        (data / f).parent.mkdir(parents=True, exist_ok=True)
        (data / f).write_text("x")
    got = sorted(str(f.relative_to(data)) for f in packaged_data_files(data))
    assert got == ["README.md", "corpus/MANIFEST.json", "corpus/code/train.txt", "models/README.md",
                   "models/a/README.md", "models/a/config.json", "models/a/eval.json", "models/a/model.safetensors",
                   "models/b-new/config.json", "models/b-new/model.safetensors"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, moelab script, env) of a new venv holding the wheel; this venv's packages are visible."""
    tmp = tmp_path_factory.mktemp("wheel")
    # no PYTHONPATH: a checkout on it (with the moelab.egg-info a build leaves) would look installed to pip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOELAB_DATA", "MOELAB_NOTEBOOKS")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    wheel = build_wheel(tmp / "dist")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, env=env, cwd=tmp)
    # then this venv's site-packages, as a path only (its .pth files, e.g. an editable moelab, are not run);
    # written after the install, so that pip never sees (nor touches) this venv's own moelab
    (Path(purelib) / "host_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert (Path(purelib) / "moelab" / "_data").is_dir(), "the wheel did not install into the new venv"
    return wheel, py, venv / "bin" / "moelab", env, tmp


@pytest.mark.slow
def test_the_wheel_holds_the_data_and_states_its_size(installed):
    wheel = installed[0]
    names = zipfile.ZipFile(wheel).namelist()
    assert "moelab/_data/models/moelab-mixtral-tiny/model.safetensors" in names
    assert any(n.startswith("moelab/_data/corpus/code/") for n in names)
    assert not any("/checkpoints/" in n for n in names) and not any(n.startswith("notebooks/") for n in names)
    assert f"{wheel.stat().st_size / 1e6:.1f} MB" in describe(wheel)


@pytest.mark.slow
def test_readme_example_and_moelab_trace_run_from_a_temporary_folder(installed):
    _, py, moelab_cli, env, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    code = thirty_seconds_block() + "\nimport json\nprint('RESULT', json.dumps([moelab.__file__, list(tr.experts.shape)]))\n"
    res = subprocess.run([str(py), "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    where, shape = json.loads(res.stdout.split("RESULT", 1)[1])
    assert Path(where).resolve().is_relative_to(tmp / "venv") and len(shape) == 3   # the wheel's moelab, not the checkout
    res = subprocess.run([str(moelab_cli), "trace", "--text", "def add(a, b): return a + b", "--out", "run"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((work / "run").rglob("*.parquet"))
    res = subprocess.run([str(moelab_cli), "trace", "--corpus", "heldout", "--domains", "code", "--max-docs", "1",
                          "--out", "corpus_run"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_checkout_only_data_fails_with_where_it_looked_and_the_variable(installed):
    _, py, _, env, tmp = installed
    code = ("import moelab.models as m\ntry:\n    m.checkpoints()\nexcept FileNotFoundError as e:\n    print('ERR', e)\n"
            "from moelab.tools.notebooks import list_notebooks\ntry:\n    list_notebooks()\n"
            "except FileNotFoundError as e:\n    print('ERR', e)\n")
    res = subprocess.run([str(py), "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    errors = [line for line in res.stdout.splitlines() if line.startswith("ERR")]
    assert len(errors) == 2, res.stdout + res.stderr[-2000:]
    assert "MOELAB_DATA" in errors[0] and "checkpoints" in errors[0]
    assert "MOELAB_NOTEBOOKS" in errors[1]
