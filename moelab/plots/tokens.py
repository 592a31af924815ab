"""Mixtral Figure 8: text with every token coloured by its first-choice expert.

    >>> from moelab.plots import token_colors_html
    >>> html = token_colors_html(["def", " f", "(x", "):"], [0, 3, 3, 1], num_experts=8)
    >>> html.count("<span"), "&lt;" in token_colors_html(["<b>"], [0], num_experts=8)
    (12, True)

Jiang et al. 2024, §5, Figure 8: "each token is highlighted with a background
color corresponding to its selected expert" (first choice, one layer). Colours
are `expert_colors(num_experts)`, the same as in every other moelab figure; the
text colour (black or white) is chosen for contrast. Pass the first choices of
one layer: `trace.experts[:, layer_pos, 0]`, with the decoded token strings.
SentencePiece's word marker "▁" is shown as a space.
"""

from __future__ import annotations

import html as _html

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .style import expert_colors, styled, text_color

__all__ = ["token_colors_html", "token_colors_figure"]

CHAR_WIDTH_EM = 0.602          # advance of DejaVu Sans Mono, matplotlib's monospace font
LINE_HEIGHT_EM = 1.45


def _check(tokens, experts_first, num_experts, fn):
    tokens = [str(t) for t in tokens]
    ex = np.asarray(experts_first)
    if ex.ndim != 1 or len(ex) != len(tokens):
        raise ValueError(
            f"{fn}(): experts_first has shape {ex.shape} but there are {len(tokens)} tokens; pass one "
            "first-choice expert per token, e.g. trace.experts[:, layer, 0]"
        )
    if len(ex) and (ex.min() < 0 or ex.max() >= num_experts):
        raise ValueError(
            f"{fn}(): expert ids must lie in [0, {num_experts}); found {ex.min()}..{ex.max()}. Check num_experts."
        )
    return [t.replace("\u2581", " ") for t in tokens], ex.astype(np.int64)


def token_colors_html(tokens, experts_first, num_experts: int, *, title: str | None = None, legend: bool = True) -> str:
    """An HTML fragment: tokens on coloured backgrounds (first-choice expert), then a legend.

        >>> from IPython.display import HTML                        # doctest: +SKIP
        >>> HTML(token_colors_html(tok.convert_ids_to_tokens(ids), trace.experts[:, 0, 0], 8))  # doctest: +SKIP

    Token text is HTML-escaped; whitespace and newlines are kept (white-space: pre-wrap).
    Hovering a token shows its expert.
    """
    toks, ex = _check(tokens, experts_first, num_experts, "token_colors_html")
    colors = expert_colors(num_experts)
    out = ['<div class="moelab-tokens" style="font-family: ui-monospace, monospace; font-size: 13px; '
           'line-height: 1.9; white-space: pre-wrap; overflow-wrap: anywhere;">']
    if title:
        out.append(f'<div style="font-weight: bold; margin-bottom: 4px;">{_html.escape(title)}</div>')
    for t, e in zip(toks, ex):
        c = colors[e]
        out.append(
            f'<span title="expert {e}" style="background: {c}; color: {text_color(c)}; '
            f'padding: 1px 0; border-radius: 2px;">{_html.escape(t)}</span>'
        )
    out.append("</div>")
    if legend:
        out.append('<div class="moelab-legend" style="font-family: sans-serif; font-size: 12px; margin-top: 6px;">')
        for e in range(num_experts):
            c = colors[e]
            out.append(
                f'<span style="background: {c}; color: {text_color(c)}; padding: 1px 6px; '
                f'margin-right: 4px; border-radius: 2px;">expert {e}</span>'
            )
        out.append("</div>")
    return "".join(out)


def _layout(toks, width):
    """(line, column, text) of every token piece, wrapping at `width` characters and at newlines."""
    pieces, line, col = [], 0, 0
    for i, t in enumerate(toks):
        parts = t.split("\n")
        for j, part in enumerate(parts):
            if j > 0:                                        # an explicit newline inside the token
                pieces.append((i, line, col, "⏎"))
                line, col = line + 1, 0
            while part:
                if col + len(part) > width and col > 0:
                    line, col = line + 1, 0
                take = part[: width - col] if len(part) > width - col else part
                pieces.append((i, line, col, take))
                col += len(take)
                part = part[len(take):]
    return pieces, line + 1


@styled
def token_colors_figure(
    tokens, experts_first, num_experts: int, *, width: int = 80, fontsize: float = 10, title: str | None = None
) -> Figure:
    """The same as token_colors_html, as a matplotlib Figure (for PNG/PDF in figures/).

        >>> fig = token_colors_figure(["Hello", " world"], [0, 1], num_experts=8)
        >>> fig.axes[0].get_title()
        ''

    Lines wrap at `width` characters (tokens longer than a line are split);
    a monospace font keeps the layout exact without a renderer.
    """
    toks, ex = _check(tokens, experts_first, num_experts, "token_colors_figure")
    if int(width) < 1:
        raise ValueError(f"width={width!r} must be a positive number of characters per line, e.g. 80")
    colors = expert_colors(num_experts)
    pieces, nlines = _layout(toks, int(width))
    cw = CHAR_WIDTH_EM * fontsize / 72                       # inches per character
    lh = LINE_HEIGHT_EM * fontsize / 72                      # inches per line
    ncols = min(num_experts, 8)
    legend_h = 0.3 * -(-num_experts // ncols) + 0.1          # inches: rows of 8 legend entries
    title_h = 0.35 if title else 0.05
    text_w, text_h = width * cw, nlines * lh
    fig_w, fig_h = max(text_w, 1.1 * ncols) + 0.3, text_h + legend_h + title_h + 0.1
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0.15 / fig_w, (legend_h + 0.05) / fig_h, text_w / fig_w, text_h / fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(nlines, 0)
    ax.axis("off")
    for i, line, col, text in pieces:
        c = colors[ex[i]]
        ax.add_patch(Rectangle((col, line + 0.08), len(text), 0.84, facecolor=c, edgecolor="none"))
        ax.text(col, line + 0.5, text, ha="left", va="center", family="monospace", fontsize=fontsize,
                color=text_color(c))
    handles = [Patch(facecolor=colors[e], label=f"expert {e}") for e in range(num_experts)]
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.1 / fig_w, 0.0), ncols=ncols, fontsize=8,
               frameon=False, handlelength=1.2, columnspacing=0.8)
    if title:
        fig.text(0.15 / fig_w, 1 - 0.05 / fig_h, title, ha="left", va="top", fontsize=11, fontweight="bold")
    return fig
