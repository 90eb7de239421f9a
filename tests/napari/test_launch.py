"""``yeast-phenotypes annotate IMAGE LABELS``: napari on a movie with the docks; classified and annotating at once."""

from __future__ import annotations

import tifffile

from napari_yeast_phenotypes._napari._launch import open_annotator
from napari_yeast_phenotypes._napari._state import state_of
from napari_yeast_phenotypes.cli import main


def test_annotate_command_refuses_missing_files_in_one_line(tmp_path, capsys):
    assert main(["annotate", str(tmp_path / "no.tif"), str(tmp_path / "no_labels.tif")]) == 2
    assert "error: image file not found" in capsys.readouterr().err


def test_open_annotator_classifies_and_starts_annotating(make_napari_viewer, small_movie, model_path, tmp_path):
    tifffile.imwrite(tmp_path / "movie.tif", small_movie.image)
    tifffile.imwrite(tmp_path / "masks.tif", small_movie.labels)
    viewer = make_napari_viewer()
    viewer, classify, annotate = open_annotator(tmp_path / "movie.tif", tmp_path / "masks.tif", model=model_path,
                                                curated=tmp_path / "set", viewer=viewer, sync=True)
    assert [lay.name for lay in viewer.layers][:2] == ["movie", "masks"]
    assert classify.result is not None and state_of(viewer).model == model_path
    assert annotate.session is not None, annotate.status.text()
    assert annotate.session.result is classify.result and (tmp_path / "set" / "settings.json").is_file()
