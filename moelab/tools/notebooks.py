"""Execute moelab's notebooks and refresh `figures/`: the figure pipeline.

    $ make figures                                   # every notebook, on the embedded model
    $ moelab figures --only 03                       # one notebook (name prefix)
    $ python -m moelab.notebooks --fast --out /tmp/figs
    >>> from moelab.notebooks import run_all         # doctest: +SKIP
    >>> run_all(only=["02"], params={"fast": 1})     # doctest: +SKIP

The notebooks live in `notebooks/NN_name.py` as jupytext "percent" scripts, the
single source of truth in git. `run_all` converts each to a notebook with
jupytext, executes it top to bottom with nbclient in a kernel of *this*
interpreter, and writes the executed `notebooks/NN_name.ipynb` next to it
(generated, not committed). A failing cell stops the run with `NotebookError`
naming the notebook, the cell and the exception; the partially executed
notebook is still written so the traceback can be read in Jupyter.

Parameters reach the notebooks as environment variables (each notebook's first
cell, tagged `parameters`, reads them with defaults):

    MOELAB_MODEL            None = the embedded model; a local folder or hub id (real Mixtral)
    MOELAB_DTYPE            float32 | bfloat16 | float16 (default: fp16 on CUDA; on CPU bf16 where native, else fp32)
    MOELAB_DEVICE           cpu | cuda | auto
    MOELAB_DOCS_PER_DOMAIN  held-out documents traced per corpus domain
    MOELAB_SEQ_LEN          tokens per traced window
    MOELAB_FIGURES          output folder of figures and CSV tables (run_all sets it from `out`, default
                            figures/); unset in a notebook run by hand: out/figures/ (`figures_dir`)
    MOELAB_FAST             1 = smaller everything (the test suite)

`params={"fast": 1, "model": "/path"}` sets them for one run (keys with or
without the MOELAB_ prefix, any case); anything already in the environment is
passed through, so `MOELAB_MODEL=... moelab figures` works too.

Kernel: a throw-away kernelspec whose argv is `sys.executable -m
ipykernel_launcher`, so the notebooks always run in the interpreter (and venv)
that runs `run_all`, whatever kernelspecs the machine has installed.

The module also holds `trace_documents`, the one helper the notebooks share
that the library does not have yet (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PARAMS = ("MODEL", "DTYPE", "DEVICE", "DOCS_PER_DOMAIN", "SEQ_LEN", "FIGURES", "FAST")
KERNEL_NAME = "moelab-notebooks"
KERNEL_DISPLAY_NAME = "Python 3 (moelab)"   # the kernel `make install` registers as `python3`; the sources say the same
# In executed notebooks tqdm.auto would save ipywidgets bars, which an untrusted (or widget-less)
# viewer shows as their first state ("0/38"); headless kernels use text bars instead, and
# coalesce_streams keeps only each bar's final line ("100% 38/38").
_TEXT_PROGRESS = "import tqdm.auto, tqdm.std; tqdm.auto.tqdm = tqdm.std.tqdm; tqdm.auto.trange = tqdm.std.trange"


class NotebookError(RuntimeError):
    """A notebook cell failed (or timed out); the message names the notebook and the cell."""


@dataclass
class NotebookRun:
    name: str              # "03_mixtral_routing_analysis"
    source: Path           # notebooks/03_....py
    executed: Path         # the executed .ipynb written
    seconds: float
    cells: int             # code cells executed


# ------------------------------------------------------------------------------ locating
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def notebooks_dir() -> Path:
    """`$MOELAB_NOTEBOOKS`, else the repository's `notebooks/` folder."""
    env = os.environ.get("MOELAB_NOTEBOOKS")
    return Path(env) if env else repo_root() / "notebooks"


def default_figures_dir() -> Path:
    """The tracked `figures/` folder that `moelab figures` (= `make figures`) refreshes."""
    return repo_root() / "figures"


def interactive_figures_dir() -> Path:
    """Where a notebook run by hand writes without MOELAB_FIGURES: `out/figures/` of the checkout
    (git-ignored), else `./moelab-figures` -- never the tracked `figures/`."""
    root = repo_root()
    if (root / "figures").is_dir() and (root / "moelab" / "__init__.py").is_file():
        return root / "out" / "figures"
    return Path.cwd() / "moelab-figures"


def figures_dir(value=None) -> Path:
    """The notebooks' figures folder: `value` (MOELAB_FIGURES) when given, else
    `interactive_figures_dir()` with a printed notice, so an interactive run never silently
    rewrites the tracked figures/ (`moelab figures` sets MOELAB_FIGURES=figures/ itself)."""
    if value:
        return Path(value)
    path = interactive_figures_dir()
    print(f"MOELAB_FIGURES is not set: figures and tables go to {path} (untracked). "
          "`moelab figures` (make figures) refreshes the tracked figures/.")
    return path


