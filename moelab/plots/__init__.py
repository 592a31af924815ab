"""moelab.plots: one matplotlib Figure per kind of routing figure, in one colour-blind-safe style.

    >>> import numpy as np, moelab
    >>> t = moelab.RoutingTrace.from_arrays(np.random.default_rng(0).integers(0, 8, (50, 4, 1)), num_experts=8)
    >>> fig = moelab.plots.load_heatmap(t)                        # a Figure; nothing is shown
    >>> moelab.plots.expert_colors(8)[0]                          # expert 0 is orange everywhere
    '#E69F00'

style     STYLE, use_style, expert_colors, group_colors, save
figures   load_heatmap, domain_distribution_bars, repeat_rates_plot, coactivation_heatmap,
          specialization_bars, saturation_curve, agreement_plot, transitions_heatmap
tokens    token_colors_html, token_colors_figure                  (Mixtral Figure 8)

Nothing here imports torch; figures never call show() and use no pyplot state.
"""

from .figures import (
    agreement_plot,
    coactivation_heatmap,
    domain_distribution_bars,
    load_heatmap,
    repeat_rates_plot,
    saturation_curve,
    specialization_bars,
    transitions_heatmap,
)
from .style import STYLE, expert_colors, group_colors, save, use_style
from .tokens import token_colors_figure, token_colors_html

__all__ = [
    "STYLE",
    "use_style",
    "expert_colors",
    "group_colors",
    "save",
    "load_heatmap",
    "domain_distribution_bars",
    "repeat_rates_plot",
    "coactivation_heatmap",
    "specialization_bars",
    "saturation_curve",
    "agreement_plot",
    "transitions_heatmap",
    "token_colors_html",
    "token_colors_figure",
]
from . import diagrams, teaching  # noqa: E402,F401  teaching pictures and the notebooks' hand-built figures
