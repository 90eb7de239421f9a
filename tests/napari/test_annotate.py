"""The Annotate dock in a real napari viewer: click, keys, fill, clear, undo/redo, queue, gallery, persistence."""

from __future__ import annotations

import numpy as np
import tifffile
from napari.utils._test_utils import read_only_mouse_event
from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks
from qtpy.QtCore import Qt

from napari_yeast_phenotypes._napari import PLUGIN, _annotate
from napari_yeast_phenotypes._napari._annotate import SELECTION_LAYER, AnnotateWidget
from napari_yeast_phenotypes._napari._classify import ClassifyWidget
from napari_yeast_phenotypes._napari._layers import PHENOTYPES_LAYER
from napari_yeast_phenotypes.core.data.crops import CropSettings, movie_crops, movie_stats
from napari_yeast_phenotypes.core.data.curated import CuratedSet, movie_identity
from napari_yeast_phenotypes.core.results.export import cells_for_export
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def _run(movie) -> dict:
    return {"crop_settings": CropSettings().to_dict(),
            "movie_stats": movie_stats(movie.image, movie.labels).to_dict(),
            "model": {"fingerprint": "model-under-test"}, "inputs": {"image": {"name": "image"}}}


def _annotating(make_napari_viewer, result_movie, folder, fresh_result=True):
    """A viewer with a classified movie (truth-based result, no torch) and a started Annotate dock."""
    import copy

    movie, result = result_movie
    result = copy.deepcopy(result) if fresh_result else result
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    labels_layer = viewer.add_labels(movie.labels, name="cells")
    classify = ClassifyWidget(viewer)
    classify.show_result(result, movie.labels, labels_layer, run=_run(movie))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    assert isinstance(widget, AnnotateWidget)
    widget.set_edit.setText(str(folder))
    widget.setup.annotator_edit.setText("tester")
    assert widget.start(), widget.status.text()
    return viewer, widget, result


def _pixel_of(movie, frame, label):
    ys, xs = np.nonzero(movie.labels[frame] == label)
    i = len(ys) // 2
    return float(ys[i]), float(xs[i])


def _click(layer, position):
    for kind, fire in (("mouse_press", mouse_press_callbacks), ("mouse_release", mouse_release_callbacks)):
        fire(layer, read_only_mouse_event(type=kind, button=1, position=position, dims_displayed=[1, 2]))


def _keys(viewer):
    return viewer.window._qt_viewer._key_map_handler  # the canvas's key handler, as a key press reaches it


def _long_track(result):
    counts = result.cells["track_id"].value_counts()
    return int(counts.index[0])


def test_click_selects_the_cell_at_that_frame_and_shows_the_models_crop(make_napari_viewer, result_movie, tmp_path):
    movie, _ = result_movie
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    cells = result.cells
    target = cells[(cells["frame"] == 7)].iloc[3]
    viewer.dims.set_current_step(0, 7)
    layer = viewer.layers[PHENOTYPES_LAYER]
    y, x = _pixel_of(movie, 7, int(target["label"]))
    _click(layer, (7, y, x))
    assert widget.row == int(target.name)
    assert (cells.iloc[widget.row]["frame"], cells.iloc[widget.row]["label"]) == (7, target["label"])
    expected = movie_crops(movie.image, movie.labels, cells.iloc[[widget.row]])[0, 0]
    np.testing.assert_array_equal(widget.crop_view.crop, expected)
    assert f"frame 7, label {int(target['label'])}" in widget.cell_info.text()
    # the filmstrip shows the track's frames, the current one highlighted; clicking one goes there
    film = widget.filmstrip.thumbs
    track = cells[cells["track_id"] == target["track_id"]].sort_values("frame")
    assert [int(cells.iloc[r]["frame"]) for r in film.rows] == list(track["frame"])[:len(film.rows)]
    other = next(i for i, r in enumerate(film.rows) if r != widget.row)
    film.buttons[other].click()
    assert widget.row == film.rows[other]
    assert viewer.dims.current_step[0] == int(cells.iloc[film.rows[other]]["frame"])
    # a drag (panning) is not a click: the selection stays
    before = widget.row
    fire = read_only_mouse_event
    mouse_press_callbacks(layer, fire(type="mouse_press", button=1, position=(7, 0.0, 0.0), dims_displayed=[1, 2]))
    mouse_release_callbacks(layer, fire(type="mouse_release", button=1, position=(7, 60.0, 60.0),
                                        dims_displayed=[1, 2]))
    assert widget.row == before


