"""Snippet for /work/shared/tools/napari-screenshot: the sample, the classify dock, overlays and plots.

    napari-screenshot docs/napari_screenshot.py docs/napari_screenshot.png --python .venv/bin/python

Uses the newest cached demo model (``yeast-phenotypes demo --out DIR`` makes one).
"""

from napari_yeast_phenotypes._napari._layers import PHENOTYPES_LAYER
from napari_yeast_phenotypes._napari._settings import newest_demo_model

viewer.open_sample("napari-yeast-phenotypes", "yeast-timelapse")
dock, widget = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Classify phenotypes")
model = newest_demo_model()
if model is None:
    raise SystemExit("no demo model: run `yeast-phenotypes demo --out DIR` first")
widget.model_choice.value = model
widget.run(sync=True)
# a mid-movie frame where a cell becomes senescent, so its marker shows
events = viewer.layers["senescence"].features
EVENT = events.iloc[(events["frame"] - 22).abs().argmin()] if len(events) else None
FRAME = int(EVENT["frame"]) if EVENT is not None else 20
viewer.dims.set_current_step(0, FRAME)


def on_ready(viewer):
    # hover a cell, as a user would: the status bar shows its track, phenotype and confidence, and
    # the senescence marker of a hovered senescent track is named
    res = widget.result
    here = res.cells[res.cells["frame"] == FRAME]
    cell = here[here["track_id"] == EVENT["track_id"]].iloc[0] if EVENT is not None else here.iloc[3]
    viewer.layers.selection.active = viewer.layers[PHENOTYPES_LAYER]
    viewer.cursor.position = (FRAME, cell["y"] + 2, cell["x"] + 2)
    widget.senescence_labels.hover(viewer.cursor.position)
