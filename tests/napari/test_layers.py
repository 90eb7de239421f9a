"""Result -> layer data, without a viewer (napari is imported, Qt is not needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_yeast_phenotypes._napari._layers import (
    PHENOTYPES_LAYER,
    RESULT_KEY,
    SENESCENCE_LAYER,
    TRACKS_LAYER,
    PhenotypeFrames,
    cell_ids,
    class_colormap,
    paint_cells,
    phenotype_colormap,
    phenotype_features,
    phenotype_level,
    result_layers,
    senescence_events,
    tracks_data,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, COLOURS, hex_to_rgba


def test_paint_cells_gives_each_cell_frame_its_own_value(result_movie):
    movie, res = result_movie
    painted = paint_cells(movie.labels, res.cells, res.class_names)
    assert painted.shape == movie.labels.shape
    assert ((painted > 0) == (movie.labels > 0)).all()
    ids = cell_ids(res.cells, res.class_names)
    assert len(np.unique(ids)) == len(ids)
    for value, row in zip(ids, res.cells.itertuples()):
        mask = movie.labels[row.frame] == row.label
        assert (painted[row.frame][mask] == value).all()


def test_lazy_frames_are_painted_on_demand(result_movie):
    """The viewer's layer holds a few painted frames, never the whole painted movie."""
    movie, res = result_movie
    whole = paint_cells(movie.labels, res.cells, res.class_names)
    lazy = PhenotypeFrames(movie.labels, res.cells, res.class_names, keep_frames=2)
    assert lazy.shape == whole.shape and lazy.dtype == whole.dtype and lazy.ndim == 3
    assert (lazy[3] == whole[3]).all() and (lazy[1:4, 5:20, ::2] == whole[1:4, 5:20, ::2]).all()
    assert (lazy[-1] == whole[-1]).all() and (lazy[..., 7] == whole[..., 7]).all()
    assert len(lazy._cache) <= 2  # only the last frames asked for are kept
    # relabelling a cell-frame repaints its frame only
    row = int(lazy.rows_of_frame(2)[0])
    new = lazy.values[row] + 1 if (lazy.values[row] % len(res.class_names)) else lazy.values[row] - 1
    lazy.frame(1)
    lazy.set_values([row], [new])
    assert 1 in lazy._cache and 2 not in lazy._cache
    mask = movie.labels[2] == res.cells["label"].iloc[row]
    assert (lazy[2][mask] == new).all() and (lazy[2][~mask] == whole[2][~mask]).all()


def test_paint_cells_with_huge_label_ids(result_movie):
    movie, res = result_movie
    big = movie.labels.astype(np.int64) * 100_000_007  # ids far above any lookup table
    cells = res.cells.assign(label=res.cells["label"] * 100_000_007)
    assert (paint_cells(big, cells, res.class_names) == paint_cells(movie.labels, res.cells, res.class_names)).all()


def test_painted_value_has_its_class_colour(result_movie):
    _, res = result_movie
    cmap = phenotype_colormap(res.class_names)
    got = cmap.map(cell_ids(res.cells, res.class_names))
    np.testing.assert_allclose(got, [hex_to_rgba(COLOURS[c]) for c in res.cells["phenotype"]], atol=1e-6)
    assert cmap.map(np.array([0]))[0][3] == 0  # background transparent


