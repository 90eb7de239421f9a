"""The live head: cached features, a head over the labelled classes only, saved as an ordinary checkpoint."""

import numpy as np
import pandas as pd
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.tracking import build_cell_table
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.jobs import classify_movie
from napari_yeast_phenotypes.core.network import features as features_mod
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
from napari_yeast_phenotypes.core.network.features import MovieFeatures, backbone_fingerprint, movie_features
from napari_yeast_phenotypes.core.network.live_head import LiveModel, Standardiser, fit_head, labelled_classes
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.results.schema import prob_columns
from napari_yeast_phenotypes.core.track.timeline import (
    TimelineSettings,
    add_timeline,
    smooth_track_posterior,
    smooth_tracks,
    track_summary,
)
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES, SENESCENT

# ---------------------------------------------------------------------------- smoothing all tracks at once


@pytest.mark.parametrize("sink", [SENESCENT, None])
@pytest.mark.parametrize("settings", [TimelineSettings(), TimelineSettings(temperature=2.5),
                                      TimelineSettings(smooth=False)])
def test_smooth_tracks_equals_track_by_track(sink, settings, rng):
    lengths = rng.integers(1, 25, 60)
    tracks = np.repeat(np.arange(60) * 7 + 3, lengths)  # ids need not be consecutive
    probs = rng.dirichlet(np.ones(8) * 0.4, len(tracks))
    fixed = np.full(len(tracks), -1)
    pick = rng.choice(len(tracks), 40, replace=False)
    fixed[pick] = rng.integers(0, 7, 40)  # live classes only: never a live label after Senescent
    for fx in (None, fixed):
        path, post = smooth_tracks(probs, tracks, sink, settings, fx)
        for t in np.unique(tracks):
            r = np.flatnonzero(tracks == t)
            want_path, want_post = smooth_track_posterior(probs[r], sink, settings, None if fx is None else fx[r])
            assert (path[r] == want_path).all()
            np.testing.assert_allclose(post[r], want_post, rtol=1e-9, atol=1e-12)


def test_timeline_without_senescent_lets_cells_change_back():
    names = ("Aggregate", "Cytoplasm")
    seq = [0] * 6 + [1] * 6 + [0] * 6
    p = np.full((len(seq), 2), 0.05)
    p[np.arange(len(seq)), seq] = 0.95
    cells = pd.DataFrame({"track_id": 1, "label": 1, "frame": np.arange(len(seq))})
    cells[prob_columns(names)] = p
    out = add_timeline(cells, names)
    assert list(out["phenotype"]) == [names[c] for c in seq]  # no absorbing class: back to Aggregate
    tracks = track_summary(out, names)
    assert pd.isna(tracks["senescence_frame"].iloc[0])
    assert tracks["dominant_phenotype"].iloc[0] == "Aggregate"


# ---------------------------------------------------------------------------- heads on synthetic features


def clusters(n_per_class, rng, classes=(1, 2, 5), dim=48, spread=1.0):
    centres = np.random.default_rng(7).normal(0, 1.5, (8, dim))
    y = np.repeat(np.asarray(classes), n_per_class)
    x = np.abs(centres[y] + rng.normal(0, spread, (len(y), dim)))  # non-negative, like pooled ReLU features
    return x.astype(np.float32), np.asarray(CLASS_NAMES)[y]


@pytest.mark.parametrize("kind", ["logistic", "prototype", "lda"])
def test_head_learns_from_few_labels_and_keeps_only_labelled_classes(kind, rng):
    x, y = clusters(6, rng)
    test_x, test_y = clusters(200, rng)
    head = fit_head(x, y, CLASS_NAMES, kind=kind, standardiser=Standardiser.of(np.r_[x, test_x]))
    assert head.class_names == ("Aggregate", "Cytoplasm", "Fragmented")  # the model's order, labelled only
    assert head.weight.shape == (3, x.shape[1]) and head.counts == {"Aggregate": 6, "Cytoplasm": 6, "Fragmented": 6}
    pred = np.asarray(head.class_names)[head.predict_proba(test_x).argmax(axis=1)]
    assert (pred == test_y).mean() > 0.9
    np.testing.assert_allclose(head.predict_proba(test_x).sum(axis=1), 1.0, rtol=1e-9)


