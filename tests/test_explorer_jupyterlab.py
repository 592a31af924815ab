"""Smoke test: the explorer renders and answers a click inside a real JupyterLab (headless Chromium).

JupyterLab starts on 127.0.0.1 (a free port, token auth, settings/workspaces/runtime in a temporary
folder), a small notebook tracing three short texts with the embedded model and calling `moelab.explorer.show` is opened and run with
Shift+Enter, the view must become ready and clicking an expert must highlight exactly its tokens.
With MOELAB_SCREENSHOT_DIR set, a screenshot is saved there as explorer_jupyterlab.png (the
figure for the README). Skips (with the reason) like tests/test_explorer_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from moelab.notebooks import repo_root

from test_explorer_browser import browser  # noqa: F401  (the shared headless-Chromium fixture)

pytestmark = pytest.mark.slow

SETUP = """\
import numpy as np, torch, moelab
from moelab.explorer import show
model, tok = moelab.load_model(dtype=torch.float32)          # the embedded model: real routing
texts = ["def add(a, b):\\n    return a + b\\n", "It is a truth universally acknowledged, that a single man",
         "La commande ls affiche le contenu des répertoires."]
with torch.no_grad(), moelab.trace(model) as tr:
    for t in texts:
        model(**tok(t, return_tensors="pt"))
tr = tr.with_columns(domain=np.array(["code", "fiction", "docs_fr"])[tr.sequence])
"""
CELL = SETUP + 'show(tr, tok, title="moelab explorer in JupyterLab")\n'


def expected_experts():
    ns = {}
    exec(SETUP, ns)                     # the same forward passes in this process (fp32, deterministic)
    return ns["tr"].experts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(tmp_path: Path, root: Path):
    """JupyterLab serving `root` on 127.0.0.1 (free port, token auth, state under tmp_path): (url, token, proc)."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install 'moelab[notebooks]')")
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.allow_root=True", "--ServerApp.log_level=WARN"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return url, token, proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
    stop_lab(proc)
    pytest.fail(f"JupyterLab did not answer within 60 s: {log_path.read_text()[-2000:]}")


