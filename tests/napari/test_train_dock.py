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
    widget.settings.small_data_choice.setCurrentText("off")  # one short epoch, as set (a test of the dock)
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
    verdict = meta["report"]["comparison"]["verdict"]  # a verdict in words, from a paired bootstrap
    assert meta["report"]["comparison"]["words"] in widget.verdict.text()
    assert widget.use_button.isEnabled() == (verdict == "better") == widget.use_button.isDefault()
    if verdict != "better":
        widget.use_anyway.setChecked(True)  # a model not shown better is used on purpose
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


def _report(verdict, n=17):
    """A training report (plain values, as a checkpoint keeps it) whose comparison says ``verdict``."""
    from napari_yeast_phenotypes.core.network.evaluation import metrics
    from napari_yeast_phenotypes.core.network.intervals import compare_paired, with_intervals

    names = ["Aggregate", "Cytoplasm"]
    t = np.arange(n) % 2
    tracks = np.arange(n) // 3
    good, bad = t.copy(), 1 - t
    new, old = {"better": (good, bad), "worse": (bad, good), "cannot tell": (good, good)}[verdict]
    m, prev = (with_intervals(metrics(t, p, names), t, p, tracks) for p in (new, old))
    comparison = compare_paired(t, new, old, names, tracks)
    assert comparison["verdict"] == verdict
    return {"on": f"{n} validation crops", "optimistic": False, "n": n, "metrics": m, "previous": prev,
            "comparison": comparison, "few_classes": [], "notes": [], "ece_before": 0.1, "ece_after": 0.1}


@pytest.mark.parametrize("verdict", ["better", "worse", "cannot tell"])
def test_use_this_model_is_the_default_action_only_when_better(make_napari_viewer, tmp_path, errors, monkeypatch,
                                                                verdict):
    import types

    from napari_yeast_phenotypes._napari import _train

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.show()
    widget.model_path = tmp_path / "new.pt"
    widget.model_path.write_bytes(b"a checkpoint")
    rep = _report(verdict)
    widget._on_trained(types.SimpleNamespace(metadata={"report": rep, "best_epoch": 1, "stopped": "finished",
                                                       "calibration": {}}))
    text = widget.verdict.text()
    assert widget.verdict.isVisible() and rep["comparison"]["words"] in text
    assert rep["comparison"]["words"] in widget.summary.text()  # the report in words says it too
    lo, hi = rep["metrics"]["ci"]["accuracy"]
    assert f"accuracy {rep['metrics']['accuracy']:.3f} ({lo:.3f}-{hi:.3f})" in widget.summary.text()
    used = []
    monkeypatch.setattr(_train, "open_dock", lambda *a: None)
    monkeypatch.setattr(widget.state, "request_classify", lambda sync=False: used.append(sync))
    if verdict == "better":
        assert widget.use_button.isDefault() and widget.use_button.isEnabled()
        assert not widget.use_anyway.isVisible() and "use it" in text
        widget.use_model()
        assert used and widget.state.model == widget.model_path and not errors
        return
    # worse, or not shown better: a warning line, and using it is a choice made on purpose
    assert not widget.use_button.isDefault() and not widget.use_button.isEnabled()
    assert widget.use_anyway.isVisible() and not widget.use_anyway.isChecked()
    assert widget.verdict.styleSheet() == _train.WARNING_STYLE
    assert ("keep the current one" if verdict == "worse" else "cannot tell with 17 crops of 6 tracks") in text
    widget.use_model()  # called all the same (a key binding, a script): refused in words
    assert not used and errors and "use it anyway" in errors[-1]
    widget.use_anyway.setChecked(True)
    assert widget.use_button.isEnabled() and not widget.use_button.isDefault()
    widget.use_model()
    assert used and widget.state.model == widget.model_path


def test_without_a_previous_model_the_report_says_there_is_nothing_to_compare(make_napari_viewer, tmp_path):
    import types

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    widget.model_path = tmp_path / "new.pt"
    widget.model_path.write_bytes(b"a checkpoint")
    rep = {**_report("better"), "previous": None, "comparison": None}
    widget._on_trained(types.SimpleNamespace(metadata={"report": rep, "best_epoch": 1, "stopped": "finished"}))
    assert "nothing to compare" in widget.verdict.text()
    assert widget.use_button.isEnabled() and not widget.use_button.isDefault() and widget.use_anyway.isHidden()
