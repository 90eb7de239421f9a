"""Export button and npe2 writer: the same cells.csv / tracks.csv as ``yeast-phenotypes classify``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN
from napari_yeast_phenotypes._napari._classify import ClassifyWidget
from napari_yeast_phenotypes._napari._layers import PHENOTYPES_LAYER
from napari_yeast_phenotypes._napari._writer import write_phenotype_tables


@pytest.fixture(scope="module")
def cli_tables(small_movie, model_path, tmp_path_factory):
    """What the command line writes for the small movie, saved as TIFFs."""
    import tifffile

    from napari_yeast_phenotypes.cli import main

    d = tmp_path_factory.mktemp("cli")
    tifffile.imwrite(d / "image.tif", small_movie.image)
    tifffile.imwrite(d / "labels.tif", small_movie.labels)
    rc = main(["classify", "--image", str(d / "image.tif"), "--labels", str(d / "labels.tif"),
               "--model", str(model_path), "--out", str(d / "out"), "--device", "cpu"])
    assert rc == 0
    return {name: (d / "out" / name).read_text() for name in ("cells.csv", "tracks.csv")}


@pytest.fixture
def classified(make_napari_viewer, small_movie, model_path):
    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image, name="image")
    viewer.add_labels(small_movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_choice.value = model_path
    widget.run(sync=True)
    assert widget.result is not None
    return viewer, widget


@pytest.mark.slow
def test_export_button_writes_what_the_cli_writes(classified, cli_tables, tmp_path):
    _, widget = classified
    paths = widget.export(tmp_path / "export")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["cells.csv", "tracks.csv", "summary.png", "run.json"]
    for name, text in cli_tables.items():
        assert (tmp_path / "export" / name).read_text() == text
    assert "wrote" in widget.status.text()
    run = json.loads((tmp_path / "export" / "run.json").read_text())
    # how it was made travels with the result: the layers' names and content, the model, the config
    assert run["inputs"]["image"]["name"] == "image" and run["inputs"]["labels"]["name"] == "cells"
    assert len(run["inputs"]["image"]["sha256"]) == 64 and run["model"]["sha256"]
    assert set(run["outputs"]) == {"cells.csv", "tracks.csv", "summary.png"}


@pytest.mark.slow
def test_npe2_writer_writes_what_the_cli_writes(classified, cli_tables, tmp_path):
    viewer, _ = classified
    viewer.layers.selection = {viewer.layers[PHENOTYPES_LAYER]}
    written = viewer.layers.save(str(tmp_path / "saved"), selected=True, plugin=PLUGIN)
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["cells.csv", "run.json", "summary.png", "tracks.csv"]
    for name, text in cli_tables.items():
        assert (tmp_path / "saved" / name).read_text() == text


def test_writer_refuses_a_layer_without_a_result(tmp_path):
    with pytest.raises(ValueError, match="holds no phenotype result"):
        write_phenotype_tables(str(tmp_path / "x"), np.zeros((4, 4), np.uint8), {"metadata": {}})


def test_export_before_run_says_so(make_napari_viewer, errors):
    widget = ClassifyWidget(make_napari_viewer())
    assert widget.export("/nonexistent") == []
    assert errors and "press Run first" in errors[0]
    widget.close()
