"""Cell tables and crops made ahead of the network (core/data/chunks.py): in the caller's thread, a thread or
worker processes, always the same as frame by frame with Tracker.update and extract_crops."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from napari_yeast_phenotypes.core.config import ClassifyConfig
from napari_yeast_phenotypes.core.data.chunks import PreparedChunks, iter_chunks, measure_chunk
from napari_yeast_phenotypes.core.data.crops import CropSettings, extract_crops, movie_stats
from napari_yeast_phenotypes.core.data.simulate import simulate_movie
from napari_yeast_phenotypes.core.data.tracking import Tracker
from napari_yeast_phenotypes.core.errors import InputError
from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
from napari_yeast_phenotypes.core.pipeline import classify_iter, crop_workers_for
from napari_yeast_phenotypes.core.progress import run_to_end


@pytest.fixture(scope="module")
def movie():
    mv = simulate_movie(n_frames=7, size=128, n_cells=8, seed=5)
    labels = mv.labels.copy()
    labels[3] = 0  # a frame without cells
    # untracked ids (shuffled per frame), so that relinking has work to do
    rng = np.random.default_rng(0)
    for t in range(labels.shape[0]):
        ids = np.unique(labels[t])
        ids = ids[ids > 0]
        lut = np.zeros(int(labels[t].max()) + 1, labels.dtype)
        lut[ids] = rng.permutation(np.arange(100, 100 + ids.size)).astype(labels.dtype)
        labels[t] = lut[labels[t]]
    return mv.image, labels


def frame_by_frame(image, labels, relink, settings, stats):
    """The reference: Tracker.update and extract_crops, frame by frame (the pipeline before chunks)."""
    tracker = Tracker(relink=relink)
    tables, crops = [], []
    for t in range(labels.shape[0]):
        tab = tracker.update(labels[t], t)
        if len(tab):
            tables.append(tab)
            crops.append(extract_crops(image[t], labels[t], tab, settings, stats))
    return pd.concat(tables, ignore_index=True), np.concatenate(crops)


def made(image, labels, relink, settings, stats, chunk_frames, workers):
    with PreparedChunks(image, labels, chunk_frames, settings, stats, Tracker(relink=relink), workers) as chunks:
        got = list(chunks)
    # one frame first (its calls come at once), then chunk_frames at a time
    starts = [0, *range(1, len(labels), chunk_frames)]
    assert [c.frames for c in got] == [range(a, b) for a, b in zip(starts, starts[1:] + [len(labels)])]
    return (pd.concat([t for c in got for t in c.tables], ignore_index=True),
            np.concatenate([x() if callable(x) else x for c in got for x in c.crops]))  # 0 workers: when asked


@pytest.mark.parametrize("relink", [True, False])
@pytest.mark.parametrize("chunk_frames, workers", [(1, 0), (3, 0), (2, 1), (8, 1)])
def test_chunks_equal_frame_by_frame(movie, relink, chunk_frames, workers):
    image, labels = movie
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    ref_table, ref_crops = frame_by_frame(image, labels, relink, settings, stats)
    table, crops = made(image, labels, relink, settings, stats, chunk_frames, workers)
    pd.testing.assert_frame_equal(table, ref_table, check_exact=True)
    assert np.array_equal(crops, ref_crops)  # the same function on the same pixels: bit for bit
    if relink:
        assert table["track_id"].max() < table["label"].min()  # ids renumbered along the tracks


def test_the_first_chunk_is_one_frame_then_chunk_frames_at_a_time():
    assert list(iter_chunks(10, 4)) == [range(0, 1), range(1, 5), range(5, 9), range(9, 10)]
    assert list(iter_chunks(1, 8)) == [range(0, 1)] and list(iter_chunks(0, 8)) == []
    assert list(iter_chunks(3, 1)) == [range(0, 1), range(1, 2), range(2, 3)]
    assert list(iter_chunks(5, 2, first=3)) == [range(0, 2), range(2, 4), range(4, 5)]  # never above chunk_frames


def test_the_progress_moves_after_the_first_frame_not_the_first_chunk_of_frames(movie, clf):
    """The progress moves after the first frame (not after chunk_frames of them), and the calls are those of a
    classification whose chunks are all of one frame: the network saw the same batches."""
    image, labels = movie
    config = ClassifyConfig(relink="yes", chunk_frames=4, batch_size=16, precision="fp32", device="cpu")
    steps = []
    table = run_to_end(classify_iter(image, labels, clf, config), lambda done, total: steps.append((done, total)))
    n = len(labels)
    assert steps[:3] == [(0, n), (1, n), (min(5, n), n)] and steps[-1] == (n, n)
    one = run_to_end(classify_iter(image, labels, clf, dataclasses.replace(config, chunk_frames=1)))
    pd.testing.assert_frame_equal(table, one, check_exact=True)


def test_a_chunk_is_made_apart_from_the_others(movie):
    """measure_chunk needs only its frames and the frame before: its matches are those Tracker.update makes."""
    image, labels = movie
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    part = measure_chunk(image[4:7], labels[4:7], 4, settings, stats, relink=True, prev_labels=labels[3])
    whole = measure_chunk(image, labels, 0, settings, stats, relink=True)
    for (t1, m1, k1, c1), (t2, m2, k2, c2) in zip(part, whole[4:]):
        pd.testing.assert_frame_equal(t1, t2)
        assert (m1 is None and m2 is None) or np.array_equal(m1, m2)
        assert k1 is None and k2 is None  # every cell is data here
        assert len(c1) == len(c2) and all(np.array_equal(a, b) for a, b in zip(c1, c2))


def test_a_daemon_process_makes_its_crops_in_a_thread(movie, monkeypatch):
    """A process that may not start processes (a Dask worker is a daemon) uses a thread instead."""
    import multiprocessing

    image, labels = movie
    settings = CropSettings()
    stats = movie_stats(image, labels, settings)
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    with PreparedChunks(image, labels, 4, settings, stats, Tracker(), workers=3) as chunks:
        assert chunks.workers == 1
        assert sum(len(t) for c in chunks for t in c.tables) == sum(len(np.unique(f)) - 1 for f in labels if f.any())


def test_crop_workers_per_device():
    assert crop_workers_for("cpu", 2) == 0 and crop_workers_for("cpu", 4) == 0
    assert crop_workers_for("cpu", 16) == 1
    assert crop_workers_for("cuda", 16) == 8 and crop_workers_for("cuda", 4) == 3
    assert crop_workers_for("cuda", 2) == 1 and crop_workers_for("cuda", 1) == 1


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(1)
    return Classifier(YeastResNet(8).eval())


def classify(movie, clf, workers, **kw):
    image, labels = movie
    config = ClassifyConfig(relink="yes", chunk_frames=2, batch_size=16, precision="fp32", device="cpu",
                            crop_workers=workers, **kw)
    return run_to_end(classify_iter(image, labels, clf, config))


@pytest.mark.slow
def test_pipeline_gives_the_same_table_whatever_makes_the_crops(movie, clf):
    """0 (between batches), 1 (a thread) and 2 (processes): the same cell table and probabilities, exactly."""
    ref = classify(movie, clf, 0)
    assert ref.attrs["inference"]["crop_workers"] == 0
    for workers in (1, 2):
        got = classify(movie, clf, workers)
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
        assert got.attrs["inference"]["crop_workers"] == workers


def chunk_threads():
    return [t for t in threading.enumerate() if t.name == "yeast-phenotypes chunks"]


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_stopping_early_stops_the_thread_and_the_workers(movie, clf, workers, tmp_path, monkeypatch):
    """A cancelled classification (the generator closed after its first chunk) leaves no thread, no worker and
    no shared-memory file behind."""
    import napari_yeast_phenotypes.core.data.chunks as chunks

    monkeypatch.setattr(chunks, "_shm_dir", lambda: str(tmp_path))
    image, labels = movie
    config = ClassifyConfig(relink="yes", chunk_frames=1, batch_size=4, precision="fp32", device="cpu",
                            crop_workers=workers)
    gen = classify_iter(image, labels, clf, config)
    next(gen), next(gen)  # started, then the first chunk done
    assert chunk_threads()
    gen.close()
    assert not chunk_threads()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("workers", [0, 1, pytest.param(2, marks=pytest.mark.slow)])
def test_an_error_in_a_later_frame_reaches_the_caller(clf, workers):
    """A problem found while making the crops ahead (here: negative label ids in frame 9, which the movie's
    statistics do not look at) is raised to the caller in plain words, as without workers."""
    mv = simulate_movie(n_frames=20, size=96, n_cells=4, seed=2)
    bad = mv.labels.astype(np.int32)
    bad[9, :4, :4] = -3
    with pytest.raises(InputError, match="frame 9"):
        classify((mv.image, bad), clf, workers)
    assert not chunk_threads()