def test_standardisation_is_folded_into_the_layer(rng):
    x, y = clusters(30, rng)
    std = Standardiser.of(x * 3.0 + 5.0)
    head = fit_head(x, y, CLASS_NAMES, kind="prototype", standardiser=std, temperature=1.0)
    z = std(x)
    means = np.stack([z[y == c].mean(axis=0) for c in head.class_names])
    want = -0.5 * ((z[:, None, :] - means[None]) ** 2).sum(axis=2)  # minus half the squared distance
    got = head.logits(x).astype(np.float64)
    # equal up to a term that is the same for every class (it cancels in the softmax)
    diff = (got - want) - (got - want).mean(axis=1, keepdims=True)
    assert np.abs(diff).max() < 1e-4 * np.abs(want).max()


def test_head_needs_two_labelled_classes(rng):
    x, _ = clusters(5, rng)
    with pytest.raises(InputError, match="at least 2 classes"):
        fit_head(x, ["Aggregate"] * len(x), CLASS_NAMES)
    with pytest.raises(InputError, match="unknown head"):
        fit_head(x, ["Aggregate", "Cytoplasm"] * 7 + ["Aggregate"], CLASS_NAMES, kind="forest")
    assert labelled_classes(["Cytoplasm", "Nuclear", "Mine"], CLASS_NAMES) == ("Nuclear", "Cytoplasm", "Mine")


def test_warm_start_gives_the_cold_fit(rng):
    x, y = clusters(20, rng)
    std = Standardiser.of(x)
    cold = fit_head(x, y, CLASS_NAMES, standardiser=std)
    first = fit_head(x[::2], y[::2], CLASS_NAMES, standardiser=std)
    warm = fit_head(x, y, CLASS_NAMES, standardiser=std, init=first)
    scale = np.abs(cold.logits(x)).max()
    assert np.abs(warm.logits(x) - cold.logits(x)).max() < 1e-3 * scale


def test_balanced_head_is_not_pulled_to_the_big_class(rng):
    x_a, y_a = clusters(60, rng, classes=(1,), spread=2.5)
    x_c, y_c = clusters(6, rng, classes=(2,), spread=2.5)
    x, y = np.r_[x_a, x_c], np.r_[y_a, y_c]
    tx, ty = clusters(300, rng, classes=(1, 2), spread=2.5)
    std = Standardiser.of(np.r_[x, tx])
    rec = {}
    for balanced in (True, False):
        head = fit_head(x, y, CLASS_NAMES, standardiser=std, balanced=balanced, penalty=10.0)
        pred = np.asarray(head.class_names)[head.predict_proba(tx).argmax(axis=1)]
        rec[balanced] = (pred[ty == "Cytoplasm"] == "Cytoplasm").mean()
    assert rec[True] >= rec[False]


# ---------------------------------------------------------------------------- through a network and a movie

# the plain model (no fast copy to build for a few dozen crops); the features come from the fast fp32 copy
FP32 = ClassifyConfig(relink="no", device="cpu", precision="fp32", fast_path=False)


@pytest.fixture(scope="module")
def base_clf():
    torch.manual_seed(0)
    return Classifier(YeastResNet(8).eval())


@pytest.fixture(scope="module")
def movie_and_features(small_movie, base_clf, tmp_path_factory):
    folder = tmp_path_factory.mktemp("features")
    mf = movie_features(small_movie.image, small_movie.labels, base_clf, cache_folder=folder, fast_path=False)
    return small_movie, mf, folder


def test_features_are_cached_exactly_and_without_pickle(movie_and_features, base_clf, monkeypatch):
    movie, mf, folder = movie_and_features
    table = build_cell_table(movie.labels, relink=False)
    assert len(mf) == len(table) and mf.dim == 2048
    files = list(folder.glob("*.npz"))
    assert [f.stem for f in files] == [mf.key]
    with np.load(files[0], allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) == {"meta", "frame", "label", "features", "descriptors"}

    def no_network(*_a, **_k):
        raise AssertionError("the network ran although the features were cached")

    monkeypatch.setattr(features_mod, "crop_features", no_network)
    again = movie_features(movie.image, movie.labels, base_clf, cache_folder=folder, fast_path=False)
    np.testing.assert_array_equal(again.features, mf.features)
    # rows are found by (frame, label) exactly, in any order; an unknown cell is -1
    shuffled = table.sample(frac=1.0, random_state=0)
    rows = again.rows_of(shuffled)
    assert (again.frame[rows] == shuffled["frame"].to_numpy()).all()
    assert (again.label[rows] == shuffled["label"].to_numpy()).all()
    assert again.index([0], [9999])[0] == -1
    with pytest.raises(InputError, match="has no features"):
        again.rows_of(pd.DataFrame({"frame": [0], "label": [9999]}))


