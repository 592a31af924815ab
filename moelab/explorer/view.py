"""The explorer object: shown by Jupyter, saved as one standalone HTML file.

    >>> import numpy as np, moelab
    >>> from moelab.explorer import show
    >>> tr = moelab.RoutingTrace.from_arrays(np.array([[[0, 1]], [[2, 3]]]), num_experts=4)
    >>> view = show(tr)                       # in a notebook: the last expression renders it
    >>> view.tokens, "moelabExplorer" in view.to_html()
    (2, True)
    >>> view.save("/tmp/moelab-explorer-doctest.html")          # doctest: +ELLIPSIS
    PosixPath('/tmp/moelab-explorer-doctest.html')

Jupyter (JupyterLab, Notebook 7, VS Code) shows `_repr_html_`: a <div>, the explorer's CSS and
JavaScript (read from this package: explorer.css, explorer.js; no CDN) and the payload as a
JSON <script>. Scripts run in a live session; a saved notebook opened untrusted shows a static
preview (the first tokens coloured at the start layer) and says how to get the live view.
`save(path)` writes the same view as a complete HTML page that needs no server, no kernel and
no network.
"""

from __future__ import annotations

import html as _html
import json
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .payload import MAX_TOKENS, pack, reading_order, unpack_array

__all__ = ["Explorer", "show", "export_html", "asset"]

PREVIEW_TOKENS = 240
MIXTRAL_TOKENIZER = "mistral-common:tokenizer.model.v1"


def asset(name: str) -> str:
    """Text of a packaged asset: 'explorer.js' or 'explorer.css'."""
    return resources.files("moelab.explorer").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON safe inside <script>: no '</' and no HTML-significant characters (non-ASCII text kept as UTF-8)."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)     # the page is UTF-8: text as is
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _auto_tokenizer(trace, tokenizer):
    """None -> the tokenizer the trace names when moelab ships it (Mixtral's), else None (ids shown)."""
    if tokenizer is False:
        return None
    if tokenizer is None and trace is not None and getattr(trace, "meta", {}).get("tokenizer") == MIXTRAL_TOKENIZER:
        try:
            from moelab.data import load_tokenizer

            return load_tokenizer()
        except Exception:               # mistral-common/sentencepiece missing: show ids
            return None
    return tokenizer


@dataclass
class Explorer:
    """An interactive routing view of one trace (optionally compared with a second of the same tokens)."""

    payload: dict

    @property
    def tokens(self) -> int:
        return int(self.payload["tokens"])

    def _data_json(self) -> str:
        return _json_for_script(self.payload)

    @property
    def nbytes(self) -> int:
        """Size of the inlined payload in bytes (what the page carries besides ~25 kB of code)."""
        return len(self._data_json().encode("utf-8"))

    def _preview(self) -> str:
        from moelab.plots.tokens import token_colors_html

        P = self.payload
        order = reading_order(P)[:PREVIEW_TOKENS]
        idx = unpack_array(P["token_index"])
        ex = unpack_array(P["runs"][0]["experts"]).reshape(P["tokens"], P["layers"], P["k"])
        toks = [P["strings"][idx[i]] for i in order]
        return token_colors_html(toks, ex[order, P["start_layer"], 0], P["num_experts"], legend=False,
                                 title=f"static preview: first {len(order)} of {P['tokens']:,} tokens, layer "
                                       f"{P['layer_ids'][P['start_layer']]}")

    def fragment(self) -> str:
        """The HTML fragment Jupyter shows (unique ids, so several explorers coexist on one page)."""
        uid = f"moelab-x-{uuid.uuid4().hex[:12]}"
        self.payload["nbytes"] = 0
        data = self._data_json()
        self.payload["nbytes"] = len(data.encode("utf-8"))
        data = self._data_json()
        fallback = (
            f'<div class="mx-fallback">moelab explorer ({self.tokens:,} tokens): the interactive view needs '
            "JavaScript. Run the cell in Jupyter, trust the notebook, or open the exported HTML "
            "(Explorer.save).</div>"
        )
        return (
            f'<div id="{uid}" class="moelab-x">{fallback}{self._preview()}</div>\n'
            f"<style>{asset('explorer.css')}</style>\n"
            f'<script type="application/json" id="{uid}-data">{data}</script>\n'
            f"<script>{asset('explorer.js')}\n"
            f"(function(){{var r=document.getElementById('{uid}');"
            f"if(!r||r.dataset.ready)return;"
            f"window.moelabExplorer.mount(r, JSON.parse(document.getElementById('{uid}-data').textContent));}})();"
            "</script>"
        )

    def _repr_html_(self) -> str:
        return self.fragment()

    def to_html(self, title: str | None = None) -> str:
        """A complete standalone page (no server, kernel or network needed)."""
        title = title or self.payload.get("title") or "moelab routing explorer"
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_html.escape(title)}</title></head>\n<body style=\"margin:8px\">\n"
            f"{self.fragment()}\n</body></html>\n"
        )

    def save(self, path) -> Path:
        """Write the standalone HTML page to `path` (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        P = self.payload
        return (f"Explorer(tokens={P['tokens']}, layers={P['layers']}, k={P['k']}, experts={P['num_experts']}, "
                f"compare={len(P['runs']) > 1}, payload={self.nbytes / 1e6:.2f} MB)")


def show(trace, tokenizer=None, *, compare=None, labels=("A", "B"), layer=None, title: str | None = None,
         max_tokens: int = MAX_TOKENS) -> Explorer:
    """An interactive routing explorer of `trace`; the last expression of a cell renders it.

    tokenizer   decodes token ids (any object with `convert_ids_to_tokens`, e.g. a transformers
                tokenizer or moelab.load_tokenizer()); None = the one the trace names when moelab
                ships it (Mixtral's), else token ids are shown; False = always ids
    compare     a second trace of the same tokens (fp32 vs bf16, two checkpoints, ...): tokens whose
                expert set differs at the shown layer are marked; labels names the two
    layer       the MoE layer shown first (a layer id of the trace; default its first)
    max_tokens  refuse larger traces (default MAX_TOKENS = 400,000, a ~5 MB page at 4 layers) with a
                message on how to slice
    """
    tok = _auto_tokenizer(trace, tokenizer)
    return Explorer(pack(trace, tok, compare=compare, labels=labels, title=title, layer=layer, max_tokens=max_tokens))


def export_html(trace, path, tokenizer=None, **kwargs) -> Path:
    """`show(trace, tokenizer, **kwargs).save(path)`: one standalone HTML file."""
    return show(trace, tokenizer, **kwargs).save(path)
