"""The explorer in a real browser: headless Chromium (Debian's `chromium`) driven by playwright.

What a user sees is checked against the trace itself: hovering a token shows exactly its recorded
experts and weights; the layer keystroke recolours every token to that layer's first choice;
clicking an expert highlights exactly the tokens routed to it; the comparison marks exactly the
tokens whose expert sets differ; the page makes no network request; 100k tokens open and answer
a hover (only the visible text is rendered). Timing of the 100k page: bench/bench_explorer.py.

Needs `pip install playwright` (never `playwright install`: the browser is the system's) and
`apt-get install chromium`; set MOELAB_CHROMIUM to use another binary. Without them the tests
are skipped with the reason; with MOELAB_REQUIRE_BROWSER=1 (CI) a missing browser fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import moelab
from moelab.codec import decode_weights, encode_weights
from moelab.explorer import show

pytestmark = pytest.mark.slow   # subprocesses / a real browser: `make test-fast` skips these

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return os.environ.get("MOELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(reason: str):
    if os.environ.get("MOELAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MOELAB_REQUIRE_BROWSER=1 but {reason}")
    print(f"SKIP browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; no `playwright install` needed)")
    exe = chromium_path()
    if not exe or not Path(exe).exists():
        _missing("no chromium binary (apt-get install chromium, or set MOELAB_CHROMIUM)")
    with sync_playwright() as pw:          # a browser that is there but fails to start is a failure
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """open_page(explorer) -> (page, requests): the saved HTML opened from disk, every request recorded."""
    pages = []

    def _open(view, name="x.html"):
        path = view.save(tmp_path / name)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        requests, errors = [], []
        page.route("**/*", lambda route: (requests.append(route.request.url),
                                          route.continue_() if route.request.url == path.as_uri() else route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_selector(".moelab-x[data-ready='1']", timeout=30_000)
        assert not errors, errors
        pages.append(page)
        return page, requests

    yield _open
    for p in pages:
        p.close()


def routed(T=60, L=4, E=8, seed=0, logits=False, dtype=np.float32, **columns):
    rng = np.random.default_rng(seed)
    lg = rng.normal(size=(T, L, E)).astype(np.float32)
    ex = np.argsort(-lg, -1)[..., :2]
    w = np.take_along_axis(np.exp(lg), ex, -1)
    w = (w / w.sum(-1, keepdims=True)).astype(dtype)
    seq = np.repeat(np.arange(3), -(-T // 3))[:T]
    return moelab.RoutingTrace.from_arrays(ex, w, num_experts=E, sequence=seq, token_id=rng.integers(3, 100, T),
                                           logits=lg if logits else None, layer_ids=[0, 2, 5, 7][:L], **columns)


def spans(page):
    """{token row: first-choice expert shown} for every rendered token."""
    return {int(i): int(e) for i, e in page.locator(".mx-t").evaluate_all(
        "els => els.map(e => [e.dataset.i, e.dataset.expert])")}


def hex_rgb(h):
    return f"rgb({int(h[1:3], 16)}, {int(h[3:5], 16)}, {int(h[5:7], 16)})"


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_hover_shows_exactly_the_recorded_experts_and_weights(open_page, dtype):
    """Weights at the store's 16-bit precision: exactly what load_trace reloads, within half an fp16 step
    of the recording (fp32 top-2 weights travel as one code each, rank 0 rebuilt as 1 - rank 1)."""
    tr = routed(logits=True, dtype=dtype)
    stored = decode_weights(*encode_weights(tr.weights), k=tr.top_k)
    np.testing.assert_allclose(stored, tr.weights.astype(np.float32), rtol=2.0 ** -11, atol=0)
    page, _ = open_page(show(tr))
    for i in [0, 17, 33, 59]:
        page.locator(f".mx-t[data-i='{i}']").hover()
        cells = page.locator(".mx-hover .mx-cell").evaluate_all(
            "els => els.map(e => [+e.dataset.layer, +e.dataset.rank, +e.dataset.expert, +e.dataset.weight])")
        want = [[int(tr.layer_ids[l]), r, int(tr.experts[i, l, r]), float(stored[i, l, r])]
                for l in range(tr.num_layers) for r in range(tr.top_k)]
        assert cells == want
        shown = page.locator(".mx-hover .mx-w").all_inner_texts()          # what the eye reads: 3 decimals
        np.testing.assert_allclose([float(x) for x in shown], stored[i].reshape(-1), rtol=0, atol=5e-4 + 1e-9)
        probs = np.array(page.locator(".mx-hover .mx-pbar").evaluate_all("els => els.map(e => +e.dataset.prob)"))
        softmax = np.exp(tr.logits[i]) / np.exp(tr.logits[i]).sum(-1, keepdims=True)
        np.testing.assert_allclose(probs.reshape(tr.num_layers, tr.num_experts), softmax, atol=1e-3)


def test_layer_keystroke_recolours_to_that_layers_first_choices(open_page):
    tr = routed()
    page, _ = open_page(show(tr))
    colors = moelab.plots.expert_colors(tr.num_experts)
    page.locator(".moelab-x").focus()
    for pos in [0, 1, 2, 3, 2]:
        shown = spans(page)
        assert len(shown) == tr.num_tokens
        assert shown == {i: int(tr.experts[i, pos, 0]) for i in range(tr.num_tokens)}
        bg = page.locator(".mx-t").evaluate_all("els => els.map(e => [+e.dataset.i, getComputedStyle(e).backgroundColor])")
        assert all(c == hex_rgb(colors[tr.experts[i, pos, 0]]) for i, c in bg)
        assert page.locator(".moelab-x").get_attribute("data-layer") == str(tr.layer_ids[pos])
        page.keyboard.press("ArrowRight" if pos < 3 else "ArrowLeft")
    page.locator(".mx-layer").fill("3")                          # the slider does the same
    assert spans(page) == {i: int(tr.experts[i, 3, 0]) for i in range(tr.num_tokens)}


def test_both_choices_split_the_colour(open_page):
    tr = routed(T=12)
    page, _ = open_page(show(tr))
    page.locator(".mx-both").check()
    bg = page.locator(".mx-t").evaluate_all("els => els.map(e => [+e.dataset.i, getComputedStyle(e).backgroundImage])")
    colors = moelab.plots.expert_colors(8)
    for i, img in bg:
        a, b = hex_rgb(colors[tr.experts[i, 0, 0]]), hex_rgb(colors[tr.experts[i, 0, 1]])
        assert img.startswith("linear-gradient") and img.index(a) < img.rindex(b)


def test_clicking_an_expert_highlights_exactly_its_tokens(open_page):
    tr = routed(domain=np.array(["code"] * 20 + ["prose"] * 40))
    page, _ = open_page(show(tr))
    page.locator(".moelab-x").focus()
    page.keyboard.press("ArrowRight")                             # layer position 1
    for e in [3, 6]:
        page.locator(f".mx-legend .mx-e[data-expert='{e}']").click()
        hl = set(map(int, page.locator(".mx-t.mx-hl").evaluate_all("els => els.map(e => e.dataset.i)")))
        dim = set(map(int, page.locator(".mx-t.mx-dim").evaluate_all("els => els.map(e => e.dataset.i)")))
        want = set(np.flatnonzero((tr.experts[:, 1, :] == e).any(-1)).tolist())
        assert hl == want and dim == set(range(tr.num_tokens)) - want
        assert page.locator(".mx-expert").get_attribute("data-count") == str(len(want))
        shares = dict(page.locator(".mx-expert .mx-share").evaluate_all(
            "els => els.map(e => [e.dataset.category, +e.dataset.share])"))
        dom = tr.columns["domain"][sorted(want)]
        assert shares == pytest.approx({d: float(np.mean(dom == d)) for d in set(dom)})
    page.keyboard.press("Escape")
    assert page.locator(".mx-t.mx-hl").count() == 0 and page.locator(".mx-t.mx-dim").count() == 0


def test_comparison_marks_exactly_the_tokens_whose_expert_sets_differ(open_page):
    a = routed()
    ex = a.experts.copy()
    rng = np.random.default_rng(5)
    for i in rng.choice(a.num_tokens, 15, replace=False):        # a rank swap keeps the set: not a difference
        l = rng.integers(0, a.num_layers)
        ex[i, l] = ex[i, l, ::-1] if rng.random() < 0.4 else [ex[i, l, 0], [e for e in range(8) if e not in ex[i, l]][0]]
    b = moelab.RoutingTrace.from_arrays(ex, a.weights, num_experts=8, sequence=a.sequence, token_id=a.token_id,
                                        layer_ids=a.layer_ids)
    page, _ = open_page(show(a, compare=b, labels=("fp32", "bf16")))
    page.locator(".moelab-x").focus()
    for pos in range(a.num_layers):
        marked = set(map(int, page.locator(".mx-t.mx-diff").evaluate_all("els => els.map(e => e.dataset.i)")))
        want = {i for i in range(a.num_tokens) if set(a.experts[i, pos]) != set(ex[i, pos])}
        assert marked == want
        assert page.locator(".mx-status").get_attribute("data-differs") == str(len(want))
        page.keyboard.press("ArrowRight")
    assert 0 < sum(len({i for i in range(a.num_tokens) if set(a.experts[i, p]) != set(ex[i, p])})
                   for p in range(a.num_layers))


def settled_spans(page, want: set, timeout_s: float = 10.0) -> set:
    """The rendered token rows once the (asynchronous) re-render after a filter change has run."""
    import time

    deadline = time.time() + timeout_s
    got = set(spans(page))
    while got != want and time.time() < deadline:
        page.wait_for_timeout(50)
        got = set(spans(page))
    return got


def test_filters_show_only_the_chosen_domain_and_sequence(open_page):
    tr = routed(domain=np.array(["code", "prose", "math"] * 20))
    page, _ = open_page(show(tr))
    page.locator("select[data-filter='domain']").select_option(label="prose")
    want = set(np.flatnonzero(tr.columns["domain"] == "prose").tolist())
    assert settled_spans(page, want) == want
    page.locator("select.mx-seq").select_option(label="sequence 2")
    want = set(np.flatnonzero((tr.columns["domain"] == "prose") & (tr.sequence == 2)).tolist())
    assert settled_spans(page, want) == want


def test_page_makes_no_network_request(open_page):
    page, requests = open_page(show(routed(logits=True), compare=routed()))
    page.locator(".mx-t").first.hover()
    page.locator(".mx-legend .mx-e").first.click()
    page.wait_for_timeout(200)
    assert requests == [page.url]                                  # only the file itself


def test_100k_tokens_open_and_render_only_what_is_visible(open_page):
    T = 100_000
    rng = np.random.default_rng(0)
    ex = np.argsort(rng.random((T, 4, 8)), -1)[..., :2]
    w = np.full((T, 4, 2), 0.5, np.float16)
    tr = moelab.RoutingTrace.from_arrays(ex, w, num_experts=8, sequence=np.arange(T) // 256,
                                         token_id=rng.integers(3, 32000, T))
    page, _ = open_page(show(tr))                                  # waits (generously) for data-ready
    assert "holds 100,000 tokens (391 sequences)" in page.locator(".mx-status").inner_text()
    rendered = int(page.locator(".moelab-x").get_attribute("data-rendered"))
    assert 0 < rendered < 5_000                                    # virtualised: a few screens of text
    first = page.locator(".mx-t").first
    first.hover()
    i = int(first.get_attribute("data-i"))
    assert page.locator(".mx-hover").get_attribute("data-token") == str(i)
    page.locator(".mx-text").evaluate("t => t.scrollTop = t.scrollHeight / 2")
    page.wait_for_function("() => [...document.querySelectorAll('.mx-t')].some(e => +e.dataset.i > 40000)")
