"""One look for every moelab figure: colour-blind-safe colours, fixed per expert.

    >>> from moelab.plots import expert_colors
    >>> expert_colors(8)[:2]                       # Okabe–Ito: expert 0 orange, expert 1 sky blue
    ['#E69F00', '#56B4E9']

Expert i has the same colour in every figure and for every E: `expert_colors(n)`
is the first n entries of one fixed sequence. For E ≤ 8 that is the Okabe–Ito
palette (Okabe & Ito 2008, "Color Universal Design"); beyond 8 it continues with
Paul Tol's colour-blind-safe "muted" and "light" palettes (Tol 2021, "Colour
Schemes", SRON/EPS/TN/09-002) and then repeats: with 64 experts no palette keeps
every expert distinguishable, so figures of many experts use heatmaps.
Domains (and other groups) use Tol's "bright" palette, so they never look like experts.
Sequential data use the `cividis` colour map (Nuñez et al. 2018), designed for
colour-vision deficiency.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import matplotlib

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
TOL_MUTED = ["#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499"]
TOL_LIGHT = ["#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD"]
TOL_BRIGHT = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"]
EXPERT_PALETTE = OKABE_ITO + TOL_MUTED + TOL_LIGHT       # 26 colours, then it repeats
SEQUENTIAL_CMAP = "cividis"

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "image.cmap": SEQUENTIAL_CMAP,
    "axes.prop_cycle": matplotlib.cycler(color=TOL_BRIGHT),
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}


def use_style():
    """Context manager applying STYLE (matplotlib rcParams) for the figures made inside it.

        >>> from moelab.plots import use_style
        >>> with use_style():
        ...     pass
    """
    return matplotlib.rc_context(STYLE)


def styled(fn):
    """Decorator: run a figure function inside use_style()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with use_style():
            return fn(*args, **kwargs)

    return wrapper


def expert_colors(num_experts: int) -> list[str]:
    """Hex colours of experts 0..num_experts-1; expert i's colour never depends on num_experts.

        >>> expert_colors(10)[:8] == expert_colors(8)
        True
    """
    n = int(num_experts)
    if n < 0:
        raise ValueError(f"num_experts={num_experts!r} must be >= 0")
    return [EXPERT_PALETTE[i % len(EXPERT_PALETTE)] for i in range(n)]


def group_colors(labels) -> dict:
    """Colours of groups (domains), in the order given: {label: hex}.

        >>> group_colors(["arxiv", "github"])
        {'arxiv': '#4477AA', 'github': '#EE6677'}
    """
    return {lab: TOL_BRIGHT[i % len(TOL_BRIGHT)] for i, lab in enumerate(labels)}


def text_color(hex_color: str) -> str:
    """Black or white, whichever reads better on `hex_color` (WCAG relative luminance)."""
    r, g, b = (int(hex_color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))

    def lin(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#000000" if lum > 0.179 else "#FFFFFF"


_METADATA = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None},
    "svg": {"Date": None},
}


def slug(name: str) -> str:
    """A stable file name: lowercase, [a-z0-9._-] only.

        >>> slug("Repeat rates / Mixtral 8x7B")
        'repeat-rates-mixtral-8x7b'
    """
    s = re.sub(r"[^a-z0-9._-]+", "-", str(name).lower()).strip("-.")
    if not s:
        raise ValueError(f"figure name {name!r} has no letters or digits; give e.g. save(fig, 'load_heatmap')")
    return s


def save(fig, name: str, outdir="figures", formats=("png",), *, dpi: int | None = None) -> list[Path]:
    """Write `fig` to outdir/<slug(name)>.<fmt> for each format; returns the paths.

        >>> save(fig, "load heatmap", formats=("png", "pdf"))      # doctest: +SKIP
        [PosixPath('figures/load-heatmap.png'), PosixPath('figures/load-heatmap.pdf')]

    File names are stable (same name, same file) and PDF/SVG/PNG carry no
    timestamps, so re-running a notebook does not churn the repository. The
    figure's layout is computed once and then frozen, so all formats match.
    """
    if isinstance(formats, str):
        formats = (formats,)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    with use_style():
        if fig.get_layout_engine() is not None:
            # Lay the figure out once, then freeze it: every format (and every re-run) gets the
            # same geometry, whatever the dpi or the number of earlier draws.
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
        for fmt in formats:
            fmt = fmt.lower().lstrip(".")
            if fmt not in ("png", "pdf", "svg", "jpg", "jpeg"):
                raise ValueError(f"format {fmt!r} is not supported; use 'png', 'pdf' or 'svg'")
            path = outdir / f"{slug(name)}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi, metadata=_METADATA.get(fmt))
            paths.append(path)
    return paths
