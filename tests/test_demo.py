"""The demo's folder: the README's command can be run twice as written; a folder it did not make is refused."""

from __future__ import annotations

import shutil

import pytest

from napari_yeast_phenotypes import demo
from napari_yeast_phenotypes.cli import main


@pytest.fixture
def quick_demo(monkeypatch, random_checkpoint):
    """The demo with a small movie and the random checkpoint as its model (the flow, not the training)."""
    monkeypatch.setattr(demo, "DEMO_MOVIE", {"n_frames": 4, "size": 96, "n_cells": 4})

    def build(root, seed):
        root.mkdir(parents=True, exist_ok=True)
        (root / "settings.json").write_text("{}")
        return root

    def model(out, seed, epochs, retrain, recipe, device):
        shutil.copyfile(random_checkpoint, out / "model.pt")
        return out / "model.pt"

    monkeypatch.setattr(demo, "build_curated_set", build)
    monkeypatch.setattr(demo, "get_model", model)
    monkeypatch.setattr(demo, "fit_demo_track_model", lambda out, model_path, device: (None, None))


@pytest.mark.slow
def test_the_demo_runs_twice_into_the_same_folder(quick_demo, tmp_path, capsys):
    out = tmp_path / "demo_out"
    assert main(["demo", "--out", str(out)]) == 0
    first = (out / "run.json").read_text()
    assert main(["demo", "--out", str(out)]) == 0  # as the README says: no --overwrite needed
    assert (out / "run.json").read_text() != first and (out / "accuracy.json").is_file()


def test_a_folder_the_demo_did_not_make_is_refused(quick_demo, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "cells.csv").write_text("my own results\n")
    assert main(["demo", "--out", str(out)]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "cells.csv").read_text() == "my own results\n"
