"""The docks share one session state per viewer and never set each other's widgets; their settings go from
config to widgets and back unchanged; dense colonies are drawn as contours."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN
from napari_yeast_phenotypes._napari._classify import ClassifyWidget
from napari_yeast_phenotypes._napari._classify_settings import ClassifySettings, DisplayOptions, touching_share
from napari_yeast_phenotypes._napari._state import state_of
from napari_yeast_phenotypes._napari._train_settings import CURRENT, TrainSettings
from napari_yeast_phenotypes.core.config import ClassifyConfig, TrainConfig, recipe_config

NAPARI_DIR = Path(__file__).resolve().parents[2] / "src" / "napari_yeast_phenotypes" / "_napari"


def test_one_state_per_viewer_whatever_proxy_the_docks_get(make_napari_viewer):
    viewer = make_napari_viewer()
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train phenotype model")
    assert classify.state is annotate.state is train.state is state_of(viewer)
    assert state_of(make_napari_viewer()) is not state_of(viewer)


def test_docks_follow_the_session(make_napari_viewer, model_path, tmp_path):
    viewer = make_napari_viewer()
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train phenotype model")
    state = state_of(viewer)
    heard = []
    state.model_changed.connect(heard.append)
    # a model chosen in the Classify dock is the session's: the Train dock fine-tunes it
    classify.model_choice.value = model_path
    assert state.model == model_path and heard == [model_path]
    assert train.previous_model() == model_path
    train.base_choice.setCurrentText(CURRENT)
    assert train.config().base_weights == str(model_path)
    # another dock's choice shows here, through the state (no dock sets another's widgets)
    other = tmp_path / "other.pt"
    other.write_bytes(model_path.read_bytes())
    state.set_model(other)
    assert str(classify.model_choice.value) == str(other)
    state.set_track_model(tmp_path / "tm.json")
    assert str(classify.track_model_choice.value) == str(tmp_path / "tm.json")
    # the curated set: typed in one dock, shown in the other
    annotate.set_edit.setText(str(tmp_path / "set"))
    annotate.set_edit.editingFinished.emit()
    assert state.curated_set == tmp_path / "set" and train.set_edit.text() == str(tmp_path / "set")


def test_no_dock_sets_another_docks_widgets():
    """``dock_of`` (finding another dock) is only used to open a dock, never to reach into one."""
    for path in NAPARI_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "dock_of"]
        if path.name != "_dock.py":
            assert not calls, f"{path.name} looks another dock up; share through _state instead"
    # and none names another dock's widgets
    for path in NAPARI_DIR.glob("*.py"):
        text = path.read_text()
        for other in ("classify.model_choice", "classify.track_model_choice", "annotate.start(", "train.config("):
            assert other not in text, (path.name, other)


@pytest.mark.parametrize("config", [
    ClassifyConfig(),
    ClassifyConfig(relink="yes", chunk_frames=3, batch_size=512, device="cpu", precision="fp32", fast_path=False),
    ClassifyConfig(relink="no", device="cuda:1", precision="bf16"),
])
def test_classify_settings_round_trip(qtbot, config):
    w = ClassifySettings()
    qtbot.addWidget(w)
    w.set_config(config)
    assert w.config() == config


@pytest.mark.parametrize("config", [
    TrainConfig(),
    TrainConfig(epochs=3, batch_size=16, lr=2e-3, base_weights="none", trainable="all", augment="flips,noise",
                schedule="step", class_weighting="none", patience=2, calibrate=False, seed=7, holdout=0.2,
                small_data="off", min_steps=50, sampling="balanced", stop_folds=4),
    TrainConfig(base_weights="imagenet", trainable="conv1,layer4,fc", augment="none"),
    recipe_config("robust", epochs=4, base_weights="none"),
])
def test_train_settings_round_trip(qtbot, config, tmp_path):
    w = TrainSettings()
    qtbot.addWidget(w)
    w.set_config(config)
    assert w.config() == config
    # a local file and the current model
    local = tmp_path / "base.pt"
    local.write_bytes(b"x")
    cfg = TrainConfig(base_weights=str(local))
    w.set_config(cfg)
    assert w.config() == cfg
    w.set_config(cfg, current_model=local)
    assert w.base_choice.currentText() == CURRENT and w.config(current_model=local) == cfg


def test_the_classify_dock_classifies_with_its_settings(make_napari_viewer, small_movie, model_path):
    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image, name="image")
    viewer.add_labels(small_movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    widget.model_choice.value = model_path
    widget.settings.set_config(ClassifyConfig(batch_size=7, chunk_frames=2, precision="fp32"))
    widget.run(sync=True)
    assert widget.run_info["config"]["batch_size"] == 7 and widget.run_info["config"]["chunk_frames"] == 2
    opened = state_of(viewer).open
    assert opened.result is widget.result and opened.phenotypes_layer is widget.overlays[0]


def test_touching_share_and_contours_for_dense_colonies(make_napari_viewer, result_movie):
    lab = np.zeros((20, 20), np.int32)
    lab[2:6, 2:6], lab[2:6, 6:10] = 1, 2  # two touching cells
    lab[12:16, 12:16] = 3  # one apart
    assert touching_share(lab) == pytest.approx(2 / 3)
    assert touching_share(np.zeros((5, 5), int)) == 0.0
    movie, res = result_movie  # the simulator leaves background between cells: filled
    viewer = make_napari_viewer()
    viewer.add_image(movie.image, name="image")
    labels = viewer.add_labels(movie.labels, name="cells")
    widget = ClassifyWidget(viewer)
    widget.show_result(res, movie.labels, labels)
    layer = widget.overlays[0]
    assert layer.contour == 0
    widget.display.mode.setCurrentText("contours")
    assert layer.contour > 0 and layer.opacity == 1.0
    widget.display.mode.setCurrentText("filled")
    assert layer.contour == 0
    dense = DisplayOptions()
    packed = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 5, axis=0), 5, axis=1)[None]
    assert dense.contours_for(type("L", (), {"data": type("D", (), {"labels": packed})()})())


def test_choosing_a_recipe_shows_its_settings_and_keeps_the_others(qtbot):
    w = TrainSettings()
    qtbot.addWidget(w)
    w.epochs_spin.setValue(7)
    w.base_choice.setCurrentText("none")
    w.recipe_choice.setCurrentText("robust")
    cfg = w.config()
    assert cfg == recipe_config("robust", epochs=7, base_weights="none")
    assert w.augment_boxes["microscope"].isChecked() and w.augment_boxes["blur"].isChecked()
    w.recipe_choice.setCurrentText("study")
    assert w.config() == recipe_config("study", epochs=7, base_weights="none")
    assert not w.augment_boxes["microscope"].isChecked()
