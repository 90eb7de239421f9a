"""Fixtures of the napari plugin tests.

GUI tests run under Xvfb (pytest-xvfb starts it) with ``QT_QPA_PLATFORM=xcb``; the offscreen
platform cannot draw layers. Every test gets its own settings folder and an empty demo-model cache,
so the user's remembered model and cached demo model are never read or written.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

try:
    import napari  # noqa: F401
except ImportError:  # the plugin's extra is not installed: skip the whole folder
    collect_ignore_glob = ["test_*.py"]

SMALL_MOVIE = {"n_frames": 5, "size": 128, "n_cells": 8, "seed": 3}


def pytest_collection_modifyitems(config, items):
    """Every test of this folder needs napari and a display: marked ``gui`` (``pytest -m "not gui"`` skips them)."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.gui)


@pytest.fixture
def errors(monkeypatch):
    """The messages the docks show with napari's show_error (every dock shows them through ``_dock``)."""
    from napari_yeast_phenotypes._napari import _dock

    shown: list[str] = []
    monkeypatch.setattr(_dock, "show_error", shown.append)
    return shown


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def small_movie():
    """A 5-frame 128x128 synthetic movie with tracked labels (classifies in a second or two)."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    return simulate_movie(**SMALL_MOVIE)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """An untrained but valid checkpoint: random weights, so predictions are arbitrary."""
    from napari_yeast_phenotypes._napari._safe_torch import import_torch_core

    import_torch_core()  # a viewer may already have loaded Mesa's LLVM: see _safe_torch
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.pt"
    save_checkpoint(path, Classifier(YeastResNet(8)))
    return path


def truth_result(movie, confidence: float = 0.9):
    """A result built without torch, as from a perfect classifier: the simulation's truth as probabilities.

    Goes through the core's own tracking and timeline code, so it has every column a real result has.
    """
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.core.track.timeline import add_timeline, prob_columns, track_summary
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    table = build_cell_table(movie.labels)
    truth = table[["frame", "label"]].merge(movie.truth, on=["frame", "label"], how="left")
    idx = np.array([CLASS_NAMES.index(c) for c in truth["phenotype"]])
    probs = np.full((len(table), len(CLASS_NAMES)), (1 - confidence) / (len(CLASS_NAMES) - 1), np.float32)
    probs[np.arange(len(table)), idx] = confidence
    table[prob_columns(CLASS_NAMES)] = probs
    cells = add_timeline(table, CLASS_NAMES)
    return types.SimpleNamespace(cells=cells, tracks=track_summary(cells, CLASS_NAMES), class_names=CLASS_NAMES)


@pytest.fixture(scope="session")
def result_movie():
    """A 12-frame movie in which some cells become senescent, and its truth-based result."""
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    movie = simulate_movie(n_frames=12, size=128, n_cells=10, seed=5, p_senesce=0.15)
    return movie, truth_result(movie)
