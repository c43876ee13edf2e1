"""Plotting helpers with one house style, shared by every chapter."""

from .plots import coherence_heatmap, image_grid, learning_curves, set_style, to_display
from .widgets import subset_picker

__all__ = ["coherence_heatmap", "image_grid", "learning_curves", "set_style", "subset_picker", "to_display"]