def test_many_cell_frames_need_no_numba():
    """More than 2**16 cell-frames: uint32 values, still coloured by class (a direct colormap could not)."""
    n = 70_000
    cells = pd.DataFrame({"frame": np.arange(n) // 100, "label": np.arange(n) % 100 + 1,
                          "phenotype": np.asarray(CLASS_NAMES, dtype=object)[np.arange(n) % 8]})
    ids = cell_ids(cells, CLASS_NAMES)
    assert ids.max() > 2**16
    cmap = phenotype_colormap(CLASS_NAMES)
    np.testing.assert_allclose(cmap.map(ids.astype(np.uint32))[-8:],
                               [hex_to_rgba(COLOURS[c]) for c in cells["phenotype"].iloc[-8:]], atol=1e-6)
    from napari.layers import Labels

    data = np.zeros((n // 100, 20, 20), np.uint32)
    data[:, 5:10, 5:10] = ids.reshape(-1, 100)[:, -1][:, None, None]
    layer = Labels(data, colormap=cmap)  # slices and converts the texture data without numba
    layer.refresh()


def test_phenotype_features_one_row_per_painted_value(result_movie):
    _, res = result_movie
    feats = phenotype_features(res.cells, res.class_names)
    assert list(feats["index"]) == list(cell_ids(res.cells, res.class_names))
    assert {"track_id", "phenotype", "confidence", "frame", "label"} <= set(feats.columns)
    assert (feats["phenotype"].to_numpy() == res.cells["phenotype"].to_numpy()).all()


def test_hovering_a_cell_unlike_the_training_data_says_so_beside_its_confidence(result_movie):
    from napari.layers import Labels

    movie, res = result_movie
    cells = res.cells.copy()
    score = np.where(cells["label"].to_numpy() % 2 == 1, 1.84, 0.47)  # odd cells unlike, even ones like
    cells["ood_score"] = score
    feats = phenotype_features(cells, res.class_names)
    cols = list(feats.columns)
    assert cols[cols.index("confidence") + 1] == "unlike training data"
    unlike = feats["unlike training data"].to_numpy()
    assert (np.isnan(unlike) == (score <= 1)).all()
    np.testing.assert_allclose(unlike[score > 1], score[score > 1], atol=0.05)
    # what napari's status bar shows when hovering: the score named only for cells above 1
    layer = Labels(paint_cells(movie.labels, cells, res.class_names), features=feats)
    first = np.flatnonzero(cells["frame"].to_numpy() == 0)  # a layer outside a viewer shows its frame 0
    for row in (first[score[first] > 1][0], first[score[first] <= 1][0]):
        r = cells.iloc[row]
        ys, xs = np.nonzero(movie.labels[int(r["frame"])] == int(r["label"]))
        status = layer.get_status((int(r["frame"]), ys[0], xs[0]))["coordinates"]
        assert f"phenotype: {r['phenotype']}" in status
        assert (f"unlike training data: {score[row]:.1f}" in status) == (score[row] > 1), status
    # a model without a summary of its training data: no such column
    assert "unlike training data" not in phenotype_features(res.cells, res.class_names)


def test_tracks_data_sorted_and_coloured_by_class(result_movie):
    _, res = result_movie
    data, feats = tracks_data(res.cells, res.class_names)
    assert data.shape == (len(res.cells), 4)
    order = np.lexsort((data[:, 1], data[:, 0]))
    assert (order == np.arange(len(data))).all()
    assert len(feats) == len(data)
    assert all(feats[c].dtype.kind in "biuf" for c in feats.columns)
    cmap = class_colormap(res.class_names)
    colours = cmap.map(feats["phenotype_level"].to_numpy())
    expected = [hex_to_rgba(COLOURS[CLASS_NAMES[k]]) for k in feats["phenotype_index"]]
    np.testing.assert_allclose(colours, expected, atol=1e-6)


def test_phenotype_level_maps_every_class_to_its_colour():
    cmap = class_colormap(CLASS_NAMES)
    got = cmap.map(phenotype_level(np.arange(8), 8))
    np.testing.assert_allclose(got, [hex_to_rgba(COLOURS[c]) for c in CLASS_NAMES], atol=1e-6)


def test_senescence_events_at_the_senescence_frame(result_movie):
    _, res = result_movie
    ev = senescence_events(res.cells, res.tracks)
    sen = res.tracks.dropna(subset=["senescence_frame"])
    became = sen[sen["senescence_frame"] > sen["first_frame"]]
    assert len(ev) == len(became) > 0
    for row in ev.itertuples():
        assert row.frame == int(sen.set_index("track_id").loc[row.track_id, "senescence_frame"])
        assert row.phenotype == "Senescent"
        assert row.previous_phenotype not in ("Senescent", "")


def test_no_star_for_a_cell_already_senescent_when_first_seen(result_movie):
    import copy

    _, res = result_movie
    res = copy.deepcopy(res)
    first = res.tracks["track_id"].iloc[0]
    res.tracks.loc[res.tracks["track_id"] == first, "senescence_frame"] = res.tracks["first_frame"].iloc[0]
    ev = senescence_events(res.cells, res.tracks)
    assert first not in set(ev["track_id"])


def test_result_layers_movie(result_movie):
    movie, res = result_movie
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in result_layers(res, movie.labels,
                                                                            scale=(1, 2, 2))}
    assert set(layers) == {PHENOTYPES_LAYER, TRACKS_LAYER, SENESCENCE_LAYER}
    data, kw, kind = layers[PHENOTYPES_LAYER]
    assert kind == "labels" and data.shape == movie.labels.shape and kw["scale"] == (1, 2, 2)
    assert kw["metadata"][RESULT_KEY] is res
    pts, kw, kind = layers[SENESCENCE_LAYER]
    assert kind == "points" and pts.shape == (int(res.tracks["senescence_frame"].notna().sum()), 3)
    assert "track_id" in kw["features"]


def test_result_layers_single_frame(result_movie):
    movie, res = result_movie
    cells = res.cells[res.cells["frame"] == 0]
    one = type(res)(cells=cells, tracks=res.tracks, class_names=res.class_names)
    layers = result_layers(one, movie.labels[0])
    kinds = [k for _, _, k in layers]
    assert kinds == ["labels", "points"]
    assert layers[0][0].shape == movie.labels.shape[1:]
    assert layers[1][0].shape[1] == 2


def test_empty_senescence_gives_empty_points(result_movie):
    movie, res = result_movie
    tracks = res.tracks.assign(senescence_frame=pd.array([pd.NA] * len(res.tracks), dtype="Int64"))
    none = type(res)(cells=res.cells, tracks=tracks, class_names=res.class_names)
    pts = next(d for d, kw, k in result_layers(none, movie.labels) if k == "points")
    assert pts.shape == (0, 3)


def _lab(rgb):
    """CIELAB (D65) of sRGB values in [0, 1]."""
    rgb = np.asarray(rgb, dtype=float)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    f = lambda t: np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116)
    fx, fy, fz = f(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.array([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)])


