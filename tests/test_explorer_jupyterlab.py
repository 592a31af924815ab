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
import secrets
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


@pytest.fixture
def lab(tmp_path):
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install 'moelab[notebooks]')")
    port, token = free_port(), secrets.token_hex(16)
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {}, "outputs": [],
                     "source": CELL}],
          "metadata": {"kernelspec": {"display_name": "Python 3 (moelab)", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    root = tmp_path / "root"
    root.mkdir()
    (root / "smoke.ipynb").write_text(json.dumps(nb))
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--ServerApp.log_level=WARN"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 40
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not answer within 40 s")
    yield url, token
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_explorer_renders_and_answers_a_click_in_jupyterlab(lab, browser):
    url, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    outside = []

    def guard(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(f"{url}/lab/tree/smoke.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=45_000)
    page.wait_for_function("() => /\\| Idle/.test(document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar')"
                           "?.innerText || '')", timeout=45_000)                   # the kernel is up
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(".moelab-x[data-ready='1']", timeout=45_000)
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
        page.locator(".jp-Notebook .jp-Cell").first.screenshot(path=str(Path(shots) / "explorer_jupyterlab.png"))
    page.close()