def test_a_key_labels_the_cell_writes_the_crop_with_provenance_and_repaints(make_napari_viewer, result_movie, tmp_path,
                                                                            errors):
    movie, _ = result_movie
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    cells = result.cells
    tid = _long_track(result)
    row = int(cells[(cells["track_id"] == tid)].sort_values("frame").index[4])
    widget.select(row)
    assert viewer.dims.current_step[0] == cells.iloc[row]["frame"]
    old = cells.iloc[row]["phenotype"]
    new = "Triple" if old != "Triple" else "Circular"
    assert _keys(viewer).press_key(str(CLASS_NAMES.index(new) + 1))
    assert errors == []
    cs = CuratedSet(tmp_path / "set")
    assert len(cs) == 1
    m = cs.manifest.iloc[0]
    c = cells.iloc[row]
    assert (m["frame"], m["label"], m["track_id"], m["phenotype"]) == (c["frame"], c["label"], tid, new)
    assert (m["annotator"], m["model"], m["experiment"], m["split"]) == ("tester", "model-under-test", "image", "train")
    assert m["movie_id"] == movie_identity(movie.image, movie.labels) and m["annotated_at"]
    np.testing.assert_array_equal(tifffile.imread(cs.root / m["path"]),
                                  movie_crops(movie.image, movie.labels, cells.iloc[[row]])[0, 0])
    # the cell is repainted in the new class, hovering says so, cells.csv says annotated
    layer = viewer.layers[PHENOTYPES_LAYER]
    y, x = _pixel_of(movie, int(c["frame"]), int(c["label"]))
    value = int(np.asarray(layer.data[int(c["frame"])])[int(y), int(x)])
    assert (value - 1) % len(CLASS_NAMES) == CLASS_NAMES.index(new) and (value - 1) // len(CLASS_NAMES) == row
    feat = layer.features.set_index("index").loc[value]
    assert feat["phenotype"] == new and feat["user_label"] == new and bool(feat["annotated"])
    assert cells_for_export(cells).set_index(["frame", "label"]).loc[(c["frame"], c["label"]), "annotated"]
    # the user's own labels layer got no key of ours; ours lose theirs when annotating stops
    assert not viewer.layers["cells"].keymap
    widget.stop()
    assert not layer.keymap and SELECTION_LAYER not in viewer.layers


def test_shift_fill_clear_undo_redo_and_an_impossible_label(make_napari_viewer, result_movie, tmp_path, errors,
                                                            qtbot):
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    cells = result.cells
    tid = _long_track(result)
    rows = cells[cells["track_id"] == tid].sort_values("frame").index.to_numpy()
    widget.select(int(rows[6]))
    widget.apply("Circular")
    widget.select(int(rows[1]))
    # Shift+2: from this frame to the next label of the track (frame of rows[6], not included)
    shift = next(s for s in widget._shortcuts if s.key().toString() == "Shift+2")
    shift.activated.emit()
    assert [widget.session.user.get(int(r)) for r in rows[1:7]] == ["Aggregate"] * 5 + ["Circular"]
    assert (cells.loc[rows[1:6], "phenotype"] == "Aggregate").all() and cells.loc[rows[1:6], "annotated"].all()
    assert len(CuratedSet(tmp_path / "set")) == 6
    # 0 clears; Ctrl+Z undoes (the clear, then the whole fill), Ctrl+Shift+Z redoes
    assert _keys(viewer).press_key("0")
    assert int(rows[1]) not in widget.session.user and len(CuratedSet(tmp_path / "set")) == 5
    assert _keys(viewer).press_key("Control-Z")
    assert len(CuratedSet(tmp_path / "set")) == 6
    dock_undo = next(s for s in widget._shortcuts if s.key().toString() == "Ctrl+Z")
    dock_undo.activated.emit()
    assert len(CuratedSet(tmp_path / "set")) == 1 and (cells.loc[rows[1:6], "annotated"] == False).all()  # noqa: E712
    assert _keys(viewer).press_key("Control-Shift-Z")
    assert len(CuratedSet(tmp_path / "set")) == 6
    # Senescent with Shift: to the end of the track, replacing later labels; then alive after it is refused
    widget.select(int(rows[3]))
    widget.apply("Senescent", fill=True)
    assert (cells.loc[rows[3:], "phenotype"] == "Senescent").all()
    assert all(widget.session.user[int(r)] == "Senescent" for r in rows[3:])
    widget.select(int(rows[-1]))
    assert _keys(viewer).press_key("1")
    assert errors and "does not come back" in errors[-1]
    assert widget.session.user[int(rows[-1])] == "Senescent"
    # marks: kept, shown, not evidence
    widget.select(int(rows[0]))
    assert _keys(viewer).press_key("U")
    assert CuratedSet(tmp_path / "set").mark_counts()["unsure"] == 1
    assert "unsure 1" in widget.counts.text()


