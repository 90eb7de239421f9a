"""The model says when a movie is not like what it learnt: the OOD summary, score, warning and queue."""

import numpy as np
import pandas as pd
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.crops import movie_crops
from napari_yeast_phenotypes.core.data.cropset import CropSet
from napari_yeast_phenotypes.core.data.descriptors import (
    DESCRIPTORS,
    SUMMARY_DESCRIPTORS,
    crop_descriptors,
    crop_intensity_stats,
    crop_texture_stats,
)
from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.data.tracking import build_cell_table
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.jobs import classify_movie
from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.network.ood import (
    OOD_VERSION,
    WARN_SHARE,
    OODSummary,
    fit_summary,
    fit_summary_grouped,
    movie_report,
    summarise_labelled,
    summarise_training,
)
from napari_yeast_phenotypes.core.results.export import cells_for_export
from napari_yeast_phenotypes.core.results.schema import cell_columns, prob_columns
from napari_yeast_phenotypes.core.track.review import KINDS, reason, review_queue
from napari_yeast_phenotypes.phenotypes import CLASS_NAMES


def blobs(n, rng, shift=0.0, invert=False):
    """Crops of a bright round cell (or, inverted, a dark cell with a bright rim: phase-contrast-like)."""
    yy, xx = np.mgrid[:24, :24] - 11.5
    r = np.hypot(yy, xx)
    base = np.where(r < 8, 0.8, 0.05)
    if invert:
        base = np.where(r < 7, 0.1, np.where(r < 9, 0.9, 0.4))
    crops = base[None] * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.normal(0, 0.03, (n, 24, 24)) + shift
    return crops[:, None].astype(np.float32)


def clusters(n, rng, dim=32, shift=0.0, n_classes=4):
    targets = rng.integers(0, n_classes, n)
    centres = np.random.default_rng(99).normal(0, 3, (n_classes, dim))
    return centres[targets] + rng.normal(0, 1, (n, dim)) + shift, targets


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(1)
    f, t = clusters(600, rng)
    hf, _ = clusters(300, rng)
    return fit_summary(f, t, blobs(600, rng), 4, hf, blobs(300, rng), n_components=16)


def test_scores_low_on_like_crops_high_on_shifted_ones(summary):
    rng = np.random.default_rng(2)
    like_f, _ = clusters(400, rng)
    like = summary.score(like_f, blobs(400, rng))
    # the thresholds are the 99th percentile of each of 3 distances on 300 held-out crops: a few % above
    assert (like > 1).mean() < 0.1
    assert 0.0 <= summary.heldout_outside <= 0.03 + 1e-9
    # features far from every class (another kind of image through the network)
    far_f, _ = clusters(400, rng, shift=4.0)
    assert (summary.score(far_f, blobs(400, rng)) > 1).mean() > 0.9
    # same features, crops of another contrast (phase contrast given as fluorescence)
    assert (summary.score(like_f, blobs(400, rng, invert=True)) > 1).mean() > 0.9
    # brighter by a quarter of the range (another normalisation)
    assert (summary.score(like_f, blobs(400, rng, shift=0.25)) > 1).mean() > 0.9


def test_intensity_stats_see_centre_and_rim():
    rng = np.random.default_rng(0)
    s_bright, s_phase = crop_intensity_stats(blobs(5, rng)), crop_intensity_stats(blobs(5, rng, invert=True))
    assert (s_bright[:, -1] > 0.3).all() and (s_phase[:, -1] < 0).all()


def test_summary_round_trips_through_a_checkpoint(summary, tmp_path):
    torch.manual_seed(0)
    clf = Classifier(YeastResNet(4).eval(), CLASS_NAMES[:4])
    clf.ood = summary
    save_checkpoint(tmp_path / "m.pt", clf)
    back = load_classifier(tmp_path / "m.pt")
    rng = np.random.default_rng(3)
    f, _ = clusters(50, rng)
    c = blobs(50, rng)
    np.testing.assert_allclose(back.ood.score(f, c), summary.score(f, c), rtol=1e-4)
    # a checkpoint whose summary was changed is refused in words
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    data["ood"]["thresholds"] = torch.tensor([1.0, 2.0])
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="summary of the training data"):
        load_classifier(tmp_path / "bad.pt")


