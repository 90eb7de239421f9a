"""Snippet for /work/shared/tools/napari-screenshot: the Train dock after a short training on a
simulated curated set (docs/train_dock.png). Run from the repository root:

    PYTHONPATH=src napari-screenshot docs/train_dock_screenshot.py docs/train_dock.png --size 1600x1000 \
        --python .venv/bin/python --timeout 900 --max-wait 800
"""

import tempfile
from pathlib import Path

import numpy as np

from napari_yeast_phenotypes.core.crops import CropSettings
from napari_yeast_phenotypes.core.curated import CuratedSet, crops_for_annotations
from napari_yeast_phenotypes.core.simulate import simulate_movie

viewer = globals()["viewer"]  # given by napari-screenshot
work = Path(tempfile.mkdtemp(prefix="train-dock-"))
movie = simulate_movie(n_frames=8, size=160, n_cells=12, seed=7)
truth = movie.truth[movie.truth["frame"] % 2 == 0].copy()
truth["split"] = np.where(truth["label"] % 3 == 0, "val", "train")
cs = CuratedSet(work / "set", CropSettings())
crops, rows = crops_for_annotations(movie.image, movie.labels, truth, cs.crop_settings, source="image.tif",
                                    experiment="sim")
cs.add(crops, rows, annotator="simulation truth")

viewer.add_image(movie.image, name="image")
viewer.add_labels(movie.labels, name="cells")
_, train_dock = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Train phenotype model")
train_dock.set_edit.setText(str(work / "set"))
train_dock.base_choice.setCurrentText("none")
train_dock.trainable_choice.setCurrentText("all")
train_dock.epochs_spin.setValue(3)
train_dock.batch_spin.setValue(16)
train_dock.lr_spin.setValue(0.002)
train_dock.out_edit.setText(str(work / "model.pt"))


def on_ready(viewer):
    train_dock.start(sync=True)  # the dock's own handlers, run in this thread so the picture waits
