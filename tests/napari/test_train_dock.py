"""The training dock in a real napari viewer: a tiny curated set, one short epoch in the thread worker,
the report beside the previous model, and "Use this model" re-classifying the movie (the Annotate dock
following)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN, _train_figures
from napari_yeast_phenotypes._napari._layers import RESULT_KEY
from napari_yeast_phenotypes._napari._train import TrainWidget


def _tiny_set(folder, movie):
    """A curated set of the movie's first two frames: odd tracks train, even tracks validate."""
    from napari_yeast_phenotypes.core.data.crops import CropSettings
    from napari_yeast_phenotypes.core.data.curated import CuratedSet, crops_for_annotations

    truth = movie.truth[movie.truth["frame"] < 2].copy()
    truth["split"] = np.where(truth["label"] % 2 == 1, "train", "val")
    cs = CuratedSet(folder, CropSettings())
    crops, rows = crops_for_annotations(movie.image, movie.labels, truth, cs.crop_settings, source="image.tif",
                                        experiment="sim")
    cs.add(crops, rows, annotator="truth")
    return cs


@pytest.mark.slow
def test_train_in_the_worker_then_use_the_model(make_napari_viewer, qtbot, small_movie, model_path, tmp_path,
                                                 errors, monkeypatch):
    import threading

    drawn_in = []  # the threads the figures were drawn in: matplotlib on the UI thread stalled napari
    render = _train_figures.render
    monkeypatch.setattr(_train_figures, "render",
                        lambda fig: drawn_in.append(threading.current_thread()) or render(fig))
    cs = _tiny_set(tmp_path / "set", small_movie)
    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image, name="image")
    viewer.add_labels(small_movie.labels, name="cells")
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    classify.model_choice.value = model_path
    classify.run(sync=True)
    first = classify.overlays[0]
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    annotate.set_edit.setText(str(tmp_path / "set"))
    assert annotate.start(), annotate.status.text()

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train phenotype model")
    assert isinstance(widget, TrainWidget)
    assert widget.set_edit.text() == str(tmp_path / "set")  # remembered from the Annotate dock
    widget.base_choice.setCurrentText("none")
    widget.epochs_spin.setValue(1)
    widget.batch_spin.setValue(4)
    widget.augment_boxes["affine"].setChecked(True)
    cfg = widget.config()
    assert (cfg.epochs, cfg.batch_size, cfg.base_weights, cfg.augment) == (1, 4, "none", "flips,rot90,affine,intensity")
    out = tmp_path / "new.pt"
    widget.out_edit.setText(str(out))
    worker = widget.start()
    assert worker is not None and not widget.train_button.isEnabled()
    assert widget.tabs.currentIndex() == 1  # the results tab shows the live curves
    view = widget.report_view
    assert view.width() > 100 and view.height() > 50  # laid out before the worker draws
    w_in, h_in = widget.report_fig.get_size_inches()
    assert abs(w_in * widget.report_fig.dpi - view.width()) < 2  # drawn at the size it is shown at
    qtbot.waitUntil(lambda: widget._worker is None, timeout=300_000)
    assert not errors, errors
    assert out.is_file() and widget.classifier is not None
    meta = widget.classifier.metadata
    assert meta["training_set"]["n"] == len(cs.load_split("train"))
    assert len(widget._history) == 1 and widget.progress.value() == 1
    assert len(widget.curves.axes) == 2 and widget.curves.axes[0].lines  # live curves were drawn
    assert len(widget.report_fig.axes) == 4  # counts, row-normalised, F1 per class, reliability
    rows = {round(ax.get_position().y0, 2) for ax in widget.report_fig.axes}
    assert len(rows) == (1 if w_in > 2.5 * h_in else 2)  # a narrow dock gets a 2 x 2 grid
    # both drawn in the worker, and shown here as pictures
    assert len(drawn_in) == 2 and threading.main_thread() not in drawn_in
    for view in (widget.curves_view, widget.report_view):
        assert view.pixmap() is not None and not view.pixmap().isNull()
    # the previous model (the Classify dock's) was judged on the same crops
    assert meta["report"]["previous"]["n"] == meta["report"]["n"]
    assert "Previous model on the same crops" in widget.summary.text()
    assert widget.use_button.isEnabled()

    widget.use_model(sync=True)
    assert classify.model_choice.value is not None and str(classify.model_choice.value) == str(out)
    assert classify.overlays[0] is not first and classify.overlays[0] in viewer.layers
    assert first not in viewer.layers
    # the Annotate dock started again on the new result: its queue follows the new model
    assert annotate.session is not None, annotate.status.text()
    # (the docks see the viewer through napari's proxy: compare what the layers hold)
    assert annotate.layer.metadata[RESULT_KEY] is classify.result is annotate.session.result
    assert annotate.layer.name == classify.overlays[0].name and annotate.layer in viewer.layers


def test_a_folder_that_is_no_curated_set_is_refused_in_words(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.base_choice.setCurrentText("none")
    widget.set_edit.setText(str(tmp_path))
    widget.start(sync=True)
    assert errors and "not a curated set" in errors[-1]
    assert widget.train_button.isEnabled() and widget.classifier is None