def list_notebooks(only=None, folder=None) -> list[Path]:
    """The `NN_*.py` notebook sources in order; `only` keeps names starting with any of its prefixes."""
    folder = Path(folder) if folder else notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no notebooks folder at {folder}: run from a moelab source checkout, or set MOELAB_NOTEBOOKS "
            "to the folder holding NN_*.py notebooks"
        )
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.py"))
    if only:
        only = [str(o) for o in ([only] if isinstance(only, (str, int)) else only)]
        wanted = [o.zfill(2) if o.isdigit() else o for o in only]
        found = [p for p in found if any(p.stem.startswith(w) for w in wanted)]
        if not found:
            names = [p.stem for p in sorted(folder.glob("[0-9][0-9]_*.py"))]
            raise ValueError(f"only={only!r} matches no notebook; available: {names}")
    if not found:
        raise FileNotFoundError(f"no NN_*.py notebooks in {folder}")
    return found


# ------------------------------------------------------------------------------ params
def params_env(params: dict | None, out=None) -> dict[str, str]:
    """The environment for the kernel: os.environ + MOELAB_* from `params` + MOELAB_FIGURES=out."""
    env = dict(os.environ)
    for key, value in (params or {}).items():
        name = str(key).upper()
        name = name if name.startswith("MOELAB_") else f"MOELAB_{name}"
        if name.removeprefix("MOELAB_") not in PARAMS:
            raise ValueError(f"unknown notebook parameter {key!r}; known: {[f'MOELAB_{p}' for p in PARAMS]}")
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(int(value)) if isinstance(value, bool) else str(value)
    if out is not None:
        env["MOELAB_FIGURES"] = str(Path(out).resolve())
    elif "MOELAB_FIGURES" not in env:
        env["MOELAB_FIGURES"] = str(default_figures_dir())
    else:
        env["MOELAB_FIGURES"] = str(Path(env["MOELAB_FIGURES"]).resolve())
    # a source checkout without `pip install -e .` still imports moelab in the kernel
    root = str(repo_root())
    if (repo_root() / "moelab" / "__init__.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["MOELAB_HEADLESS"] = "1"           # no frontend: notebooks skip their interactive widgets
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silence the debugger warning in cell outputs
    return env


def _kernel_manager(spec_dir: Path):
    """An AsyncKernelManager for a kernelspec that runs this very interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    kdir = spec_dir / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"moelab ({Path(sys.executable).parent.parent.name})",
        "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


# ------------------------------------------------------------------------------ running
def _failure(nb, name: str, err) -> NotebookError:
    """A NotebookError naming the notebook, the failing cell (number and first lines) and the error."""
    from nbclient.exceptions import CellTimeoutError

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    failing, number = None, None
    for i, c in enumerate(code_cells, 1):
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            failing, number = c, i
    if failing is None:  # a timeout leaves no error output: take the last cell that started
        started = [(i, c) for i, c in enumerate(code_cells, 1) if c.get("execution_count")]
        if started:
            number, failing = started[-1]
    where = f"code cell {number} of {len(code_cells)}" if number else "a cell"
    src = ""
    if failing is not None:
        lines = failing.source.strip().splitlines()
        src = "\n".join("    | " + line for line in lines[:8]) + ("\n    | ..." if len(lines) > 8 else "")
    if isinstance(err, CellTimeoutError):
        what = f"timed out ({err})"
    else:
        ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
        what = f"{ename}: {evalue}"
    return NotebookError(f"notebook {name}: {where} failed: {what}\n{src}".rstrip())


def run_notebook(source, *, env: dict, timeout: int = 1200, write_to=None, progress: bool = True) -> NotebookRun:
    """Execute one jupytext notebook; write the executed .ipynb; raise NotebookError on a failing cell."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from tqdm.auto import tqdm

    source = Path(source)
    name = source.stem
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": KERNEL_DISPLAY_NAME, "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    out = Path(write_to) / f"{name}.ipynb" if write_to else source.with_suffix(".ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    bar = tqdm(total=n_code, desc=name, unit="cell", leave=True, disable=not progress)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="moelab-kernel-") as spec_dir:
        km = _kernel_manager(Path(spec_dir))
        client = NotebookClient(
            nb, km=km, timeout=timeout, kernel_name=KERNEL_NAME, allow_errors=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR",   # no transport warnings in the output
                             f"--IPKernelApp.exec_lines={_TEXT_PROGRESS}"],
            coalesce_streams=True,
            resources={"metadata": {"path": str(source.parent)}},
            on_cell_executed=lambda **kw: bar.update(1),
        )
        try:
            client.execute(env=env, cleanup_kc=True)   # we own km: shut the kernel down
        except (CellExecutionError, CellTimeoutError) as err:
            nbformat.write(nb, out)
            raise _failure(nb, name, err) from None
        finally:
            bar.close()
    nbformat.write(nb, out)
    return NotebookRun(name, source, out, time.perf_counter() - t0, n_code)


def run_all(out=None, only=None, timeout: int = 1200, params: dict | None = None, *, notebooks=None,
            write_to=None, progress: bool = True) -> list[NotebookRun]:
    """Execute the notebooks in order; figures and CSV tables go to `out` (default `figures/`).

    out        figures folder (sets MOELAB_FIGURES); default: $MOELAB_FIGURES, else the repository's figures/
    only       notebook name prefixes, e.g. ["01", "03"] or "03"
    timeout    seconds per cell
    params     notebook parameters, e.g. {"fast": 1, "model": "/models/Mixtral-8x7B-v0.1"}
    notebooks  folder of NN_*.py sources (default: $MOELAB_NOTEBOOKS, else the repository's notebooks/)
    write_to   folder for the executed .ipynb files (default: next to each source)

    Stops at the first failing notebook with NotebookError (notebook, cell, exception).
    """
    from tqdm.auto import tqdm

    sources = list_notebooks(only, notebooks)
    env = params_env(params, out)
    Path(env["MOELAB_FIGURES"]).mkdir(parents=True, exist_ok=True)
    runs = []
    t0 = time.perf_counter()
    outer = tqdm(sources, desc="notebooks", unit="nb", disable=not progress or len(sources) < 2)
    for src in outer:
        outer.set_postfix_str(src.stem)
        run = run_notebook(src, env=env, timeout=timeout, write_to=write_to, progress=progress)
        runs.append(run)
        if progress:
            tqdm.write(f"  {run.name}: {run.seconds:.0f} s -> {run.executed}")
    if progress:
        tqdm.write(f"{len(runs)} notebook(s) in {time.perf_counter() - t0:.0f} s; figures in {env['MOELAB_FIGURES']}")
    return runs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m moelab.notebooks",
                                description="Execute moelab's notebooks and refresh the figures.")
    p.add_argument("--out", default=None, help="figures folder (default: figures/)")
    p.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    p.add_argument("--fast", action="store_true", help="MOELAB_FAST=1: small corpus slices (as in the tests)")
    p.add_argument("--model", default=None, help="MOELAB_MODEL: local folder or hub id (default: embedded model)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="MOELAB_DTYPE")
    p.add_argument("--device", default=None, choices=["cpu", "cuda", "auto"], help="MOELAB_DEVICE")
    p.add_argument("--write-to", default=None, help="folder for the executed .ipynb (default: next to the sources)")
    a = p.parse_args(argv)
    params = {k: v for k, v in dict(model=a.model, dtype=a.dtype, device=a.device).items() if v is not None}
    if a.fast:
        params["fast"] = 1
    try:
        run_all(out=a.out, only=a.only, timeout=a.timeout, params=params, write_to=a.write_to)
    except NotebookError as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        raise SystemExit(1) from None


# ------------------------------------------------------------------------------ notebook helpers
def trace_documents(model, tok, docs: dict, *, seq_len: int = 256, batch_size: int = 8, predictions: bool = False,
                    logits: bool = False, progress: bool = True, desc: str = "trace"):
    """The notebooks' name for `moelab.corpus.trace_corpus` (the same loop as `moelab trace --corpus`)."""
    from ..corpus import trace_corpus

    return trace_corpus(model, tok, docs, seq_len=seq_len, batch_size=batch_size, predictions=predictions,
                        logits=logits, progress=progress, desc=desc)


def resolve_device_dtype(device: str = "auto", dtype: str | None = None, model=None):
    """The notebooks' parameters -> (device, torch dtype), printing the choice and why
    (`moelab.device.resolve_device_dtype`: CUDA fp16; on CPU bf16 only where it is native, else fp32).
    One CPU thread for the embedded model: it gains nothing from more, and on a busy 2-core
    machine two threads stall each other."""
    import torch

    from ..device import resolve_device_dtype as resolve

    dev, dt = resolve(device, dtype)
    if dev == "cpu" and model is None:
        torch.set_num_threads(1)
    return dev, dt


if __name__ == "__main__":
    main()