def test_next_cell_to_check_jumps_centres_and_says_why(make_napari_viewer, result_movie, tmp_path):
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    cells = result.cells
    assert _keys(viewer).press_key("N")
    first = widget.row
    c = cells.iloc[first]
    assert viewer.dims.current_step[0] == c["frame"]
    np.testing.assert_allclose(_annotate._camera(viewer).center[-2:], (c["y"], c["x"]), rtol=1e-6)
    assert widget.reason.text().startswith("next to check: ")
    q = widget.session.queue()
    assert first == int(q["row"].iloc[0])
    assert _keys(viewer).press_key("N") and widget.row != first
    assert _keys(viewer).press_key("Shift-N") and widget.row == first


def test_gallery_lists_least_confident_first_and_a_click_jumps(make_napari_viewer, result_movie, tmp_path):
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    cells = result.cells
    name = cells["phenotype"].value_counts().index[0]
    widget.gallery_class.setCurrentText(name)
    thumbs = widget.gallery.thumbs
    conf = cells.iloc[thumbs.rows]["confidence"].to_numpy()
    assert len(thumbs.rows) > 1 and (np.diff(conf) >= 0).all()
    assert (cells.iloc[thumbs.rows]["phenotype"] == name).all()
    thumbs.buttons[1].click()
    r = thumbs.rows[1]
    assert widget.row == r and viewer.dims.current_step[0] == cells.iloc[r]["frame"]
    digit = next(s for s in widget._shortcuts if s.key().toString() == str(CLASS_NAMES.index("Triple") + 1))
    digit.activated.emit()  # the dock's own key, as when the gallery has the focus
    assert widget.session.user[r] == "Triple"


def test_labels_come_back_in_a_new_viewer(make_napari_viewer, result_movie, tmp_path):
    movie, _ = result_movie
    viewer, widget, result = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    tid = _long_track(result)
    rows = result.cells[result.cells["track_id"] == tid].sort_values("frame").index.to_numpy()
    widget.select(int(rows[2]))
    widget.apply("BinaryAggregate", fill=True)
    labelled = dict(widget.session.user)
    viewer.close()

    viewer2, widget2, result2 = _annotating(make_napari_viewer, result_movie, tmp_path / "set")
    assert widget2.session.user == labelled
    assert (result2.cells.loc[rows[2:], "phenotype"] == "BinaryAggregate").all()
    layer = viewer2.layers[PHENOTYPES_LAYER]
    c = result2.cells.iloc[rows[-1]]
    y, x = _pixel_of(movie, int(c["frame"]), int(c["label"]))
    value = int(np.asarray(layer.data[int(c["frame"])])[int(y), int(x)])
    assert (value - 1) % len(CLASS_NAMES) == CLASS_NAMES.index("BinaryAggregate")
    n = int(widget2.session.curated.counts()["BinaryAggregate"].sum())
    assert n == len(rows) - 2 and f">&nbsp;{n}&nbsp;<" in widget2.counts.text()


def test_a_set_made_for_other_crops_is_refused_with_a_message(make_napari_viewer, result_movie, tmp_path, errors):
    CuratedSet(tmp_path / "other", CropSettings(margin=0.4))
    movie, result = result_movie
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    labels_layer = viewer.add_labels(movie.labels, name="cells")
    ClassifyWidget(viewer).show_result(result, movie.labels, labels_layer, run=_run(movie))
    widget = AnnotateWidget(viewer)
    widget.set_edit.setText(str(tmp_path / "other"))
    assert not widget.start()
    assert errors and "other crop settings" in errors[-1]
    assert Qt.TextSelectableByMouse & widget.status.textInteractionFlags()
