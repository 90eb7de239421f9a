"""The Annotate dock's live model: features once, a head over the labelled classes after every label, the whole
movie recoloured; saved as an ordinary checkpoint that becomes the session's model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_yeast_phenotypes._napari import PLUGIN
from napari_yeast_phenotypes._napari._state import state_of


@pytest.mark.slow
def test_live_model_follows_every_label_and_saves(make_napari_viewer, small_movie, model_path, tmp_path, errors,
                                                  monkeypatch):
    monkeypatch.setenv("NAPARI_YEAST_PHENOTYPES_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.add_image(small_movie.image, name="image")
    viewer.add_labels(small_movie.labels, name="cells")
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify phenotypes")
    classify.model_choice.value = model_path
    classify.run(sync=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate phenotypes")
    widget.set_edit.setText(str(tmp_path / "set"))
    assert widget.start(), widget.status.text()
    s = widget.session
    assert widget.live.start(sync=True) is None and widget.live.live is not None, errors
    assert "waits for labels of 2 classes" in widget.live_box.report.text()
    # label two tracks Aggregate and two Cytoplasm (whole tracks, Shift = to the end)
    tracks = s.cells.groupby("track_id")["frame"].idxmin().to_numpy()[:4]
    for row, name in zip(tracks, ["Aggregate", "Aggregate", "Cytoplasm", "Cytoplasm"]):
        widget.select(int(row), move=False)
        widget.apply(name, fill=True)
    assert not errors, errors
    up = widget.live.live.last
    assert up is not None and set(up.class_names) == {"Aggregate", "Cytoplasm"}
    # every cell-frame is called one of the labelled classes now; the others are "not labelled yet"
    assert set(s.cells["phenotype"]) <= {"Aggregate", "Cytoplasm"}
    others = [c for c in s.class_names if c not in ("Aggregate", "Cytoplasm")]
    assert np.allclose(s.cells[[f"p_{c}" for c in others]].to_numpy(), 0.0)
    assert "Not labelled yet (never called)" in widget.live_box.report.text()
    assert list(widget.layer.features["phenotype"]) == list(s.cells["phenotype"])
    # the labels are fixed evidence: a labelled cell-frame shows its label
    for row, name in zip(tracks, ["Aggregate", "Aggregate", "Cytoplasm", "Cytoplasm"]):
        assert s.cells["phenotype"].iloc[int(row)] == name
    state_of(viewer).open.run["ood"] = {"available": True, "warning": "stale: from the classification",
                                        "share_outside": 1.0}
    widget.live.refresh_ood()
    assert np.isfinite(s.cells["ood_score"]).all()
    # the movie's report now follows the live model's own summary, in the state, the status and the plot dock
    report = state_of(viewer).open.run["ood"]
    assert report["summary_of"] == "the live model's labelled cells"
    assert report["share_outside"] == pytest.approx(float((s.cells["ood_score"] > 1).mean()))
    assert classify.plots.warning == report["warning"] != "stale: from the classification"
    assert f"{report['share_outside']:.0%} of the cells are unlike" in classify.status.text()
    saved = widget.live.save(tmp_path / "live.pt")
    assert saved is not None and state_of(viewer).model == saved
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

    clf = load_classifier(saved)
    assert clf.class_names == ("Aggregate", "Cytoplasm") and clf.ood is not None
    assert clf.metadata["not_labelled"] == others and "report" not in clf.metadata
    # the Classify dock now classifies with it: two classes
    classify.run(sync=True)
    assert classify.result.class_names == ("Aggregate", "Cytoplasm")
