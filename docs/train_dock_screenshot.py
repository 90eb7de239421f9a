"""Snippet for /work/shared/tools/napari-screenshot: the Train dock after fine-tuning the demo model
on new simulated experiments (docs/train_dock.png). Run from the repository root:

    PYTHONPATH=src napari-screenshot docs/train_dock_screenshot.py docs/train_dock.png --size 1600x1000 \
        --python .venv/bin/python --timeout 900 --max-wait 800

What it trains (a few minutes on a loaded 2-core CPU):
- the curated set: the demo's simulated set built with ``seed=1`` (three experiments the demo
  model never saw: exp1 and exp2 are the train split, 2,548 crops; exp3 the val split, 640
  crops; the val split is cut by whole tracks into selection crops and report crops);
- base weights: "a local file", the demo model of seed 0 in the package's cache
  (``yeast-phenotypes demo`` makes it: ``demo-model-<key>.pt``), fine-tuned with trainable
  ``conv1,fc`` (the study's policy) for 2 epochs (lr 3e-4, batch 64); the same demo model is the
  "previous model", judged on the same report crops.
- WITHOUT A CACHED DEMO MODEL the snippet does not fail: it says so on stderr and in the dock's
  status line and trains every layer from random weights for 2 epochs instead (a weaker model,
  and slower: 12.8 minutes on a loaded 2-core machine, near the 900-second --timeout; no
  previous model to compare with).

The dock's settings go to a temporary folder (``NAPARI_YEAST_PHENOTYPES_CONFIG_DIR``), never to the
user's own.
"""

import os
import sys
import tempfile
from pathlib import Path

import tifffile

work = Path(tempfile.mkdtemp(prefix="train-dock-"))
os.environ["NAPARI_YEAST_PHENOTYPES_CONFIG_DIR"] = str(work / "config")  # before the dock reads its settings

from napari_yeast_phenotypes._napari._safe_torch import import_torch_core  # noqa: E402
from napari_yeast_phenotypes._napari._settings import remember_model  # noqa: E402
from napari_yeast_phenotypes.demo import build_curated_set, cached_model_path  # noqa: E402

viewer = globals()["viewer"]  # given by napari-screenshot
set_folder = build_curated_set(work / "curated", seed=1)  # also writes work/training_movies/exp1..3
movie = work / "training_movies" / "exp3"
viewer.add_image(tifffile.imread(movie / "image.tif"), name="exp3 (val split)", colormap="gray")
viewer.add_labels(tifffile.imread(movie / "labels.tif"), name="cells", opacity=0.3)
viewer.dims.axis_labels = ("t", "y", "x")

# the demo model of seed 0 (never the newest in the cache: the demo's other seeds are trained on
# seed 1's experiments, which this snippet trains and judges on)
import_torch_core()  # the window has drawn with Mesa already: torch only through the plugin's safe import
base = cached_model_path(seed=0)
base = base if base.is_file() else None
_, train_dock = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Train phenotype model")
train_dock.set_edit.setText(str(set_folder))
train_dock.batch_spin.setValue(64)
train_dock.out_edit.setText(str(work / "model.pt"))
if base is not None:
    remember_model(base)  # the "current model": the previous model in the report
    train_dock.base_choice.setCurrentText("a local file")
    train_dock.base_file.setText(str(base))
    train_dock.trainable_choice.setCurrentText("conv1,fc")
    train_dock.epochs_spin.setValue(2)
    train_dock.lr_spin.setValue(0.0003)
    NOTE = f"fine-tuning the cached demo model {base.name}"
else:
    train_dock.base_choice.setCurrentText("none")
    train_dock.trainable_choice.setCurrentText("all")
    train_dock.epochs_spin.setValue(2)
    train_dock.lr_spin.setValue(0.002)
    NOTE = ("NO CACHED DEMO MODEL (run `yeast-phenotypes demo --out DIR` first): training every layer "
            "from random weights instead")
print(f"train_dock_screenshot: {NOTE}", file=sys.stderr)


def on_ready(viewer):
    train_dock.start(sync=True)  # the dock's own handlers, run in this thread so the picture waits
    train_dock.set_status(f"{train_dock.status.text()}  [{NOTE}]")