def test_features_equal_the_classification_pass(movie_and_features, base_clf):
    """The cached features, through the model's own fc, give the probabilities classification gives."""
    movie, mf, _ = movie_and_features
    cells = classify_movie(movie.image, movie.labels, base_clf, FP32).result.cells
    fc = base_clf.model.fc
    logits = mf.features[mf.rows_of(cells)] @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, cells[prob_columns()].to_numpy(), atol=1e-4)


def test_cache_key_follows_the_backbone_not_fc(base_clf, tmp_path):
    model = YeastResNet(8).eval()
    model.load_state_dict(base_clf.model.state_dict())
    key = backbone_fingerprint(model)
    assert key == backbone_fingerprint(base_clf.model)
    model.fc = torch.nn.Linear(2048, 2)  # a live head: same backbone, same features
    assert backbone_fingerprint(model) == key
    with torch.no_grad():
        model.layer4[0].conv1.weight[0, 0, 0, 0] += 1.0
    assert backbone_fingerprint(model) != key


def test_a_damaged_cache_file_is_computed_again(small_movie, base_clf, tmp_path):
    mf = movie_features(small_movie.image[:2], small_movie.labels[:2], base_clf, cache_folder=tmp_path,
                        fast_path=False)
    path = tmp_path / f"{mf.key}.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="not a readable features file"):
        MovieFeatures.load(path)
    again = movie_features(small_movie.image[:2], small_movie.labels[:2], base_clf, cache_folder=tmp_path,
                           fast_path=False)
    np.testing.assert_array_equal(again.features, mf.features)
    assert MovieFeatures.load(path).key == mf.key


def _labels_for(cells, truth, tracks):
    ann = truth.merge(cells[["frame", "label", "track_id"]], on=["frame", "label"])
    return ann[ann["track_id"].isin(tracks)][["frame", "label", "phenotype"]]


@pytest.mark.filterwarnings("ignore:.*unlike the crops this model learnt from")
def test_live_model_saves_an_ordinary_checkpoint_that_classifies_the_same(movie_and_features, base_clf, tmp_path):
    movie, mf, _ = movie_and_features
    cfg = FP32
    cells = classify_movie(movie.image, movie.labels, base_clf, cfg).result.cells
    live = LiveModel(mf, cells, base_clf)
    truth = movie.truth
    tracks = sorted(cells["track_id"].unique())[:5]
    ann = _labels_for(cells, truth, tracks)
    ann = ann[ann["phenotype"].isin(ann["phenotype"].value_counts().index[:2])]  # two labelled classes
    up = live.update(ann)
    assert len(up.class_names) == 2 and set(up.class_names) == set(ann["phenotype"])
    assert set(up.not_labelled) == set(CLASS_NAMES) - set(up.class_names)
    assert up.probabilities.shape == (len(cells), 2)
    assert list(up.cells["frame"]) == list(cells["frame"]) and list(up.cells["label"]) == list(cells["label"])
    labelled = up.cells.merge(ann, on=["frame", "label"])
    assert labelled["annotated"].all() and (labelled["phenotype_x"] == labelled["phenotype_y"]).all()

    clf = live.classifier(ann, ood=True)
    assert clf.ood is not None and clf.ood.class_means.shape[0] == 2  # its own summary, for its own classes
    save_checkpoint(tmp_path / "live.pt", clf)
    back = load_classifier(tmp_path / "live.pt")
    assert back.class_names == up.class_names and back.metadata["live_head"]["kind"] == "logistic"
    job = classify_movie(movie.image, movie.labels, back, cfg, out=tmp_path / "res")
    got = job.result.cells.set_index(["frame", "label"]).loc[list(zip(cells["frame"], cells["label"]))]
    want = up.probabilities
    assert np.abs(got[prob_columns(up.class_names)].to_numpy() - want).max() < 1e-4
    # the OOD score of the saved model, from its crops, is the live model's from the cache
    cached = live.ood_scores(clf.ood)
    np.testing.assert_allclose(got["ood_score"].to_numpy(), cached, rtol=1e-3)
    written = pd.read_csv(tmp_path / "res" / "cells.csv")
    assert [c for c in written if c.startswith("p_")] == prob_columns(up.class_names)
    # the backbone is untouched, so the cache of the base model serves the saved head too
    assert backbone_fingerprint(back.model) == backbone_fingerprint(base_clf.model)
