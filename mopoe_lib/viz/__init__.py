"""Plotting helpers with one house style, shared by every chapter."""

from .plots import coherence_heatmap, image_grid, learning_curves, metric_curves, set_style, to_display, with_minutes
from .widgets import subset_picker

__all__ = ["coherence_heatmap", "image_grid", "learning_curves", "metric_curves", "set_style", "subset_picker",
           "to_display", "with_minutes"]
