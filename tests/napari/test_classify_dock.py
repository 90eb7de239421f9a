"""The classify dock in a real napari viewer: sample data, runs (synchronous and threaded), overlays, plots."""

from __future__ import annotations

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN
from napari_yeast_phenotypes._napari._classify import ClassifyWidget
from napari_yeast_phenotypes._napari._layers import (
    PHENOTYPES_LAYER,
    RESULT_KEY,
    SENESCENCE_LAYER,
    TRACKS_LAYER,
    PhenotypeFrames,
)
from napari_yeast_phenotypes._napari._settings import NO_MODEL_HINT
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, COLOURS, hex_to_rgba


def _viewer_with(make_napari_viewer, movie, model_path=None):
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    viewer.add_labels(movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify phenotypes")
    if model_path is not None:
        widget.model_choice.value = model_path
    return viewer, widget


def test_sample_and_dock_through_the_plugin_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "yeast-timelapse")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    assert viewer.layers[0].data.shape == (40, 256, 256)
    assert viewer.layers[1].data.shape == (40, 256, 256)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    assert isinstance(widget, ClassifyWidget)
    assert widget.image_choice.value is viewer.layers[0]
    assert widget.labels_choice.value is viewer.layers[1]
    assert [name for name, _ in widget.legend.entries] == list(CLASS_NAMES)
    assert NO_MODEL_HINT in widget.status.text()  # the test's demo cache is empty


@pytest.mark.slow
def test_run_sync_adds_overlays_features_and_plots(make_napari_viewer, small_movie, model_path, errors):
    viewer, widget = _viewer_with(make_napari_viewer, small_movie, model_path)
    widget.run(sync=True)
    assert errors == []
    res = widget.result
    assert res is not None and len(res.cells) > 0
    assert widget.progress.value() == widget.progress.maximum() == small_movie.image.shape[0]

    painted = viewer.layers[PHENOTYPES_LAYER]
    assert painted.data.shape == small_movie.labels.shape
    assert painted.metadata[RESULT_KEY] is res
    # every cell in every frame is painted, in its class colour; hovering shows its own row
    assert isinstance(painted.data, PhenotypeFrames)  # painted frame by frame, on demand
    assert ((np.asarray(painted.data) > 0) == (small_movie.labels > 0)).all()
    for row in res.cells.sample(10, random_state=0).itertuples():
        ys, xs = np.nonzero(small_movie.labels[row.frame] == row.label)
        value = painted.data[row.frame, ys[0], xs[0]]
        np.testing.assert_allclose(painted.colormap.map(np.array([value]))[0],
                                   hex_to_rgba(COLOURS[row.phenotype]), atol=1e-6)
        feat = painted.features.set_index("index").loc[int(value)]
        assert (feat["track_id"], feat["frame"], feat["phenotype"]) == (row.track_id, row.frame, row.phenotype)
        viewer.dims.set_current_step(0, row.frame)
        status = painted.get_status((row.frame, ys[0], xs[0]), world=True)["coordinates"]
        assert f"track_id: {row.track_id}" in status and f"phenotype: {row.phenotype}" in status
        assert "confidence:" in status

    assert not viewer.layers["cells"].visible  # its label colours would tint the class colours

    tracks = viewer.layers[TRACKS_LAYER]
    assert tracks.data.shape == (len(res.cells), 4)
    assert tracks.color_by == "phenotype_level"
    class_of_vertex = [CLASS_NAMES[k] for k in tracks.features["phenotype_index"]]
    np.testing.assert_allclose(tracks.track_colors, [hex_to_rgba(COLOURS[c]) for c in class_of_vertex], atol=1e-6)
    by_vertex = res.cells.sort_values(["track_id", "frame"])["phenotype"].tolist()
    assert class_of_vertex == by_vertex
    assert len(tracks.features) == len(res.cells)
    points = viewer.layers[SENESCENCE_LAYER]
    assert len(points.data) == int(res.tracks["senescence_frame"].notna().sum())

    # raster and fractions follow the slider; the senescence panel counts time since first seen
    assert widget.plots is not None and len(widget.plots.frame_lines) == 2
    assert widget.export_button.isEnabled()


