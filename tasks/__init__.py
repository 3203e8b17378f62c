"""Manipulation tasks built on the FluxLab engine (issue 4)."""
