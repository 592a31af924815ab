"""The explorer on 100k tokens in headless Chromium: time to interactive, response to hover/layer/expert.

    $ .venv/bin/python bench/bench_explorer.py                # ~1-2 min; writes bench/results/explorer_cpu.txt

A trace of `--tokens` tokens of real held-out text (Mixtral's tokenizer, the corpus' documents in
windows of 256) with random top-2-of-8 routing and fp32 weights, for 4 layers (the embedded
model) and 32 layers (Mixtral 8x7B's depth), is saved with `moelab.explorer.show(...).save` and
opened from disk by Debian's chromium through playwright (flags as in the tests). Reported per
depth, median of `--repeats` page loads interleaved across depths (`moelab.bench.time_interleaved`):
Python packing time, file size, time from navigation start to `data-ready` (data decoded, first
screen rendered, handlers attached), and in-page times of a hover, a layer switch and an expert
click (each includes the repaint of the rendered tokens). Then the file size of `--size-tokens`
tokens at 4 layers (random routing: nothing for deflate to find, an upper bound for real routing).
Targets from issue 15: interactive in <= 3 s at 100k tokens; <= 5 MB for the held-out trace
(300k tokens x 4 layers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import moelab
import moelab.explorer
from moelab.explorer import show

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

PROBE = """() => {
  const root = document.querySelector('.moelab-x');
  const t = (f) => { const a = performance.now(); f(); return performance.now() - a; };
  const tok = document.querySelectorAll('.mx-t')[50];
  const hover = t(() => tok.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})));
  const key = (k) => t(() => root.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true})));
  const layer = key('ArrowRight');
  const expert = t(() => document.querySelector('.mx-legend .mx-e').click());
  return {ready: +root.dataset.readyAt, mount: +root.dataset.mountMs, rendered: +root.dataset.rendered,
          hover, layer, expert, hover_ok: document.querySelector('.mx-hover').dataset.token === tok.dataset.i};
}"""


def corpus_tokens(tok, n: int, seq_len: int = 256):
    from moelab.data import load_documents

    ids, seqs = [], []
    s = 0
    while len(ids) < n:
        for docs in load_documents("heldout").values():
            for doc in docs:
                t = tok(doc)["input_ids"]
                for a in range(0, len(t), seq_len):
                    w = t[a: a + seq_len]
                    ids += w
                    seqs += [s] * len(w)
                    s += 1
                if len(ids) >= n:
                    return np.array(ids[:n]), np.array(seqs[:n])
    return np.array(ids[:n]), np.array(seqs[:n])


def routed_trace(ids, seqs, layers: int, rng) -> moelab.RoutingTrace:
    """Random top-2-of-8 routing with fp32 weights that sum to 1 (what the embedded model records on CPU):
    the incompressible case for the payload's size."""
    T = len(ids)
    lg = rng.normal(size=(T, layers, 8)).astype(np.float32)
    ex = np.argsort(-lg, -1)[..., :2]
    w = np.exp(np.take_along_axis(lg, ex, -1))
    w = (w / w.sum(-1, keepdims=True)).astype(np.float32)
    return moelab.RoutingTrace.from_arrays(ex, w, num_experts=8, sequence=seqs, token_id=ids)


def main():
    from moelab.bench import environment, summarize, time_interleaved

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--layers", type=int, nargs="*", default=[4, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size-tokens", type=int, nargs="*", default=[300_000, 400_000],
                   help="also report the file size of these many tokens at 4 layers (no browser)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "explorer_cpu.txt"))
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("MOELAB_CHROMIUM") or shutil.which("chromium")
    tok = moelab.load_tokenizer()
    ids, seqs = corpus_tokens(tok, max([a.tokens, *a.size_tokens]))
    rng = np.random.default_rng(0)
    show(moelab.RoutingTrace.from_arrays(np.zeros((1, 1, 2), int) + [0, 1], num_experts=8)).to_html()  # imports
    env = environment("cpu", "-")
    tmp = Path(tempfile.mkdtemp(prefix="moelab-bench-explorer-"))
    lines = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=ARGS)
        lines.append(f"explorer: {a.tokens:,} held-out tokens (Mixtral tokenizer, windows of 256), random top-2 of 8 "
                     f"routing, fp32 weights; chromium {browser.version} ({exe}), {env['device_name']}, {env['date']}; "
                     f"medians of {a.repeats} page loads, interleaved (moelab.bench.time_interleaved)")
        paths, packed, probes = {}, {}, {}
        for L in a.layers:
            tr = routed_trace(ids[:a.tokens], seqs[:a.tokens], L, rng)
            t0 = time.perf_counter()
            paths[L] = show(tr, tok).save(tmp / f"x{L}.html")
            packed[L] = time.perf_counter() - t0
            probes[L] = []

        def load(L):
            def fn():
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(paths[L].as_uri())
                page.wait_for_selector(".moelab-x[data-ready='1']", timeout=60_000)
                probes[L].append(page.evaluate(PROBE))
                page.close()
            return fn

        wall = summarize(time_interleaved({L: load(L) for L in a.layers}, repeats=a.repeats, warmup=1, device="cpu"))
        for L in a.layers:
            runs = probes[L][-a.repeats:]                  # the timed loads, not the warm-up
            med = {k: statistics.median(r[k] for r in runs) for k in ("ready", "mount", "hover", "layer", "expert", "rendered")}
            ok = all(r["hover_ok"] for r in runs)
            line = (f"{L:>2} layers: file {paths[L].stat().st_size / 1e6:.2f} MB, packed+saved in {packed[L]:.2f} s | "
                    f"interactive {med['ready'] / 1000:.2f} s after navigation start (mount {med['mount']:.0f} ms; "
                    f"open-to-ready wall {wall.loc[L, 'median_s']:.2f} s) | hover {med['hover']:.1f} ms, layer switch "
                    f"{med['layer']:.1f} ms, expert click {med['expert']:.1f} ms | {med['rendered']:.0f} tokens in the DOM | "
                    f"hover answered: {ok}")
            print(line)
            lines.append(line)
        browser.close()
    lines.append("file size at 4 layers (the held-out trace's depth), same random routing; the limit is "
                 f"moelab.explorer.MAX_TOKENS = {moelab.explorer.MAX_TOKENS:,}:")
    for T in a.size_tokens:
        tr = routed_trace(ids[:T], seqs[:T], 4, rng)
        t0 = time.perf_counter()
        path = show(tr, tok, max_tokens=max(T, moelab.explorer.MAX_TOKENS)).save(tmp / "size.html")
        line = (f"  {T:>7,} tokens x 4 layers: {path.stat().st_size / 1e6:.2f} MB "
                f"({path.stat().st_size / T:.1f} bytes/token), packed+saved in {time.perf_counter() - t0:.2f} s")
        print(line)
        lines.append(line)
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