def test_movie_report_warns_only_when_many_cells_are_outside(summary):
    rng = np.random.default_rng(4)
    calm = movie_report(rng.uniform(0, 0.9, 200), summary=summary)
    assert calm["warning"] is None and calm["share_outside"] == 0
    loud = movie_report(np.r_[rng.uniform(0, 0.9, 100), rng.uniform(2, 9, 100)], np.repeat([1, 2], 100),
                        summary=summary)
    assert loud["share_outside"] == 0.5 > WARN_SHARE
    assert "unlike the crops this model learnt from" in loud["warning"]
    assert loud["tracks_mostly_outside"] == 1
    assert movie_report(np.full(5, np.nan))["available"] is False


# ---------------------------------------------------------------------------- through the pipeline

@pytest.fixture(scope="module")
def model_with_summary():
    """An untrained network whose summary comes from one simulated movie's crops, thresholds from another's."""
    torch.manual_seed(0)
    model = YeastResNet(8).eval()
    sets = []
    for seed in (11, 12):
        movie = simulate_movie(n_frames=6, size=128, n_cells=10, seed=seed)
        table = build_cell_table(movie.labels, relink=False)
        crops = movie_crops(movie.image, movie.labels, table, Classifier(model).crop_settings)
        # each movie is one group (an experiment, as in a curated set): thresholds from the other movie
        sets.append(CropSet(crops, np.zeros(len(crops), np.int64), CLASS_NAMES, groups=np.full(len(crops), seed)))
    clf = Classifier(model)
    clf.ood = summarise_training(model, sets[0], sets[1])
    return clf


@pytest.mark.slow
def test_like_movie_no_warning_unlike_movie_warned(model_with_summary, tmp_path):
    movie = simulate_movie(n_frames=6, size=128, n_cells=10, seed=13)
    cfg = ClassifyConfig(relink="no", device="cpu", precision="fp32")
    like = classify_movie(movie.image, movie.labels, model_with_summary, cfg, out=tmp_path / "like")
    assert like.run["ood"]["available"] and like.run["ood"]["warning"] is None
    assert like.run["ood"]["share_outside"] < WARN_SHARE
    assert not any("unlike" in w for w in like.warnings)
    csv = pd.read_csv(tmp_path / "like" / "cells.csv")
    assert list(csv.columns) == cell_columns() and csv["ood_score"].notna().all()
    # the same cells in phase-contrast-like contrast: dark inside, bright around
    phase = (movie.image.max() - movie.image.astype(np.float32)).astype(np.uint16)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, in words, by whoever runs the job: no Python warning
        unlike = classify_movie(phase, movie.labels, model_with_summary, cfg, names={"image": "phase.tif"})
    assert unlike.run["ood"]["share_outside"] > WARN_SHARE
    assert unlike.warnings and "fluorescence channel" in unlike.warnings[-1]
    assert unlike.warnings[-1].startswith("phase.tif: ")  # naming the movie
    # the queue says why, but being unlike the training data is one sign among others: the first picks
    # spread over the tracks (each track once before any twice)
    cells = unlike.result.cells
    q = review_queue(cells)
    kinds = q["kind"].to_numpy()
    assert (kinds == KINDS.index("unlike the training data")).any()
    hit = int(np.flatnonzero(kinds == KINDS.index("unlike the training data"))[0])
    assert "unlike the training data" in reason(cells, q["row"].iloc[hit], kinds[hit])
    n_tracks = cells["track_id"].nunique()
    first = cells["track_id"].to_numpy()[q["row"].to_numpy()[:n_tracks]]
    assert len(set(first)) == n_tracks


@pytest.mark.slow
def test_scores_do_not_change_the_probabilities(model_with_summary, small_movie):
    """The features come from the same forward pass: the probabilities are the very same numbers."""
    bare = Classifier(model_with_summary.model)
    for fast in (True, False):
        cfg = ClassifyConfig(relink="no", device="cpu", precision="fp32", fast_path=fast)
        with_ood = classify_movie(small_movie.image, small_movie.labels, model_with_summary, cfg).result.cells
        without = classify_movie(small_movie.image, small_movie.labels, bare, cfg).result.cells
        cols = prob_columns() + ["phenotype", "confidence"]
        pd.testing.assert_frame_equal(with_ood[cols], without[cols], check_exact=True)
        assert "ood_score" not in without
        assert cells_for_export(without)["ood_score"].isna().all()  # an empty column in cells.csv


def test_model_without_summary_says_so(small_movie, model_with_summary):
    job = classify_movie(small_movie.image, small_movie.labels, Classifier(model_with_summary.model),
                         ClassifyConfig(relink="no", device="cpu"))
    assert job.run["ood"]["available"] is False and "no summary" in job.run["ood"]["why"]


