"""Snippet for /work/shared/tools/napari-screenshot: the Annotate dock's live model on a REAL movie.

    LIVE_STAGE=before napari-screenshot docs/annotate_live_real.py docs/annotate_live_real_before.png \
        --size 1700x1050 --python .venv/bin/python
    LIVE_STAGE=after  napari-screenshot docs/annotate_live_real.py docs/annotate_live_real_after.png \
        --size 1700x1050 --python .venv/bin/python

The movie is yeastvision's 10-frame sample (../shared/data/real/yeastvision-sample-movie, see its
SOURCE.md; set YEAST_REAL_MOVIE to its folder elsewhere). The model is the newest cached demo model
(trained on simulated cells only). ``before``: the movie classified by it, the live model started
(features computed once), a cell of a track that was not labelled selected at frame 7. ``after``: the
same, after the labels given by eye on frames 0-4 of 60 tracks (benchmarks/labels/yeastvision_by_eye.csv,
role ``train``) were given one by one, each refitting the live head and recolouring the whole movie; the
cell shown is one of the 40 other tracks, never labelled. The curated set goes to a temporary folder.
"""

import os
import tempfile
from pathlib import Path

import pandas as pd
import tifffile

from napari_yeast_phenotypes._napari._settings import newest_demo_model

stage = os.environ.get("LIVE_STAGE", "after")
folder = Path(os.environ.get("YEAST_REAL_MOVIE", "/work/shared/data/real/yeastvision-sample-movie"))
here = Path(__file__).resolve().parent if "__file__" in globals() else Path("docs")
labels_csv = here.parent / "benchmarks" / "labels" / "yeastvision_by_eye.csv"
if not labels_csv.is_file():
    labels_csv = Path("benchmarks/labels/yeastvision_by_eye.csv")

model = newest_demo_model()
if model is None:
    raise SystemExit("no demo model: run `yeast-phenotypes demo --out DIR` first")
viewer.add_image(tifffile.imread(folder / "cdc_fluorescence.tif"), name="cdc fluorescence", colormap="gray")
viewer.add_labels(tifffile.imread(folder / "masks.tif"), name="masks")
_, classify = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Classify phenotypes")
classify.model_choice.value = model
classify.run(sync=True)
annotate_dock, annotate = viewer.window.add_plugin_dock_widget("napari-yeast-phenotypes", "Annotate phenotypes",
                                                               tabify=True)
annotate.set_edit.setText(str(Path(tempfile.mkdtemp(prefix="curated-")) / "set"))
annotate.setup.annotator_edit.setText("by eye")
assert annotate.start(), annotate.status.text()
assert annotate.live.start(sync=True) is None, annotate.live_box.report.text()

cells = annotate.session.cells
row_of = {(int(f), int(t)): i for i, (f, t) in enumerate(zip(cells["frame"], cells["track_id"]))}
eye = pd.read_csv(labels_csv)
if stage == "after":
    for r in eye[eye["role"] == "train"].itertuples():
        row = row_of.get((int(r.frame), int(r.track_id)))
        if row is not None:
            annotate.select(row, move=False)
            annotate.apply(r.phenotype)
    annotate.live.refresh_ood()  # what the dock does once the labels settle (2 s without a new one)
# a cell of a track never labelled, at a later frame
judge = eye[(eye["role"] == "judge") & (eye["frame"] == 7)].iloc[0]
annotate.select(row_of[(int(judge.frame), int(judge.track_id))])


def on_ready(viewer):
    annotate_dock.raise_()
    viewer.layers.selection.active = viewer.layers["phenotypes"]
