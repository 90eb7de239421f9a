"""Snippet for /work/shared/tools/napari-screenshot: the classify dock on a REAL movie.

    napari-screenshot docs/napari_screenshot_real.py docs/napari_screenshot_real.png --python .venv/bin/python

The movie is yeastvision's 10-frame sample (../shared/data/real/yeastvision-sample-movie, see its
SOURCE.md; set YEAST_REAL_MOVIE to its folder elsewhere): a fluorescence stack and tracked masks
opened as plain arrays, without axis names, as a user's TIFF files come. The model is the newest
cached demo model, trained on simulated cells only, so its calls on real cells are not to be trusted
(that is what the annotation dock is for); the picture shows how the viewer presents them.
"""

import os
from pathlib import Path

import tifffile

from napari_yeast_phenotypes._napari._settings import newest_demo_model

folder = Path(os.environ.get("YEAST_REAL_MOVIE", "/work/shared/data/real/yeastvision-sample-movie"))
viewer.add_image(tifffile.imread(folder / "cdc_fluorescence.tif"), name="cdc fluorescence", colormap="gray")
viewer.add_labels(tifffile.imread(folder / "masks.tif"), name="masks")
dock, widget = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Classify phenotypes")
model = newest_demo_model()
if model is None:
    raise SystemExit("no demo model: run `yeast-phenotypes demo --out DIR` first")
widget.model_choice.value = model
widget.run(sync=True)
viewer.dims.set_current_step(0, 0)  # the first frame, where the senescence markers crowd