def test_time_slider_moves_the_plot_line(make_napari_viewer, result_movie):
    movie, res = result_movie
    viewer, widget = _viewer_with(make_napari_viewer, movie)
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    plots = widget.plots
    for frame in (7, 2):
        viewer.dims.set_current_step(0, frame)
        assert plots.frame == frame
        for line in plots.frame_lines:
            assert list(line.get_xdata()) == [frame, frame]


def test_closed_plot_dock_comes_back(make_napari_viewer, qtbot, result_movie):
    movie, res = result_movie
    viewer, widget = _viewer_with(make_napari_viewer, movie)
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    plots = widget.plots
    viewer.window.remove_dock_widget(plots)  # what the dock's close button does
    assert plots.parent() is None
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    assert widget.plots is plots and plots.parent() is not None
    viewer.dims.set_current_step(0, 4)
    assert plots.frame == 4


def test_rerun_replaces_the_overlays(make_napari_viewer, result_movie):
    movie, res = result_movie
    viewer, widget = _viewer_with(make_napari_viewer, movie)
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    names = [layer.name for layer in viewer.layers]
    assert names.count(PHENOTYPES_LAYER) == 1 and names.count(TRACKS_LAYER) == 1
    # the overlays are not offered as labels to classify
    assert [name for name, _ in widget._labels_layers()] == ["cells"]


def test_threaded_run_with_progress(make_napari_viewer, qtbot, small_movie, model_path, errors):
    viewer, widget = _viewer_with(make_napari_viewer, small_movie, model_path)
    seen = []
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    worker.yielded.connect(seen.append)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: PHENOTYPES_LAYER in viewer.layers, timeout=5_000)
    assert errors == []
    assert seen and seen[-1] == (5, 5)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert viewer.layers[PHENOTYPES_LAYER].data.shape == small_movie.labels.shape


def test_cancel_stops_the_worker(make_napari_viewer, qtbot, small_movie, model_path):
    viewer, widget = _viewer_with(make_napari_viewer, small_movie, model_path)
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        widget.cancel()
    assert "cancelled" in widget.status.text()
    assert PHENOTYPES_LAYER not in viewer.layers
    assert widget.result is None and widget.run_button.isEnabled()


def test_single_frame(make_napari_viewer, small_movie, model_path, errors):
    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image[2], name="image")
    viewer.add_labels(small_movie.labels[2], name="cells")
    widget = ClassifyWidget(viewer)
    widget.model_choice.value = model_path
    widget.run(sync=True)
    assert errors == []
    assert viewer.layers[PHENOTYPES_LAYER].data.shape == small_movie.labels.shape[1:]
    assert TRACKS_LAYER not in viewer.layers
    assert viewer.layers[SENESCENCE_LAYER].data.shape[1] == 2
    widget.close()


@pytest.mark.parametrize("case", ["shape", "float labels", "no model", "bad model file"])
def test_bad_choices_give_a_message_not_a_traceback(make_napari_viewer, small_movie, model_path, tmp_path,
                                                   errors, case):
    viewer = make_napari_viewer()
    image, labels, model = small_movie.image, small_movie.labels, model_path
    if case == "shape":
        labels = labels[:, :100]
    elif case == "float labels":
        labels = labels.astype(np.float32)
    elif case == "no model":
        model = None
    else:
        model = tmp_path / "broken.pt"
        model.write_bytes(b"not a model at all")
    viewer.add_image(image, name="image")
    if case == "float labels":
        viewer.add_image(labels, name="cells")  # napari refuses float data in a Labels layer
        widget = ClassifyWidget(viewer)
        widget.labels_choice.choices = [("cells", viewer.layers["cells"])]  # as if chosen anyway
    else:
        viewer.add_labels(labels, name="cells")
        widget = ClassifyWidget(viewer)
    if model is not None:
        widget.model_choice.value = model
    assert widget.run(sync=True) is None
    expected = {"shape": "differ", "float labels": "integers", "no model": "No model yet",
                "bad model file": "broken.pt"}[case]  # the core's message names the file
    assert len(errors) == 1 and expected in errors[0]
    assert expected in widget.status.text()
    assert PHENOTYPES_LAYER not in viewer.layers
    assert widget.run_button.isEnabled()
    widget.close()


