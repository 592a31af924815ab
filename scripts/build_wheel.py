"""Build moelab's wheel (with the corpus and the embedded models' final weights) and state its size.

    $ python scripts/build_wheel.py                       # -> dist/moelab-*.whl, bench/results/wheel.txt
    $ python scripts/build_wheel.py --out /tmp/wheels --no-report

Builds with the running interpreter's setuptools (`pip wheel --no-deps --no-build-isolation --no-index`,
nothing downloaded), then writes what the wheel holds: its size, the packaged data per folder
(`moelab/_data/`, see setup.py) and the code, to bench/results/wheel.txt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """Build the wheel of this checkout into `out`; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", tmp, str(ROOT)], check=True)
        wheels = list(Path(tmp).glob("moelab-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one moelab wheel in {tmp}, found {wheels}")
        dest = out / wheels[0].name
        dest.write_bytes(wheels[0].read_bytes())
    return dest


def describe(wheel: Path) -> str:
    """Size of the wheel and of what it holds, per top folder of moelab/_data/ and for the code."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])   # files, bytes, compressed bytes
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[:2] == ["moelab", "_data"]:
                key = "/".join(parts[:4]) if len(parts) > 4 and parts[2] == "models" else "/".join(parts[:3])
                key = "moelab/_data (READMEs)" if key.endswith(".md") or key.endswith("/models") else key
            elif parts[0] == "moelab":
                key = "moelab (code)"
            else:
                key = parts[0]
            g = groups[key]
            g[0] += 1
            g[1] += info.file_size
            g[2] += info.compress_size
    lines = [f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB "
             f"(built by `python scripts/build_wheel.py`; pip wheel --no-deps --no-build-isolation)", "",
             f"{'content':<58}{'files':>6}{'MB':>8}{'MB zipped':>11}"]
    for key in sorted(groups, key=lambda k: -groups[k][2]):
        n, size, csize = groups[key]
        lines.append(f"{key:<58}{n:>6}{size / 1e6:>8.1f}{csize / 1e6:>11.1f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "dist"), help="folder for the wheel (default: dist/)")
    p.add_argument("--report", default=str(ROOT / "bench" / "results" / "wheel.txt"))
    p.add_argument("--no-report", action="store_true", help="do not write the report file")
    a = p.parse_args(argv)
    wheel = build_wheel(Path(a.out))
    text = describe(wheel)
    print(text, end="")
    if not a.no_report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(text)
        print(f"wrote {a.report}")
    return wheel


if __name__ == "__main__":
    main()