def test_every_class_colour_stands_out_on_dark_grey():
    """Painted at the overlay's opacity on a dark grey image, each class differs clearly from the
    grey (CIE76 colour difference >= 30; ~2.3 is just noticeable) and from every other class (>= 20).
    The mid grey that Senescent once had reached 17 on a 20 % grey: senescent cells looked unpainted."""
    from napari_yeast_phenotypes.phenotypes import OVERLAY_OPACITY

    colours = {n: np.asarray(hex_to_rgba(COLOURS[n])[:3]) for n in CLASS_NAMES}
    for grey in (0.05, 0.1, 0.2, 0.3):
        bg = np.full(3, grey)
        blended = {n: OVERLAY_OPACITY * c + (1 - OVERLAY_OPACITY) * bg for n, c in colours.items()}
        for name, rgb in blended.items():
            assert np.linalg.norm(_lab(rgb) - _lab(bg)) >= 30, (name, grey)
        names = list(blended)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert np.linalg.norm(_lab(blended[a]) - _lab(blended[b])) >= 20, (a, b, grey)


def test_senescence_text_names_only_the_shown_tracks():
    from napari_yeast_phenotypes._napari._layers import senescence_text

    text = senescence_text(np.array([4, 17, 230]), {17})
    assert text.tolist() == ["", "senescent #17", ""]
    assert senescence_text(np.array([4, 17]), ()).tolist() == ["", ""]
    assert senescence_text(np.array([], dtype=np.int64), {3}).tolist() == []


def test_senescence_markers_start_without_text_and_tracks_hidden(result_movie):
    from napari_yeast_phenotypes._napari._layers import TEXT_COLUMN

    movie, res = result_movie
    layers = {kw["name"]: (data, kw) for data, kw, _ in result_layers(res, movie.labels)}
    _, sen = layers[SENESCENCE_LAYER]
    assert len(sen["features"]) > 0 and (sen["features"][TEXT_COLUMN] == "").all()
    assert sen["text"]["string"] == "{" + TEXT_COLUMN + "}"
    _, tracks = layers[TRACKS_LAYER]
    # still cells make a short tail a dot over the class colour: hidden, whole path when shown
    assert tracks["visible"] is False and tracks["tail_length"] == movie.labels.shape[0]


@pytest.mark.parametrize(("given", "ndim", "expected"), [
    (("-3", "-2", "-1"), 3, ("t", "y", "x")),
    (("0", "1", "2"), 3, ("t", "y", "x")),
    (("-2", "-1"), 2, ("y", "x")),
    (("time", "row", "col"), 3, ("time", "row", "col")),
    (None, 3, ("t", "y", "x")),
])
def test_unnamed_axes_are_named(given, ndim, expected):
    from napari_yeast_phenotypes._napari._layers import movie_axis_labels

    assert movie_axis_labels(given, ndim) == expected
