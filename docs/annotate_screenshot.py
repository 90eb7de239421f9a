"""Snippet for /work/shared/tools/napari-screenshot: the Annotate dock in use on the sample movie.

    napari-screenshot docs/annotate_screenshot.py docs/annotate_screenshot.png --size 1700x1050

Model: ``$ANNOTATE_MODEL``, else the newest demo model in the cache (``yeast-phenotypes demo``
makes one). The curated set goes to a temporary folder.
"""

import os
import tempfile
from pathlib import Path

from napari_yeast_phenotypes._napari._settings import newest_demo_model

model = os.environ.get("ANNOTATE_MODEL")
if not model:
    model = newest_demo_model()
if model is None or not Path(model).exists():
    raise SystemExit("no model: run `yeast-phenotypes demo --out DIR` first, or set ANNOTATE_MODEL")

viewer.open_sample("napari-yeast-phenotypes", "yeast-timelapse")
_, classify = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Classify phenotypes")
classify.model_choice.value = model
classify.run(sync=True)
annotate_dock, annotate = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Annotate phenotypes",
                                                                   tabify=True)
annotate.set_edit.setText(str(Path(tempfile.mkdtemp(prefix="curated-")) / "set"))
annotate.setup.annotator_edit.setText("demo")
assert annotate.start(), annotate.status.text()

# a short session: the first cells of the queue labelled with the simulation's truth
truth = viewer.layers["cells"].metadata["truth"].set_index(["frame", "label"])["phenotype"]
cells = annotate.session.cells
for _ in range(6):
    annotate.next_cell()
    c = cells.iloc[annotate.row]
    annotate.apply(truth.loc[(int(c["frame"]), int(c["label"]))])
# one track filled from a frame on (Shift+key), then the next cell to check is shown
annotate.next_cell()
c = cells.iloc[annotate.row]
annotate.apply(truth.loc[(int(c["frame"]), int(c["label"]))], fill=True)
annotate.next_cell()
annotate.gallery_class.setCurrentText(cells["phenotype"].value_counts().index[0])


def on_ready(viewer):
    annotate_dock.raise_()
    viewer.layers.selection.active = viewer.layers["phenotypes"]
