"""Gymnasium environments wrapping FluxLab tasks (issue 4)."""
