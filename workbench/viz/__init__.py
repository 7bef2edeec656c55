"""Views: plotly figure builders (pure functions of DataFrames) and the ipywidgets that wrap them.

Importing this package makes plotly's notebook renderer add a PNG to every figure it displays
(:mod:`workbench.viz.static`), so executed notebooks show their figures in nbconvert's HTML too.
"""
from .static import figure_png, install_renderer, static_mimebundle

install_renderer()
__all__ = ["figure_png", "install_renderer", "static_mimebundle"]
from .irreducible import IrreducibleLossView, irreducible_figure, selected_mask

__all__ += ["IrreducibleLossView", "irreducible_figure", "selected_mask"]

from .growth import depth_figure, loss_vs_cost_figure, operator_arrays, width_figure
__all__ += ["depth_figure", "loss_vs_cost_figure", "operator_arrays", "width_figure"]

from .curves import CurvesView, curves_figure, curves_view, figure_widget, load_curves
__all__ += ["CurvesView", "curves_figure", "curves_view", "figure_widget", "load_curves"]

from .composition import (SubsetCompositionView, composition_figure, composition_frame, composition_view, embed,
                          load_selections, map_figure, project_2d)
__all__ += ["SubsetCompositionView", "composition_figure", "composition_frame", "composition_view", "embed",
            "load_selections", "map_figure", "project_2d"]

from .influence import InfluenceView, influence_frame, influence_histogram, influence_view, kept_mask, oracle_figure
__all__ += ["InfluenceView", "influence_frame", "influence_histogram", "influence_view", "kept_mask", "oracle_figure"]
