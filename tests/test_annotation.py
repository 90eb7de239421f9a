"""The annotation session without a viewer: labels, fills, marks, undo/redo, persistence, the queue."""

import types

import numpy as np
import pytest

from napari_yeast_phenotypes.core.data.crops import CropSettings, movie_crops, movie_stats
from napari_yeast_phenotypes.core.data.curated import CuratedSet, movie_identity
from napari_yeast_phenotypes.core.data.tracking import build_cell_table
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.results.schema import prob_columns
from napari_yeast_phenotypes.core.track.annotation import AnnotationSession
from napari_yeast_phenotypes.core.track.timeline import add_timeline, track_summary
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def classified(movie, seed=0):
    """A result as from a hesitant classifier: the truth with noise, through the real timeline."""
    rng = np.random.default_rng(seed)
    table = build_cell_table(movie.labels)
    truth = table[["frame", "label"]].merge(movie.truth, on=["frame", "label"], how="left")
    idx = np.array([CLASS_NAMES.index(c) for c in truth["phenotype"]])
    probs = rng.dirichlet(np.ones(8), size=len(table)) * 0.5
    probs[np.arange(len(table)), idx] += 0.5
    table[prob_columns()] = probs
    cells = add_timeline(table)
    return types.SimpleNamespace(cells=cells, tracks=track_summary(cells), class_names=CLASS_NAMES)


@pytest.fixture
def session(tmp_path, small_movie):
    res = classified(small_movie)
    run = {"crop_settings": CropSettings().to_dict(),
           "movie_stats": movie_stats(small_movie.image, small_movie.labels).to_dict(),
           "model": {"fingerprint": "abc123"}}
    cs = CuratedSet(tmp_path / "set")
    return AnnotationSession(res, small_movie.image, small_movie.labels, run, cs, annotator="ann", split="val",
                             experiment="exp1", movie_path="/data/exp1/image.tif")


def _longest_track(s):
    return max(s._track_rows.values(), key=len)


def test_a_label_writes_the_models_crop_with_provenance(session, small_movie):
    rows = _longest_track(session)
    r = int(rows[2])
    out = session.label(r, "Triple")
    assert out.labelled == 1 and "labelled Triple" in out.message
    m = session.curated.manifest
    assert len(m) == 1
    row = m.iloc[0]
    cell = session.cells.iloc[r]
    assert (row["frame"], row["label"], row["track_id"]) == (cell["frame"], cell["label"], cell["track_id"])
    assert (row["phenotype"], row["split"], row["experiment"], row["annotator"]) == ("Triple", "val", "exp1", "ann")
    assert row["movie_id"] == movie_identity(small_movie.image, small_movie.labels)
    assert row["movie_path"] == "/data/exp1/image.tif" and row["model"] == "abc123"
    assert row["model_phenotype"] == cell["phenotype_raw"]
    import tifffile

    expected = movie_crops(small_movie.image, small_movie.labels, session.cells.iloc[[r]])[0, 0]
    np.testing.assert_array_equal(tifffile.imread(session.curated.root / row["path"]), expected)
    assert session.cells.iloc[r]["phenotype"] == "Triple" and session.cells.iloc[r]["annotated"]


def test_kept_crops_are_the_models_crops_in_any_order_and_mix(session, small_movie, monkeypatch):
    import napari_yeast_phenotypes.core.track.annotation as annotation

    rows = np.arange(len(session.cells))
    expected = movie_crops(small_movie.image, small_movie.labels, session.cells)[:, 0]
    some = rows[::3][::-1]  # out of frame order
    np.testing.assert_array_equal(session.crops(some), expected[some])
    # a mix of kept and new rows, one row twice; then all of them kept
    mix = np.concatenate([rows[:7], some[:4], rows[:2]])
    np.testing.assert_array_equal(session.crops(mix), expected[mix])
    made = []
    monkeypatch.setattr(annotation, "extract_crops", lambda *a, **k: made.append(1))
    np.testing.assert_array_equal(session.crops(mix), expected[mix])
    assert not made  # all kept: none made again
    # at most CROP_CACHE are kept, each still its row's crop
    monkeypatch.undo()
    monkeypatch.setattr(annotation, "CROP_CACHE", 5)
    np.testing.assert_array_equal(session.crops(rows), expected)
    kept = session._crop_cache
    assert len(kept) == 5 and all(np.array_equal(c, expected[r]) for r, c in kept.items())


def test_fill_goes_to_the_next_label_and_senescent_to_the_end(session):
    rows = _longest_track(session)
    assert len(rows) >= 5
    session.label(int(rows[3]), "Circular")
    out = session.label(int(rows[0]), "Nuclear", fill=True)
    assert out.labelled == 3
    labels = [session.user.get(int(r)) for r in rows]
    assert labels[:4] == ["Nuclear", "Nuclear", "Nuclear", "Circular"]
    out = session.label(int(rows[1]), "Senescent", fill=True)
    assert [session.user[int(r)] for r in rows[1:]] == ["Senescent"] * (len(rows) - 1)
    assert (session.cells.iloc[rows[1:]]["phenotype"] == "Senescent").all()
    with pytest.raises(InputError, match="does not come back"):
        session.label(int(rows[-1]), "Nuclear")
    assert session.user[int(rows[-1])] == "Senescent"  # refused: nothing changed