def test_summary_of_a_tiny_set_is_none():
    crops = np.zeros((3, 1, 40, 40), np.float32)
    assert summarise_training(YeastResNet(8).eval(), CropSet(crops, np.zeros(3, np.int64), CLASS_NAMES)) is None


def test_summary_refuses_garbage():
    with pytest.raises(InputError, match="not readable"):
        OODSummary.from_state({"version": 1, "mean": torch.zeros(3)})


def test_a_warning_is_drawn_on_the_summary_figure_itself():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from napari_yeast_phenotypes.core.results.plots import summary_figure
    from napari_yeast_phenotypes.core.track.timeline import track_summary

    movie = simulate_movie(n_frames=4, size=96, n_cells=4, seed=1)
    cells = movie.truth.assign(track_id=movie.truth["label"], phenotype_raw=movie.truth["phenotype"])
    tracks = track_summary(cells, CLASS_NAMES)
    plain = summary_figure(cells, tracks, CLASS_NAMES)
    warned = summary_figure(cells, tracks, CLASS_NAMES, warning="90% of the cells of movie.tif are unlike $x$")
    from matplotlib.text import Text

    said = lambda fig: [t.get_text() for t in fig.findobj(Text) if t.get_text().startswith("CANNOT BE TRUSTED")]
    assert said(warned) == ["CANNOT BE TRUSTED: 90% of the cells of movie.tif are unlike $x$"]
    assert said(plain) == []
    FigureCanvasAgg(warned).draw()  # a $ in the text is drawn literally, not parsed as mathematics


# ------------------------------------------------------------------ version 2: texture, cross-fitted thresholds



