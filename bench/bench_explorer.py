"""The explorer on 100k tokens in headless Chromium: time to interactive, response to hover/layer/expert.

    $ .venv/bin/python bench/bench_explorer.py                # ~1 min; writes bench/results/explorer_cpu.txt

A trace of `--tokens` tokens of real held-out text (Mixtral's tokenizer, the corpus' documents in
windows of 256) with random top-2-of-8 routing and fp16 weights, for 4 layers (the embedded
model) and 32 layers (Mixtral 8x7B's depth), is saved with `moelab.explorer.export_html` and
opened from disk by Debian's chromium through playwright (flags as in the tests). Reported per
run, median of `--repeats` page loads: Python packing time, file size, time from navigation
start to `data-ready` (data decoded, first screen rendered, handlers attached), and in-page
times of a hover, a layer switch and an expert click (each includes the repaint of the
rendered tokens). Target from issue 15: interactive in <= 3 s for 100k tokens.
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--layers", type=int, nargs="*", default=[4, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "explorer_cpu.txt"))
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("MOELAB_CHROMIUM") or shutil.which("chromium")
    tok = moelab.load_tokenizer()
    ids, seqs = corpus_tokens(tok, a.tokens)
    rng = np.random.default_rng(0)
    show(moelab.RoutingTrace.from_arrays(np.zeros((1, 1, 2), int) + [0, 1], num_experts=8)).to_html()  # imports
    lines = [f"explorer, {a.tokens:,} held-out tokens (Mixtral tokenizer), random top-2 of 8 routing, fp16 weights; "
             f"chromium {exe}, median of {a.repeats} page loads"]
    tmp = Path(tempfile.mkdtemp(prefix="moelab-bench-explorer-"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=ARGS)
        for L in a.layers:
            ex = np.argsort(rng.random((a.tokens, L, 8)), -1)[..., :2]
            w1 = rng.uniform(0.5, 1, (a.tokens, L, 1))
            w = np.concatenate([w1, 1 - w1], -1).astype(np.float16)
            tr = moelab.RoutingTrace.from_arrays(ex, w, num_experts=8, sequence=seqs, token_id=ids)
            t0 = time.perf_counter()
            view = show(tr, tok)
            path = view.save(tmp / f"x{L}.html")
            pack_s = time.perf_counter() - t0
            runs = []
            for _ in range(a.repeats):
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto(path.as_uri())
                page.wait_for_selector(".moelab-x[data-ready='1']", timeout=60_000)
                runs.append(page.evaluate(PROBE))
                page.close()
            med = {k: statistics.median(r[k] for r in runs) for k in ("ready", "mount", "hover", "layer", "expert", "rendered")}
            ok = all(r["hover_ok"] for r in runs)
            line = (f"{L:>2} layers: file {path.stat().st_size / 1e6:.1f} MB, packed+saved in {pack_s:.2f} s | "
                    f"interactive {med['ready'] / 1000:.2f} s after navigation start (mount {med['mount']:.0f} ms) | "
                    f"hover {med['hover']:.1f} ms, layer switch {med['layer']:.1f} ms, expert click {med['expert']:.1f} ms | "
                    f"{med['rendered']:.0f} tokens in the DOM | hover answered: {ok}")
            print(line)
            lines.append(line)
        browser.close()
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
