"""Build hook (all metadata is in pyproject.toml): the wheel carries moelab's data as package data.

`build_py` copies, into the wheel's `moelab/_data/`, the corpus (`data/corpus/`) and the
final weights of every embedded model (`data/models/<name>/*.json`, `*.safetensors`,
`README.md`; never `checkpoints/`), so a non-editable install loads the embedded model and
the corpus from any folder (`moelab.data.data_dir`). Nothing is duplicated in git; an
editable install reads `data/` in place. `python scripts/build_wheel.py` builds the wheel
and writes its size to bench/results/wheel.txt.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MODEL_FILES = ("*.json", "*.safetensors", "README.md")   # the final weights of data/models/<name>/, not checkpoints/


def packaged_data_files(data: Path = ROOT / "data") -> list[Path]:
    """Every file of `data/` that the wheel ships (the corpus, and each embedded model's final weights)."""
    files = [data / "README.md", data / "models" / "README.md"]
    files += [f for f in (data / "corpus").rglob("*") if f.is_file()]
    for model in sorted(p.parent for p in (data / "models").glob("*/config.json")):
        files += [f for pattern in MODEL_FILES for f in model.glob(pattern) if f.is_file()]
    return sorted({f for f in files if f.is_file()})


class build_py_with_data(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)   # `pip install -e .` reads data/ in place
        if not editable:   # an in-tree build/ may hold modules or models since removed: start clean
            shutil.rmtree(Path(self.build_lib) / "moelab", ignore_errors=True)
        super().run()
        if editable:
            return
        target = Path(self.build_lib) / "moelab" / "_data"
        for f in packaged_data_files():
            dest = target / f.relative_to(ROOT / "data")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)


if __name__ == "__main__":   # setuptools runs this file as __main__; tests import packaged_data_files
    setup(cmdclass={"build_py": build_py_with_data})