def noisy(crops, rng, sigma=0.15, blank_half=False):
    """The same cells with camera noise (and, optionally, a neighbour blanked over half the crop)."""
    out = crops + rng.normal(0, sigma, crops.shape).astype(np.float32)
    if blank_half:
        out[..., :, : out.shape[-1] // 2] = 0.0
    return out


def test_texture_stats_see_noise_and_blanked_neighbours():
    rng = np.random.default_rng(0)
    clean = blobs(20, rng)
    t_clean = crop_texture_stats(clean)
    t_noisy = crop_texture_stats(noisy(clean, rng))
    t_blank = crop_texture_stats(noisy(clean, rng, 0.0, blank_half=True))
    names = list(crop_descriptors(clean[:1]).shape)
    assert names == [1, len(DESCRIPTORS)]
    rel, ac, blanked = (DESCRIPTORS.index(n) - 6 for n in ("roughness_rel", "autocorrelation", "blanked"))
    assert (t_noisy[:, rel] > 1.3 * t_clean[:, rel]).all()  # pixel noise against the crop's contrast
    assert (t_noisy[:, ac] < t_clean[:, ac]).all()  # neighbouring pixels less alike
    assert (t_blank[:, blanked] > 0.45).all() and (t_clean[:, blanked] < 0.01).all()


def grouped_clusters(n_groups, per_group, rng, dim=32, group_shift=0.6):
    """Features of 4 classes whose groups (movies) are each a little shifted, and their descriptors."""
    f, t, g = [], [], []
    for i in range(n_groups):
        fi, ti = clusters(per_group, rng, dim, shift=rng.normal(0, group_shift, dim))
        f.append(fi), t.append(ti), g.append(np.full(per_group, i))
    f, t, g = np.concatenate(f), np.concatenate(t), np.concatenate(g)
    return f, t, crop_descriptors(blobs(len(f), rng)), g


def test_crossfitted_thresholds_hold_on_new_movies():
    """Thresholds from whole held-out groups judge a new movie as one; from random folds they flag too much."""
    rng = np.random.default_rng(5)
    f, t, d, g = grouped_clusters(6, 150, rng)
    new_f, _, new_d, _ = grouped_clusters(4, 150, np.random.default_rng(6))
    grouped = fit_summary_grouped(f, t, d, 4, g, n_components=16)
    naive = fit_summary_grouped(f, t, d, 4, None, n_components=16)
    share = {k: (s.score_from_descriptors(new_f, new_d) > 1).mean() for k, s in (("grouped", grouped),
                                                                                 ("naive", naive))}
    assert share["grouped"] < 0.05 < share["naive"]
    assert 0 < grouped.heldout_outside < 0.03 and "6 groups" in grouped.heldout_kind
    assert grouped.version == OOD_VERSION and grouped.descriptor_names == SUMMARY_DESCRIPTORS


def test_noisy_cells_are_flagged_though_their_features_look_familiar():
    """Real cells in miniature: the network's features inside the training clusters, the pixels noisy."""
    rng = np.random.default_rng(7)
    f, t, d, g = grouped_clusters(4, 150, rng)
    summary = fit_summary_grouped(f, t, d, 4, g, n_components=16)
    like_f, _ = clusters(300, rng)
    like = blobs(300, rng)
    assert (summary.score(like_f, like) > 1).mean() < 0.05
    assert (summary.score(like_f, noisy(like, rng)) > 1).mean() > 0.9
    assert (summary.score(like_f, noisy(like, rng, 0.0, blank_half=True)) > 1).mean() > 0.9


def test_summary_of_labelled_cells_by_tracks():
    rng = np.random.default_rng(8)
    f, t, d, g = grouped_clusters(12, 25, rng, group_shift=0.3)  # 12 tracks of 25 frames
    names = np.asarray(["Aggregate", "Cytoplasm", "Nuclear", "Circular"])
    s = summarise_labelled(f, d, names[t], CLASS_NAMES, groups=g)
    assert s.class_means.shape[0] == len(CLASS_NAMES) and "labelled cells" in s.heldout_kind
    new_f, new_t, new_d, _ = grouped_clusters(20, 25, np.random.default_rng(9), group_shift=0.3)
    assert (s.score_from_descriptors(new_f, new_d) > 1).mean() < 0.05  # other tracks like the labelled ones
    far = s.score_from_descriptors(new_f + 6.0, new_d)
    assert (far > 1).mean() > 0.9
    assert summarise_labelled(f[:7], d[:7], names[t[:7]], CLASS_NAMES) is None  # too few labels


def v1_state(summary: OODSummary) -> dict:
    """A version 1 summary as the first checkpoints stored it."""
    state = summary.to_state()
    six = [DESCRIPTORS.index(n) for n in ("mean", "std", "p05", "p50", "p95", "centre_minus_rim")]
    rng = np.random.default_rng(0)
    stats = crop_descriptors(blobs(50, rng))[:, six]
    state.update(version=1, intensity_mean=torch.tensor(stats.mean(axis=0), dtype=torch.float32),
                 intensity_std=torch.tensor(stats.std(axis=0) + 1e-3, dtype=torch.float32),
                 intensity_stats=["mean", "std", "p05", "p50", "p95", "centre_minus_rim"], quantile=0.99)
    for k in ("descriptor_mean", "descriptor_std", "descriptor_precision", "descriptor_names"):
        state.pop(k)
    return state


def test_version1_summaries_still_load_score_as_before_and_save_back(summary, tmp_path):
    state = v1_state(summary)
    old = OODSummary.from_state(state)
    assert old.version == 1 and old.descriptor_precision is None
    rng = np.random.default_rng(10)
    f, _ = clusters(40, rng)
    c = blobs(40, rng)
    s = crop_descriptors(c)[:, :6]
    z = (s - state["intensity_mean"].numpy()) / state["intensity_std"].numpy()
    np.testing.assert_allclose(old.distances(f, c)[:, 2], np.sqrt((z * z).mean(axis=1)), rtol=1e-5)
    again = old.to_state()
    assert again["version"] == 1 and "intensity_mean" in again and "descriptor_mean" not in again
    np.testing.assert_allclose(OODSummary.from_state(again).score(f, c), old.score(f, c), rtol=1e-5)
    newer = {**summary.to_state(), "version": OOD_VERSION + 1}
    with pytest.raises(InputError, match="newer napari-yeast-phenotypes"):
        OODSummary.from_state(newer)


def test_real_movie_crops_differ_from_simulated_ones_in_texture():
    """The premise of the crop distance, on the real yeastvision movie: its crops are noisier and more blanked
    (dense colony) than a simulated movie's, by many of the simulated crops' standard deviations."""
    import tifffile
    from realdata import real_data

    folder = real_data("yeastvision-sample-movie")
    image = tifffile.imread(folder / "cdc_fluorescence.tif")[:3]
    labels = tifffile.imread(folder / "masks.tif")[:3]
    real = crop_descriptors(movie_crops(image, labels, build_cell_table(labels, relink=False)))
    sim = simulate_movie(n_frames=6, size=192, n_cells=20, seed=4)
    simd = crop_descriptors(movie_crops(sim.image, sim.labels, build_cell_table(sim.labels, relink=False)))
    z = (np.median(real, axis=0) - simd.mean(axis=0)) / simd.std(axis=0)
    for name in ("roughness", "roughness_rel", "blanked"):
        assert z[DESCRIPTORS.index(name)] > 3, (name, z[DESCRIPTORS.index(name)])