def test_threaded_bad_model_file_gives_a_message(make_napari_viewer, qtbot, small_movie, tmp_path, errors):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    _, widget = _viewer_with(make_napari_viewer, small_movie, bad)
    widget.run()
    # the worker may finish before a waitSignal could be set up: wait for its visible outcome
    qtbot.waitUntil(lambda: bool(errors) and widget.run_button.isEnabled(), timeout=120_000)
    assert "not a readable model file" in errors[0]
    assert "not a readable model file" in widget.status.text()


def test_model_choice_is_remembered_and_demo_model_offered(make_napari_viewer, small_movie, model_path,
                                                           tmp_path, monkeypatch):
    cache = tmp_path / "demo-cache"
    cache.mkdir()
    (cache / "demo-model-aaaa.pt").write_bytes(b"x")
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_CACHE", str(cache))
    viewer, widget = _viewer_with(make_napari_viewer, small_movie)
    assert widget.model_choice.value == cache / "demo-model-aaaa.pt"
    widget.model_choice.value = model_path
    widget.run(sync=True)
    again = ClassifyWidget(viewer)
    assert again.model_choice.value == model_path.resolve()
    again.close()


@pytest.mark.parametrize("offset", [0, 20_000], ids=["uint16 values", "uint32 values"])
def test_painted_cells_render_in_their_class_colours(make_napari_viewer, offset):
    """What is on screen: eight squares, one per class, drawn in exactly the class colours."""
    from napari_yeast_phenotypes._napari._layers import phenotype_colormap

    data = np.zeros((2, 64, 128), np.uint32 if offset else np.uint16)
    for k in range(8):
        value = 8 * (offset + k) + k + 1  # cell_ids' encoding: 8 * row + class + 1
        data[:, 8 + 32 * (k // 4):24 + 32 * (k // 4), 8 + 32 * (k % 4):24 + 32 * (k % 4)] = value
    viewer = make_napari_viewer(show=True)
    viewer.add_labels(data, colormap=phenotype_colormap(CLASS_NAMES), opacity=1.0, blending="translucent")
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].reshape(-1, 3).astype(int)
    for name in CLASS_NAMES:
        want = np.round(np.asarray(hex_to_rgba(COLOURS[name])[:3]) * 255)
        assert (np.abs(shot - want).max(axis=1) <= 2).sum() > 50, name


def test_dock_title_is_readable_whole(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    qtbot.waitUntil(lambda: widget.isVisible())
    from qtpy.QtWidgets import QLabel

    title = dock.windowTitle()
    assert "Classify phenotypes" in title and PLUGIN in title
    shown = [w for w in dock.findChildren(QLabel) if w.text() == title and w.isVisible()]
    assert shown, "the dock shows its title in a label"
    qtbot.waitUntil(lambda: all(w.width() >= w.fontMetrics().horizontalAdvance(title) for w in shown))


def test_view_fits_the_cells_after_the_plot_dock_opens(make_napari_viewer, qtbot, result_movie):
    """The plot dock takes height from the canvas: the view is fitted again, so no cell is cut off."""
    movie, res = result_movie
    viewer = make_napari_viewer(show=True)
    viewer.add_image(movie.image, name="image")
    viewer.add_labels(movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify phenotypes")
    camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it; >= 0.5 is supported
    qtbot.wait(50)
    before = camera.zoom
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    qtbot.wait(200)
    fitted = camera.zoom
    assert fitted < before  # the canvas is shorter now, the view was refitted to it
    viewer.reset_view()
    assert camera.zoom == pytest.approx(fitted, rel=1e-3)


def test_unnamed_time_axis_is_called_t(make_napari_viewer, result_movie):
    movie, res = result_movie
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    labels = viewer.add_labels(movie.labels, name="cells")
    assert viewer.dims.axis_labels[0] == "-3"  # napari's name for an unnamed axis
    widget = ClassifyWidget(viewer)
    widget.show_result(res, movie.labels, labels)
    assert tuple(viewer.dims.axis_labels) == ("t", "y", "x")
    assert all(tuple(layer.axis_labels) == ("t", "y", "x") for layer in viewer.layers)


def test_named_axes_are_kept(make_napari_viewer, result_movie):
    movie, res = result_movie
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image", axis_labels=("time", "row", "col"))
    labels = viewer.add_labels(movie.labels, name="cells", axis_labels=("time", "row", "col"))
    ClassifyWidget(viewer).show_result(res, movie.labels, labels)
    assert tuple(viewer.dims.axis_labels) == ("time", "row", "col")


def test_senescence_text_only_for_hovered_or_selected_tracks(make_napari_viewer, result_movie):
    from napari_yeast_phenotypes._napari._layers import TEXT_COLUMN

    movie, res = result_movie
    viewer, widget = _viewer_with(make_napari_viewer, movie)
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    sen = viewer.layers[SENESCENCE_LAYER]
    assert len(sen.data) >= 2 and (sen.features[TEXT_COLUMN] == "").all()
    # hover a senescent cell (not its marker) at its senescence frame: its marker is named
    event = sen.features.iloc[0]
    cell = res.cells[(res.cells["frame"] == event["frame"]) & (res.cells["track_id"] == event["track_id"])].iloc[0]
    mask = movie.labels[cell["frame"]] == cell["label"]
    ys, xs = np.nonzero(mask)
    far = np.argmax((ys - cell["y"]) ** 2 + (xs - cell["x"]) ** 2)  # a pixel away from the marker
    viewer.dims.set_current_step(0, int(cell["frame"]))
    viewer.cursor.position = (int(cell["frame"]), int(ys[far]), int(xs[far]))
    widget.senescence_labels._on_mouse_move(viewer, None)  # what napari calls on a mouse move
    text = sen.features[TEXT_COLUMN].tolist()
    assert text[0] == f"senescent #{event['track_id']}" and all(t == "" for t in text[1:])
    # the mouse leaves the cells: no text; selecting a marker names its track
    viewer.cursor.position = (int(cell["frame"]), -50, -50)
    widget.senescence_labels._on_mouse_move(viewer, None)
    assert (sen.features[TEXT_COLUMN] == "").all()
    sen.selected_data = {1}
    text = sen.features[TEXT_COLUMN].tolist()
    assert text[1] == f"senescent #{sen.features['track_id'].iloc[1]}" and text[0] == ""
    # a new result stops the old layers' helper
    old = widget.senescence_labels
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    assert old._on_mouse_move not in viewer.mouse_move_callbacks
    assert widget.senescence_labels._on_mouse_move in viewer.mouse_move_callbacks


def test_plot_raster_rows_show_track_ids(make_napari_viewer, result_movie):
    from napari_yeast_phenotypes.core.results.plots import raster_matrix

    movie, res = result_movie
    viewer, widget = _viewer_with(make_napari_viewer, movie)
    widget.show_result(res, movie.labels, viewer.layers["cells"])
    widget.plots.canvas.draw()
    raster = widget.plots.figure.axes[0]
    _, order, _ = raster_matrix(res.cells, res.tracks, res.class_names)
    shown = [(t.get_position()[1], t.get_text()) for t in raster.get_yticklabels() if t.get_text()]
    assert len(shown) >= 2
    for row, label in shown:
        assert label == str(order[int(round(row))])
    assert "track id" in raster.get_ylabel()
