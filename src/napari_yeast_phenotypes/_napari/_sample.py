"""File > Open Sample: a synthetic yeast time-lapse with tracked labels."""

from __future__ import annotations

from ..core.data.simulate import simulate_movie

SAMPLE_MOVIE = {"n_frames": 40, "size": 256, "n_cells": 30, "seed": 0}


def make_sample_data(**overrides) -> list[tuple]:
    """A simulated 40-frame movie (fluorescence image + tracked cell labels) as napari layer data.

    The simulation's ground truth (phenotype per frame and cell) rides along in the labels
    layer's ``metadata["truth"]``.
    """
    movie = simulate_movie(**{**SAMPLE_MOVIE, **overrides})
    axes = {"axis_labels": ("t", "y", "x")}
    return [
        (movie.image, {**axes, "name": "yeast (synthetic)", "colormap": "gray"}, "image"),
        (movie.labels, {**axes, "name": "cells", "opacity": 0.35, "metadata": {"truth": movie.truth}}, "labels"),
    ]
