"""The track model in the viewer: the Classify dock's "track model" file field, and the Annotate dock's
"Fit track model from my labels" (refused with too few tracks; saved in the curated set; the report in
words; re-smoothing with it, which the Classify dock then uses)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN
from napari_yeast_phenotypes._napari._classify import ClassifyWidget
from napari_yeast_phenotypes._napari._layers import PHENOTYPES_LAYER, RUN_KEY
from napari_yeast_phenotypes.core.data.crops import CropSettings, movie_stats
from napari_yeast_phenotypes.core.track.annotation import TRACK_MODEL_FILE
from napari_yeast_phenotypes.core.track.timeline import TimelineSettings, add_timeline, prob_columns
from napari_yeast_phenotypes.core.track.track_model_file import load_track_model
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def _annotating(make_napari_viewer, result_movie, folder):
    """A viewer with a classified movie (truth-based result), the Classify dock docked, Annotate started."""
    movie, result = result_movie
    result = copy.deepcopy(result)
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    labels_layer = viewer.add_labels(movie.labels, name="cells")
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    run = {"crop_settings": CropSettings().to_dict(), "movie_stats": movie_stats(movie.image, movie.labels).to_dict(),
           "model": {"fingerprint": "model-under-test"}, "inputs": {"image": {"name": "image"}},
           "config": {"timeline": TimelineSettings().to_dict()}}
    classify.show_result(result, movie.labels, labels_layer, run=run)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    widget.set_edit.setText(str(folder))
    assert widget.start(), widget.status.text()
    return viewer, classify, widget, result


def _label_tracks(widget, movie, n_tracks):
    """Label every frame of the first ``n_tracks`` tracks with the simulation's truth."""
    s = widget.session
    cells = s.cells.merge(movie.truth, on=["frame", "label"], how="left", suffixes=("", "_truth"))
    for tid in sorted(cells["track_id"].unique())[:n_tracks]:
        for row in np.flatnonzero(cells["track_id"].to_numpy() == tid):
            s.label(int(row), cells["phenotype_truth"].iloc[row])


def test_fit_from_labels_is_refused_with_too_few_tracks(make_napari_viewer, result_movie, tmp_path, errors):
    movie, _ = result_movie
    viewer, classify, widget, _ = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    assert widget.fit_button.isEnabled() and not widget.resmooth_button.isEnabled()
    _label_tracks(widget, movie, 2)
    widget.fit_button.click()
    assert errors and "only 2 track(s)" in errors[-1] and "at least 4" in errors[-1]
    assert "only 2 track(s)" in widget.track_report.text()
    assert not (tmp_path / "set" / TRACK_MODEL_FILE).exists()
    assert not widget.resmooth_button.isEnabled() and widget.fitted is None


@pytest.mark.slow
def test_fit_save_report_and_resmooth_then_the_classify_dock_uses_it(make_napari_viewer, result_movie, tmp_path,
                                                                      errors):
    movie, _ = result_movie
    viewer, classify, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    _label_tracks(widget, movie, 6)
    widget.fit_button.click()
    assert not errors, errors
    path = tmp_path / "set" / TRACK_MODEL_FILE
    saved = json.loads(path.read_text())
    v = saved["report"]["validation"]
    text = widget.track_report.text()
    assert f"accuracy {v['raw_accuracy']:.3f} raw, {v['smoothed_accuracy']:.3f} smoothed" in text
    assert "live tracks called senescent" in text and str(path) in text
    # what it uses, smoothing or the raw calls, said in words: it never lowers agreement with the labels
    assert f"uses: {saved['report']['decision']['why']}" in text
    assert saved["report"]["labelled"]["smoothed_accuracy"] >= saved["report"]["labelled"]["raw_accuracy"]
    assert saved["report"]["decision"]["use"] in widget.status.text()
    assert saved["report"]["fit_tracks"] + saved["report"]["validation_tracks"] == 6
    assert widget.resmooth_button.isEnabled()
    # fitting again keeps the earlier file beside the new one
    widget.fit_button.click()
    assert path.exists() and len(list((tmp_path / "set").glob("track_model-*.json"))) == 1

    before = result.cells["confidence"].to_numpy().copy()
    widget.resmooth_button.click()
    settings = load_track_model(path, CLASS_NAMES)
    assert widget.session.timeline == settings
    # every track is the fitted model's smoothing of the network's probabilities, the labels fixed
    cells = result.cells
    labelled = cells["annotated"].to_numpy()
    free = ~np.isin(cells["track_id"], cells["track_id"][labelled])  # tracks without any label
    again = add_timeline(cells[["track_id", "frame", "label", *prob_columns(CLASS_NAMES)]], CLASS_NAMES, settings)
    again = again.set_index(["frame", "label"]).loc[list(zip(cells["frame"], cells["label"]))]
    assert (again["phenotype"].to_numpy()[free] == cells["phenotype"].to_numpy()[free]).all()
    np.testing.assert_allclose(again["confidence"].to_numpy()[free], cells["confidence"].to_numpy()[free], rtol=1e-9)
    assert not np.allclose(before[free], cells["confidence"].to_numpy()[free])
    # what is hovered follows
    feats = viewer.layers[PHENOTYPES_LAYER].features
    np.testing.assert_allclose(feats["confidence"], cells["confidence"].round(3))
    # the Classify dock classifies with it from now on, and an export records it
    assert str(classify.track_model_choice.value) == str(path)
    assert classify.run_info["config"]["timeline"] == settings.to_dict()
    assert viewer.layers[PHENOTYPES_LAYER].metadata[RUN_KEY]["config"]["timeline"] == settings.to_dict()


@pytest.mark.slow
def test_classify_dock_track_model_field(make_napari_viewer, small_movie, model_path, tmp_path, errors):
    from napari_yeast_phenotypes.core.track.track_model import TrackModelFit
    from napari_yeast_phenotypes.core.track.track_model_file import save_track_model

    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image, name="image")
    viewer.add_labels(small_movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    widget.model_choice.value = model_path
    assert widget.track_model() is None  # empty: the built-in rates

    widget.track_model_choice.value = model_path  # a checkpoint is no track model
    assert widget.run(sync=True) is None
    assert errors and "is not a track model file" in errors[-1] and widget.result is None

    settings = TimelineSettings(switch_rate=0.01, senescence_rate=0.002, temperature=2.0)
    other = save_track_model(tmp_path / "other.json", TrackModelFit(settings, {}, tuple(f"c{i}" for i in range(8))))
    widget.track_model_choice.value = other
    widget.run(sync=True)
    assert "fitted for the classes c0" in errors[-1] and widget.result is None

    good = save_track_model(tmp_path / "tm.json", TrackModelFit(settings, {}, CLASS_NAMES))
    widget.track_model_choice.value = good
    n_errors = len(errors)
    widget.run(sync=True)
    assert len(errors) == n_errors, errors
    assert TimelineSettings.from_dict(widget.run_info["config"]["timeline"]) == settings
    cells = widget.result.cells
    again = add_timeline(cells.drop(columns=["phenotype", "confidence"]), CLASS_NAMES, settings)
    assert (again["phenotype"].to_numpy() == cells["phenotype"].to_numpy()).all()
    np.testing.assert_allclose(again["confidence"], cells["confidence"], rtol=1e-9)