def test_marks_are_kept_shown_and_not_evidence(session):
    rows = _longest_track(session)
    before = session.cells.iloc[rows]["phenotype"].tolist()
    session.label(int(rows[1]), "unsure")
    session.label(int(rows[2]), "bad segmentation")
    assert session.user[int(rows[1])] == "unsure" and session.user[int(rows[2])] == "bad_segmentation"
    assert session.cells.iloc[rows]["phenotype"].tolist() == before  # no evidence for the track model
    assert session.curated.mark_counts() == {"unsure": 1, "bad_segmentation": 1}


def test_clear_undo_redo_and_persistence(session, small_movie):
    rows = _longest_track(session)
    session.label(int(rows[0]), "Aggregate", fill=True)
    n = len(session.curated)
    assert n == len(rows)
    session.clear(int(rows[0]))
    assert len(session.curated) == n - 1 and int(rows[0]) not in session.user
    session.undo()  # the clear
    assert len(session.curated) == n and session.user[int(rows[0])] == "Aggregate"
    session.undo()  # the whole fill at once
    assert len(session.curated) == 0 and not session.user and not session.cells["annotated"].any()
    session.redo()
    assert len(session.curated) == n and session.cells.iloc[rows]["annotated"].all()
    # a new session on the same movie and set (e.g. napari opened again) finds the labels
    again = AnnotationSession(classified(small_movie), small_movie.image, small_movie.labels, None,
                              CuratedSet(session.curated.root))
    assert again.user == session.user
    assert (again.cells.iloc[rows]["phenotype"] == "Aggregate").all() and again.cells["annotated"].sum() == n


def test_the_queue_skips_labelled_cells_and_goes_back(session):
    first, why = session.next_to_check()
    assert why
    second, _ = session.next_to_check()
    assert second != first
    assert session.next_to_check(back=True)[0] == first
    session.label(first, "Nuclear")
    assert first not in set(session.queue()["row"])


def test_probabilities_raw_and_smoothed(session):
    r = int(_longest_track(session)[1])
    raw, smooth = session.probabilities(r)
    np.testing.assert_allclose(raw, session.cells.iloc[r][prob_columns()].to_numpy(dtype=float))
    assert smooth.sum() == pytest.approx(1.0)
    assert smooth.argmax() == CLASS_NAMES.index(session.cells.iloc[r]["phenotype"])
    session.label(r, "Fragmented")
    assert session.probabilities(r)[1][CLASS_NAMES.index("Fragmented")] == pytest.approx(1.0)


def test_a_set_with_other_crop_settings_is_refused(tmp_path, small_movie):
    cs = CuratedSet(tmp_path / "other", CropSettings(margin=0.3))
    with pytest.raises(InputError, match="other settings"):
        AnnotationSession(classified(small_movie), small_movie.image, small_movie.labels,
                          {"crop_settings": CropSettings().to_dict()}, cs)


def test_fit_track_model_from_my_labels_never_lowers_agreement(tmp_path, small_movie):
    """The Annotate dock's "Fit track model from my labels": on tracks whose phenotype changes at every frame (called
    right by the network), smoothing would lower agreement, and the fit says what it uses instead."""
    table = build_cell_table(small_movie.labels)
    cls = (table["track_id"].to_numpy() + table["frame"].to_numpy()) % 7  # a live class, another at every frame
    probs = np.full((len(table), 8), 0.03)
    probs[np.arange(len(table)), cls] = 0.5
    probs[np.arange(len(table)), (cls + 1) % 7] = 0.29
    table[prob_columns()] = probs / probs.sum(axis=1, keepdims=True)
    cells = add_timeline(table)
    res = types.SimpleNamespace(cells=cells, tracks=track_summary(cells), class_names=CLASS_NAMES)
    run = {"crop_settings": CropSettings().to_dict(),
           "movie_stats": movie_stats(small_movie.image, small_movie.labels).to_dict(), "model": {"fingerprint": "x"}}
    s = AnnotationSession(res, small_movie.image, small_movie.labels, run, CuratedSet(tmp_path / "set"), split="val")
    for row in range(len(s.cells)):  # the person labels what the network called
        s.label(row, CLASS_NAMES[int(np.argmax(s.cells.loc[row, prob_columns()].to_numpy()))])
    fit = s.fit_track_model()
    r = fit.report
    assert r["labelled"]["raw_accuracy"] == 1.0 and r["labelled"]["smoothed_accuracy"] == 1.0
    assert r["validation"]["smoothed_accuracy"] >= r["validation"]["raw_accuracy"]
    assert r["decision"]["use"] in ("smoothing", "raw calls") and r["decision"]["why"]
    again = add_timeline(s.cells[["track_id", "frame", "label", *prob_columns()]], CLASS_NAMES, fit.settings)
    assert (again["phenotype"] == again["phenotype_raw"]).all()  # nothing the labels say is smoothed away
