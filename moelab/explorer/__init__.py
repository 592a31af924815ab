"""moelab.explorer: an interactive routing explorer for Jupyter and as one standalone HTML file.

    >>> import numpy as np, moelab
    >>> from moelab.explorer import show
    >>> tr = moelab.RoutingTrace.from_arrays(np.random.default_rng(0).integers(0, 8, (40, 4, 1)), num_experts=8)
    >>> view = show(tr)                 # renders in JupyterLab / Notebook 7 / VS Code
    >>> path = view.save("/tmp/moelab-explorer-doc.html")     # opens from disk, no network

In the view: tokens coloured by their first-choice expert at one layer (or both choices as split
colours); the layer slider or ←/→; hovering a token shows its layer × rank table of experts and
weights (and the router distribution when the trace has logits); clicking an expert highlights
its tokens and lists its top tokens and domain shares; `compare=` marks the tokens whose expert
sets differ between two traces of the same tokens; filters by domain (any per-token column with
few values) and sequence. Colours are `moelab.plots.expert_colors`. Only the text near the
viewport is rendered, so 100k tokens open without freezing (bench/bench_explorer.py); traces
above MAX_TOKENS are refused with a message on how to slice. See docs/explorer.md.

view.py  Explorer, show, export_html      payload.py  the compact payload (base64 typed arrays)
explorer.js / explorer.css                the browser side, shipped as package data
"""

from .payload import MAX_TOKENS, ExplorerInputError, pack
from .view import Explorer, export_html, show

__all__ = ["show", "export_html", "Explorer", "ExplorerInputError", "MAX_TOKENS", "pack"]
