"""Shared fixtures: small synthetic movies and a quick (untrained) checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# the package of this checkout, even where the environment's editable install points at another one
_SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test its own package cache: what one remembers (the inference check, core/network/inference_memo.py)
    must not decide another's path, nor reach the user's cache."""
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def small_movie():
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie

    return simulate_movie(n_frames=6, size=128, n_cells=8, seed=3)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A valid checkpoint with random weights: predictions are arbitrary, the pipeline runs."""
    import torch

    from napari_yeast_phenotypes.core.network.checkpoint import save_checkpoint
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.pt"
    save_checkpoint(path, Classifier(YeastResNet(8).eval()))
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