def stop_lab(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def lab(tmp_path):
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {}, "outputs": [],
                     "source": CELL}],
          "metadata": {"kernelspec": {"display_name": "Python 3 (moelab)", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    root = tmp_path / "root"
    root.mkdir()
    (root / "smoke.ipynb").write_text(json.dumps(nb))
    url, token, proc = start_lab(tmp_path, root)
    yield url, token
    stop_lab(proc)


def offline_page(browser, url, height=950):  # noqa: F811
    """(page, outside): a page that may reach JupyterLab only; other requests are refused and listed in outside."""
    page = browser.new_page(viewport={"width": 1400, "height": height})
    outside = []

    def guard(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    return page, outside


def wait_kernel_idle(page):
    page.wait_for_function("() => /\\| Idle/.test(document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar')"
                           "?.innerText || '')", timeout=90_000)


def test_explorer_renders_and_answers_a_click_in_jupyterlab(lab, browser):
    url, token = lab
    page, outside = offline_page(browser, url, height=1150)
    page.goto(f"{url}/lab/tree/smoke.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
    wait_kernel_idle(page)                                                         # the kernel is up
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(".moelab-x[data-ready='1']", timeout=180_000)   # loads the model, traces 3 texts
    except Exception:
        shot = Path(os.environ.get("MOELAB_SCREENSHOT_DIR") or "/tmp") / "explorer_jupyterlab_failed.png"
        page.screenshot(path=str(shot))
        out = page.locator(".jp-OutputArea").all_inner_texts()
        raise AssertionError(f"the explorer did not become ready in JupyterLab; outputs: {out!r}; screenshot {shot}")
    ex = expected_experts()
    page.locator(".moelab-x .mx-legend .mx-e[data-expert='2']").click()
    hl = set(map(int, page.locator(".moelab-x .mx-t.mx-hl").evaluate_all("els => els.map(e => e.dataset.i)")))
    assert hl == set(np.flatnonzero((ex[:, 0] == 2).any(-1)).tolist())
    page.locator(".moelab-x .mx-t[data-i='5']").hover()
    shown = page.locator(".moelab-x .mx-hover .mx-cell").evaluate_all("els => els.map(e => +e.dataset.expert)")
    assert shown == ex[5].reshape(-1).tolist()
    assert not outside, f"requests left the machine: {outside}"
    shots = os.environ.get("MOELAB_SCREENSHOT_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.locator(".moelab-x").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(shots) / "explorer_jupyterlab.png"))        # JupyterLab around the explorer
    page.close()


NOTEBOOK = "02_tracing_a_model"


def pairing_commands() -> list[str]:
    """The jupytext lines of the Makefile's `lab` recipe (what `make lab` runs before JupyterLab), with
    $(BIN) -> this interpreter's folder."""
    text = (repo_root() / "Makefile").read_text()
    recipe = re.search(r"^lab:.*\n((?:\t.*\n?)+)", text, re.M)
    assert recipe, "the Makefile has a `lab` target"
    lines = [line.strip() for line in recipe.group(1).splitlines() if "jupytext" in line]
    assert lines, "`make lab` pairs the notebooks with jupytext"
    return [line.replace("$(BIN)", str(Path(sys.executable).parent)).replace("$$", "$") for line in lines]


@pytest.fixture
def paired_lab(tmp_path):
    """A checkout-like folder (jupytext.toml, notebooks/02_*.py) paired the way `make lab` does, served by
    JupyterLab: (url, token, source .py, its copy, the paired .ipynb)."""
    pytest.importorskip("jupytext", reason="jupytext is not installed (pip install 'moelab[notebooks]')")
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(repo_root() / "jupytext.toml", root)
    source = repo_root() / "notebooks" / f"{NOTEBOOK}.py"
    shutil.copy(source, root / "notebooks")
    for cmd in pairing_commands():
        subprocess.run(cmd, shell=True, cwd=root, check=True, capture_output=True)
    py, ipynb = root / "notebooks" / f"{NOTEBOOK}.py", root / "notebooks" / f"{NOTEBOOK}.ipynb"
    assert ipynb.is_file() and py.read_bytes() == source.read_bytes()        # pairing rewrites nothing
    url, token, proc = start_lab(tmp_path, root)
    yield url, token, source, py, ipynb
    stop_lab(proc)


def open_by_double_click(browser, url, token):  # noqa: F811
    page, outside = offline_page(browser, url)
    page.goto(f"{url}/lab/tree/notebooks?token={token}")
    page.locator(".jp-DirListing-item", has_text=f"{NOTEBOOK}.ipynb").dblclick()
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    wait_kernel_idle(page)
    page.wait_for_timeout(1500)                           # kernel info has arrived: metadata updates land now
    return page, outside


def test_a_paired_notebook_opens_runnable_by_double_click_and_saves_without_churn(paired_lab, browser):  # noqa: F811
    """The README way: `make lab` pairs every source with an .ipynb (jupytext.toml); a double-click on the
    .ipynb opens a notebook on the "Python 3 (moelab)" kernel; saving it through the server's contents API
    (jupytext's contents manager writes both files), with the metadata a kernel run adds, leaves the tracked
    .py byte for byte. (The save goes through the API: a headless Ctrl+S / File > Save did not reach the
    server reliably here.)"""
    url, token, source, py, ipynb = paired_lab
    page, outside = open_by_double_click(browser, url, token)
    kernel = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName, .jp-Toolbar-kernelName").first.inner_text()
    assert kernel.strip() == "Python 3 (moelab)"
    # save as JupyterLab does (PUT /api/contents through jupytext's contents manager, which writes both files),
    # with what the kernel adds to the notebook (language_info, widget state, execution metadata)
    api = f"{url}/api/contents/notebooks/{NOTEBOOK}.ipynb"
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    model = json.load(urllib.request.urlopen(urllib.request.Request(api + "?content=1", headers=headers)))
    nb = model["content"]
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python",
                                       "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for cell in nb["cells"]:
        cell["metadata"]["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    mtime = ipynb.stat().st_mtime_ns
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    urllib.request.urlopen(urllib.request.Request(api, data=body, headers=headers, method="PUT"))
    assert ipynb.stat().st_mtime_ns != mtime, "saving did not write the notebook"
    assert py.read_bytes() == source.read_bytes(), "saving rewrote the tracked source"
    assert json.loads(ipynb.read_text())["metadata"]["kernelspec"]["display_name"] == "Python 3 (moelab)"
    assert not outside, f"requests left the machine: {outside}"
    page.close()


def test_a_paired_notebook_is_not_marked_modified_on_open(paired_lab, browser):  # noqa: F811
    url, token, *_ = paired_lab
    page, _ = open_by_double_click(browser, url, token)
    assert page.locator(".lm-TabBar-tab.lm-mod-current.jp-mod-dirty").count() == 0, "marked modified on open"
    page.close()
