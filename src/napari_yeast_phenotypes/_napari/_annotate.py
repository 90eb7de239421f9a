"""Plugins > Annotate phenotypes: correct the model cell by cell along tracks, and grow the curated set.

The dock translates clicks and keys (:mod:`._annotate_keys`) into calls of
:class:`~napari_yeast_phenotypes.core.track.annotation.AnnotationSession` (which writes the curated
set and smooths the track again with the labels as fixed evidence) and repaints only the
cell-frames whose class changed. It is built from the parts in :mod:`._annotate_panels` and shares
the open result, the curated set and the track model with the other docks through the session
state (:mod:`._state`): a new classification of the open movie restarts the annotation on it, a
fitted track model is offered to the Classify dock, and every change of the cells is announced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from ..core.errors import InputError
from ._annotate_keys import KeyBindings
from ._annotate_live import LiveController
from ._annotate_panels import (
    AnnotateSetup,
    CellPanel,
    ClassButtons,
    CountsView,
    GalleryBox,
    LiveBox,
    NavBar,
    TrackModelBox,
)
from ._annotate_views import MARK_COLOURS, Filmstrip, Gallery, framed_pixmap, hex_colour
from ._dock import StatusLine
from ._layers import RESULT_KEY, RUN_KEY
from ._settings import load_settings, save_settings
from ._state import state_of

SELECTION_LAYER = "selected cell"
FILM_HALF = 12  # frames each side of the selected one in the filmstrip
GALLERY_SIZE = 40


def _layer_array(layer):
    data = layer.data
    return data[0] if getattr(layer, "multiscale", False) else data


class AnnotateWidget(StatusLine, QWidget):
    """The Annotate dock (see the module docstring)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.session = None
        self.layer: Labels | None = None
        self.marker = None
        self.row: int | None = None
        self.keys = KeyBindings(self)
        self._resume = False  # annotating stopped because its layer was replaced: start again on the next result
        self.fitted = None  # the last TrackModelFit, and where it was saved
        self.track_model_path: Path | None = None
        names = _class_names_default()

        self.setup = AnnotateSetup(self._result_layers, self._image_layers, load_settings())
        if self.state.curated_set is not None:
            self.setup.set_edit.setText(str(self.state.curated_set))
        self.start_button = QPushButton("Start annotating")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = QLabel("Classify a movie first (Plugins > Classify phenotypes), choose a folder for the "
                             "curated set, then Start annotating and click a cell.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.reason = QLabel("")
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet("color: #ffd36b;")
        self.cell = CellPanel(names)
        self.buttons = ClassButtons(names)
        self.nav = NavBar()
        self.counts_view = CountsView()
        self.gallery_box = GalleryBox(names)
        self.track_box = TrackModelBox()
        self.live_box = LiveBox()

        self._build_layout()
        self.live = LiveController(self)
        self.setup.set_edit.editingFinished.connect(lambda: self.state.set_curated_set(self.setup.set_edit.text()))
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button.clicked.connect(self.stop)
        self.buttons.chosen.connect(lambda v: self.apply(v, fill=False))
        self.nav.undo_button.clicked.connect(self.undo)
        self.nav.redo_button.clicked.connect(self.redo)
        self.nav.next_button.clicked.connect(lambda: self.next_cell())
        self.nav.prev_button.clicked.connect(lambda: self.next_cell(back=True))
        self.cell.filmstrip.clicked.connect(lambda r: self.select(r, move=True))
        self.gallery.clicked.connect(lambda r: self.select(r, move=True))
        self.gallery_class.currentTextChanged.connect(lambda _: self.show_gallery())
        self.track_box.fit_button.clicked.connect(lambda: self.fit_track_model())
        self.track_box.resmooth_button.clicked.connect(lambda: self.use_track_model())
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._layers_changed)
        self.state.result_changed.connect(self._new_result)
        self.state.curated_set_changed.connect(self._show_curated_set)
        self._set_controls(False)

    # ------------------------------------------------------------------ parts, by the names the dock uses
    crop_view = property(lambda self: self.cell.crop_view)
    bars = property(lambda self: self.cell.bars)
    filmstrip = property(lambda self: self.cell.filmstrip)
    cell_info = property(lambda self: self.cell.cell_info)
    gallery = property(lambda self: self.gallery_box.gallery)
    gallery_class = property(lambda self: self.gallery_box.gallery_class)
    fit_button = property(lambda self: self.track_box.fit_button)
    resmooth_button = property(lambda self: self.track_box.resmooth_button)
    track_report = property(lambda self: self.track_box.report)
    counts = property(lambda self: self.counts_view.counts)
    layer_choice = property(lambda self: self.setup.layer_choice)
    image_choice = property(lambda self: self.setup.image_choice)
    set_edit = property(lambda self: self.setup.set_edit)

    def _build_layout(self) -> None:
        start = QHBoxLayout()
        start.addWidget(self.start_button)
        start.addWidget(self.stop_button)
        # everything below the counts scrolls, so the dock fits a laptop screen
        body = QWidget()
        inner = QVBoxLayout(body)
        inner.setContentsMargins(0, 0, 0, 0)
        for w in (self.status, self.reason, self.cell, self.buttons, self.nav, self.live_box, self.gallery_box,
                  self.track_box):
            inner.addWidget(w)
        inner.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.addWidget(self.setup)  # hidden while annotating: room for the cell
        layout.addLayout(start)
        layout.addWidget(self.counts_view)  # always in sight
        layout.addWidget(scroll, 1)

    def _result_layers(self, _widget=None) -> list:
        return [(lay.name, lay) for lay in self.viewer.layers
                if isinstance(lay, Labels) and RESULT_KEY in lay.metadata]

    def _image_layers(self, _widget=None) -> list:
        return [(lay.name, lay) for lay in self.viewer.layers if isinstance(lay, Image)]

    def reset_choices(self, event=None) -> None:
        self.layer_choice.reset_choices()
        self.image_choice.reset_choices()
        if self.layer_choice.value is None and self._result_layers():
            self.layer_choice.value = self._result_layers()[-1][1]
        self._default_image()

    def _default_image(self) -> None:
        lay = self.layer_choice.value
        if lay is None:
            return
        opened = self.state.open
        if opened is not None and opened.phenotypes_layer is lay and opened.image_layer in self.viewer.layers:
            self.image_choice.value = opened.image_layer
        else:
            name = ((lay.metadata.get(RUN_KEY) or {}).get("inputs") or {}).get("image", {}).get("name")
            for n, layer in self._image_layers():
                if n == name or (name and Path(str(name)).stem == n):
                    self.image_choice.value = layer
                    break
        if not self.setup.experiment_edit.text() and self.image_choice.value is not None:
            self.setup.experiment_edit.setText(Path(str(self.image_choice.value.name)).stem)

    def _layers_changed(self, event=None) -> None:
        self.reset_choices()
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.stop()
            self._resume = True  # a new classification replaced it: annotating goes on with the new result
            self.set_status("the phenotypes layer was removed: annotating goes on when a movie is classified "
                            "again, or press Start")

    def _new_result(self, opened) -> None:
        """A new classification is open: annotating goes on with it (the queue follows the new model)."""
        if opened is None or (self.session is None and not self._resume):
            return
        self._resume = False
        self.stop()
        self.reset_choices()
        self.layer_choice.value = opened.phenotypes_layer
        self._default_image()
        self.start()

    def start_when_classified(self) -> None:
        """Start annotating as soon as a classification of the movie is open (the ``annotate`` command)."""
        self._resume = True

    def _show_curated_set(self, path) -> None:
        if path is not None and self.setup.set_edit.text().strip() != str(path):
            self.setup.set_edit.setText(str(path))

    def _set_controls(self, on: bool) -> None:
        for w in (self.buttons, self.nav, self.gallery_class, self.stop_button, self.fit_button, self.live_box.live):
            w.setEnabled(on)
        self.resmooth_button.setEnabled(on and self.fitted is not None)
        self.start_button.setEnabled(not on)
        self.setup.setVisible(not on)

    # ------------------------------------------------------------------ starting and stopping
    def start(self) -> bool:
        """Open the curated set, attach to the phenotypes layer, bind the keys; ``False`` if refused."""
        from ..core.data.crops import CropSettings
        from ..core.data.curated.store import CuratedSet
        from ..core.track.annotation import AnnotationSession

        self.reset_choices()
        layer, image_layer = self.layer_choice.value, self.image_choice.value
        folder = self.setup.set_edit.text().strip()
        try:
            if layer is None:
                raise InputError("no classified movie: classify one first (Plugins > Classify phenotypes)")
            if image_layer is None:
                raise InputError("choose the image layer that was classified")
            if not folder:
                raise InputError("choose a folder for the curated set (a new, empty one or an existing set)")
            result, run = layer.metadata[RESULT_KEY], dict(layer.metadata.get(RUN_KEY) or {})
            labels = getattr(layer.data, "labels", None)
            if labels is None:
                raise InputError("this phenotypes layer has no movie behind it (a single frame?); annotate a movie")
            image = _layer_array(image_layer)
            if tuple(image.shape) != tuple(labels.shape):
                raise InputError(f"the image {image_layer.name!r} {tuple(image.shape)} is not the classified movie "
                                 f"{tuple(labels.shape)}; choose the image that was classified")
            settings = CropSettings.from_dict(run["crop_settings"]) if run.get("crop_settings") else None
            cs = CuratedSet(folder, settings, class_names=result.class_names)
            source = getattr(getattr(image_layer, "source", None), "path", None) or ""
            self.session = AnnotationSession(
                result, image, labels, run, cs, annotator=self.setup.annotator_edit.text().strip(),
                split=self.setup.split_choice.currentText(), experiment=self.setup.experiment_edit.text().strip(),
                movie_path=str(source))
        except InputError as exc:
            self._error(str(exc))
            return False
        self._resume = False
        save_settings(curated_set=folder, annotator=self.setup.annotator_edit.text().strip(),
                      annotate_split=self.setup.split_choice.currentText())
        self.state.set_curated_set(folder)
        self.layer = layer
        self.bars.class_names = list(result.class_names)
        self._add_marker()
        self.keys.bind((self.layer, self.marker), self.session.class_names)
        self._set_controls(True)
        self._prepare_features()
        self.repaint_all()
        self.show_counts()
        self.show_gallery()
        n = len(self.session.user)
        self.set_status(f"annotating into {folder}" + (f"; {n} cell-frames of this movie were labelled before"
                                                          if n else "") + ". Click a cell, or press N.")
        return True

    def stop(self) -> None:
        """Unbind every key and callback this dock added; the labels are all saved already."""
        self.live.stop()
        self.keys.unbind()
        for lay in (self.layer, self.marker):
            if lay is not None and self._on_click in lay.mouse_drag_callbacks:
                lay.mouse_drag_callbacks.remove(self._on_click)
        if self.marker is not None and self.marker in self.viewer.layers:
            self.viewer.layers.remove(self.marker)
        self.session, self.layer, self.marker, self.row = None, None, None, None
        self._set_controls(False)
        self.cell.clear()

    @property
    def _shortcuts(self):
        return self.keys.shortcuts

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)

    def _add_marker(self) -> None:
        if self.marker is not None and self.marker in self.viewer.layers:
            return
        lay = self.layer
        self.marker = self.viewer.add_points(
            np.zeros((0, lay.ndim)), name=SELECTION_LAYER, symbol="square", size=20, face_color="transparent",
            border_color="white", border_width=0.08, out_of_slice_display=False, scale=lay.scale,
            translate=lay.translate, axis_labels=lay.axis_labels, metadata={"annotate_marker": True})
        self.marker.mouse_drag_callbacks.append(self._on_click)
        lay.mouse_drag_callbacks.append(self._on_click)
        self.viewer.layers.selection.active = lay

    def _prepare_features(self) -> None:
        feats = self.layer.features
        if "user_label" not in feats:
            feats["user_label"] = ""
        if "annotated" not in feats:
            feats["annotated"] = False

    # ------------------------------------------------------------------ selecting
    def _on_click(self, layer, event):
        """Select the cell under a click (not a drag: panning keeps the selection)."""
        if getattr(event, "button", 1) != 1 or self.session is None:
            return
        start = np.asarray(event.position, dtype=float)
        yield
        while event.type == "mouse_move":
            yield
        moved = np.abs(np.asarray(event.position, dtype=float) - start).max() if len(start) else 0
        if moved > 2 * float(np.min(self.layer.scale)):
            return
        self.select_at(start)

    def select_at(self, world_position) -> int | None:
        """Select the cell-frame painted at ``world_position`` (the current frame); its row, or None."""
        value = self.layer.get_value(tuple(world_position), world=True)
        if value is None or int(value) <= 0:
            return None
        row = (int(value) - 1) // self.session.n_classes
        self.select(row, move=False)
        return row

    def select(self, row: int, move: bool = True) -> None:
        """Show cell-frame ``row`` in the dock; with ``move``, go to its frame and centre it."""
        s = self.session
        if s is None:
            return
        self.row = int(row)
        cell = s.cells.iloc[self.row]
        frame, y, x = int(cell["frame"]), float(cell["y"]), float(cell["x"])
        if move:
            if self.layer.ndim == 3:
                self.viewer.dims.set_current_step(0, frame)
            world = self.layer.data_to_world((frame, y, x) if self.layer.ndim == 3 else (y, x))
            _camera(self.viewer).center = tuple(world[-2:])
        side = max(float(cell["bbox_y1"] - cell["bbox_y0"]), float(cell["bbox_x1"] - cell["bbox_x0"])) * 1.3 \
            if "bbox_y1" in cell else 20.0
        self.marker.data = np.array([[frame, y, x] if self.layer.ndim == 3 else [y, x]])
        self.marker.size = side
        self.viewer.layers.selection.active = self.layer
        self._show_cell()

    def _show_cell(self) -> None:
        s, r = self.session, self.row
        if s is None or r is None:
            return
        cell = s.cells.iloc[r]
        self.crop_view.show_crop(s.crops([r])[0])
        self.cell.surroundings.show_patch(*s.context(r))
        raw, smooth = s.probabilities(r)
        user = s.user.get(r, "")
        live = self.live.live is not None and self.live.live.last is not None
        self.bars.set_values(raw, smooth, user, network_name="live model" if live else "network",
                             unlabelled=self.live.live.not_labelled if live else ())
        given = f"; your label: <b>{user}</b>" if user else ""
        caller = "live model" if live else "network"
        self.cell_info.setText(f"track {int(cell['track_id'])}, frame {int(cell['frame'])}, label {int(cell['label'])}"
                               f"<br>{caller}: {cell['phenotype_raw']} → track model: <b>{cell['phenotype']}</b> "
                               f"({float(cell['confidence']):.2f}){given}")
        self._show_filmstrip()

    def _show_filmstrip(self) -> None:
        s, r = self.session, self.row
        rows = s.track_rows(r)
        at = int(np.flatnonzero(rows == r)[0])
        window = rows[max(0, at - FILM_HALF):at + FILM_HALF + 1]
        crops = s.crops(window)
        colours = dict(zip(s.class_names, (hex_colour(c) for c in _colours(s.class_names))))
        items = []
        for w, crop in zip(window, crops):
            c = s.cells.iloc[int(w)]
            user = s.user.get(int(w), "")
            mark = user if user in MARK_COLOURS else ""
            pm = framed_pixmap(crop, Filmstrip.SIDE, colours.get(c["phenotype"], "#808080"), mark, thick=bool(user))
            tip = f"frame {int(c['frame'])}: {c['phenotype']} ({float(c['confidence']):.2f})" + \
                (f", your label {user}" if user else "")
            items.append((int(w), pm, str(int(c["frame"])) + ("*" if user else ""), tip, int(w) == r))
        self.filmstrip.set_items(items, current_index=int(np.flatnonzero(window == r)[0]))

    # ------------------------------------------------------------------ labelling
    def apply(self, value: str, fill: bool = False) -> None:
        """Label the selected cell-frame with ``value`` (a class or mark; ``""`` clears)."""
        s = self.session
        if s is None:
            return
        if self.row is None:
            self.set_status("select a cell first: click it, or press N for the next cell to check")
            return
        try:
            out = s.clear(self.row) if value == "" else s.label(self.row, value, fill=fill)
        except InputError as exc:
            self._error(str(exc))
            return
        self._after(out, self.row)

    def undo(self) -> None:
        self._history(self.session.undo if self.session else None)

    def redo(self) -> None:
        self._history(self.session.redo if self.session else None)

    def _history(self, step) -> None:
        if step is None:
            return
        try:
            out = step()
        except InputError as exc:
            self._error(str(exc))
            return
        self._after(out, None)

    def _after(self, out, row) -> None:
        s = self.session
        touched = set(out.rows.tolist())
        if row is not None:
            touched |= set(s.track_rows(row).tolist())
        elif self.row is not None:
            touched |= set(s.track_rows(self.row).tolist())
        rows = np.fromiter(touched, dtype=np.int64, count=len(touched))
        self.repaint(rows)
        live = self.live.after_label()  # the whole movie, when the live model is on
        self.set_status(out.message + (f"; {live.message}" if live is not None and live.message else ""))
        if self.row is not None:
            self._show_cell()
        self.show_counts()
        self.state.result_changed_in_place(rows)

    # ------------------------------------------------------------------ painting
    def repaint(self, rows) -> None:
        """Give ``rows`` their current class colour on the phenotypes layer, and their hover text."""
        s, layer = self.session, self.layer
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if not rows.size:
            return
        values = s.painted_values(rows)
        data = layer.data
        if hasattr(data, "set_values"):
            data.set_values(rows, values)
        feats = layer.features
        cells = s.cells
        for col, vals in (("index", values), ("phenotype", cells["phenotype"].to_numpy()[rows]),
                          ("confidence", np.round(cells["confidence"].to_numpy()[rows], 3)),
                          ("annotated", cells["annotated"].to_numpy()[rows]),
                          ("user_label", [s.user.get(int(r), "") for r in rows])):
            if col in feats:
                feats.iloc[rows, feats.columns.get_loc(col)] = vals
        shown = int(self.viewer.dims.current_step[0]) if layer.ndim == 3 else 0
        if layer.ndim == 2 or shown in set(s.cells["frame"].to_numpy()[rows].tolist()):
            # only the frame on screen is painted again now (others when they are shown); the
            # extent and thumbnail do not change with a cell's class
            layer.refresh(extent=False, thumbnail=False, highlight=False)

    def refresh_features(self) -> None:
        """Every cell-frame's hover text (class, confidence, how unlike the training data) from the table now."""
        from ._layers import phenotype_features

        s, layer = self.session, self.layer
        feats = phenotype_features(s.cells, s.class_names)
        feats["annotated"] = s.cells["annotated"].to_numpy()
        user = np.full(len(s.cells), "", dtype=object)
        for r, v in s.user.items():
            user[r] = v
        feats["user_label"] = user
        layer.features = feats

    def repaint_all(self) -> None:
        """Repaint every cell-frame whose painted value differs from its class (labels loaded at start)."""
        s = self.session
        data = self.layer.data
        every = np.arange(len(s.cells))
        want = s.painted_values(every)
        have = getattr(data, "values", None)
        rows = every if have is None else every[np.asarray(have) != want]
        rows = np.union1d(rows, np.asarray(sorted(s.user), dtype=np.int64))
        self.repaint(rows)

    # ------------------------------------------------------------------ the track model
    def fit_track_model(self) -> bool:
        """Fit the track model on this movie's cells and labels, save it in the curated set, show the report.

        Refused with a message when too few tracks are labelled. ``False`` when refused.
        """
        from ..core.track.track_model_file import report_lines

        s = self.session
        if s is None:
            self._error("press Start annotating first: the track model is fitted on the labels of this movie")
            return False
        try:
            fit = s.fit_track_model()
            path = s.save_track_model(fit)
        except InputError as exc:
            self.track_report.setText(str(exc))
            self._error(str(exc))
            return False
        except OSError as exc:
            self._error(f"could not save the track model in {s.curated.root}: {exc.strerror or exc}")
            return False
        self.fitted, self.track_model_path = fit, path
        self.track_report.setText("\n".join([*report_lines(fit.report), f"saved as {path}"]))
        self.resmooth_button.setEnabled(True)
        use = (fit.report.get("decision") or {}).get("use", "smoothing")
        self.set_status(f"track model fitted on {fit.report['fit_tracks'] + fit.report['validation_tracks']} "
                        f"labelled tracks and saved; it uses {use} (never lower agreement with your labels than the "
                        "raw calls); press \"Re-smooth with it\" to use it")
        return True

    def use_track_model(self) -> None:
        """Smooth every track again with the fitted track model; the session then classifies with it."""
        s, fit = self.session, self.fitted
        if s is None or fit is None:
            return
        changed = s.set_timeline(fit.settings)
        self.repaint(np.arange(len(s.cells)))  # every confidence may have changed, not only the classes
        run = self.layer.metadata.get(RUN_KEY)
        if isinstance(run, dict):  # what an export of this result records (the Classify dock shares this dict)
            config = run.get("config") if isinstance(run.get("config"), dict) else run.setdefault("config", {})
            config["timeline"] = fit.settings.to_dict()
        self.state.set_track_model(self.track_model_path)
        self.state.result_changed_in_place(None)
        if self.row is not None:
            self._show_cell()
        self.show_gallery()
        self.set_status(f"every track smoothed again with the fitted track model: {len(changed)} cell-frames changed "
                        "class; the next classification uses it too")

    # ------------------------------------------------------------------ queue, gallery, counts
    def next_cell(self, back: bool = False) -> None:
        """Go to the next cell to check (``back``: the one before), and say why it is worth a look."""
        if self.session is None:
            return
        got = self.session.next_to_check(back=back)
        if got is None:
            self.reason.setText("nothing before this one" if back else "no unlabelled cell-frame left to check")
            return
        row, why = got
        self.select(row, move=True)
        self.reason.setText(f"next to check: {why}")

    def show_gallery(self) -> None:
        s = self.session
        if s is None:
            return
        name = self.gallery_class.currentText()
        cells = s.cells
        pick = np.flatnonzero(cells["phenotype"].to_numpy() == name)
        order = pick[np.argsort(cells["confidence"].to_numpy()[pick], kind="stable")][:GALLERY_SIZE]
        crops = s.crops(order) if len(order) else []
        colour = hex_colour(_colours([name])[0])
        items = []
        for r, crop in zip(order, crops):
            c = cells.iloc[int(r)]
            user = s.user.get(int(r), "")
            items.append((int(r), framed_pixmap(crop, Gallery.SIDE, colour, "", thick=bool(user)),
                          f"{float(c['confidence']):.2f}",
                          f"track {int(c['track_id'])}, frame {int(c['frame'])}", False))
        self.gallery.set_items(items, f"{len(pick)} cell-frames called {name}; the {len(order)} least confident "
                                      "(click one to go there, then press a key to label it)")

    def show_counts(self) -> None:
        """Crops per class (columns, by code) and split (rows) of the curated set, marks and warnings."""
        if self.session is not None:
            self.counts_view.show_set(self.session.curated)


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera there
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _colours(names):
    from ..core.results.plots import class_colours

    return class_colours(names)


def _class_names_default():
    from ..phenotypes import CLASS_NAMES

    return list(CLASS_NAMES)


__all__ = ["SELECTION_LAYER", "AnnotateWidget"]
