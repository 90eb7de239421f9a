"""The demo: the whole flow on synthetic movies with ground truth, in a few minutes on a CPU.

1. simulate three small movies from three "experiments" (two for training, one for validation);
2. turn their ground truth into a curated set through the curate path (the one crop function);
3. train the adapted ResNet50 on it (or reuse the cached demo model);
4. classify the validation movie and fit the track model on its labelled cells (the curated set's
   rows of it), which smooths only where it does not lower agreement with the labels;
5. simulate a new movie and classify it with that track model: ``cells.csv``, ``tracks.csv``,
   ``summary.png``;
6. print the accuracy against the ground truth, per cell-frame and for senescence frames.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .core.files.paths import cache_dir
from .phenotypes import CLASS_NAMES, SENESCENT

DEMO_MOVIE = {"n_frames": 40, "size": 256, "n_cells": 30}
TRAIN_MOVIES = {"n_frames": 40, "size": 320, "n_cells": 45}
PER_CLASS_TRAIN = 320
PER_CLASS_VAL = 80
DEFAULT_EPOCHS = 8
#: the file that says a folder holds a demo's results (the demo replaces them when run again)
DEMO_MARK = ".yeast-phenotypes-demo"
#: the training recipe of the demo (core.config.RECIPES); ``--recipe study`` trains as the study did
DEFAULT_RECIPE = "study"


def _balanced_annotations(truth: pd.DataFrame, per_class: int, rng: np.random.Generator, split: str,
                          experiment: str) -> pd.DataFrame:
    """At most ``per_class`` cell-frames of each class, spread over cells and frames."""
    parts = []
    for _, g in truth.groupby("phenotype"):
        parts.append(g.sample(n=min(per_class, len(g)), random_state=int(rng.integers(1 << 31))))
    ann = pd.concat(parts).sort_values(["frame", "label"])
    return ann.assign(split=split, experiment=experiment)[["frame", "label", "phenotype", "split", "experiment"]]


def demo_train_config(seed: int, epochs: int, base_weights: str, trainable: str, recipe: str = DEFAULT_RECIPE,
                      device: str = "auto"):
    """How the demo trains its model: the recipe's settings, for the demo's data."""
    from .core.config import recipe_config

    return recipe_config(recipe, epochs=epochs, batch_size=64, lr=2e-3 if trainable == "all" else 1e-3, seed=seed,
                         base_weights=base_weights, trainable=trainable, device=device)


def demo_config(seed: int, epochs: int, base_weights: str, trainable: str, recipe: str = DEFAULT_RECIPE,
                device: str = "auto") -> dict:
    """Everything the demo model depends on: its cache key (a change of any of it trains anew)."""
    from .core.data.crops import CropSettings
    from .core.data.simulate import SIMULATOR_VERSION
    from .core.network.checkpoint import CHECKPOINT_VERSION
    from .core.network.ood import OOD_VERSION

    return {"version": __version__, "simulator": SIMULATOR_VERSION, "crop_settings": CropSettings().to_dict(),
            "checkpoint": CHECKPOINT_VERSION, "seed": seed, "epochs": epochs, "base_weights": base_weights,
            "trainable": trainable, "ood": OOD_VERSION, "train_movies": TRAIN_MOVIES,
            "per_class": [PER_CLASS_TRAIN, PER_CLASS_VAL],
            "training": demo_train_config(seed, epochs, base_weights, trainable, recipe, device).to_dict()}


def choose_base_weights() -> tuple[str, str, str]:
    """ImageNet weights with the study's freeze policy when cached here; otherwise train from scratch."""
    from .core.network.base_weights import imagenet_weights_available, imagenet_weights_path

    if imagenet_weights_available():
        return "imagenet", "conv1,fc", "ImageNet weights found: training conv1 + fc, as in the study"
    path = imagenet_weights_path()
    return "none", "all", (
        f"ImageNet weights are not on this machine ({path} is missing), so the demo trains every layer "
        f"from random weights instead. To train as in the study, download {path.name} where the internet "
        f"is reachable and install it: yeast-phenotypes install-weights {path.name}"
    )


def build_curated_set(root: Path, seed: int) -> Path:
    """Simulate the training/validation movies and curate their ground truth into ``root``."""
    from .core.data.crops import CropSettings
    from .core.data.curated.annotations import crops_for_annotations
    from .core.data.curated.store import CuratedSet
    from .core.data.simulate import simulate_movie, write_movie

    rng = np.random.default_rng(seed)
    cs = CuratedSet(root, CropSettings())
    plan = [("exp1", "train", PER_CLASS_TRAIN // 2), ("exp2", "train", PER_CLASS_TRAIN // 2),
            ("exp3", "val", PER_CLASS_VAL)]
    for i, (exp, split, per_class) in enumerate(plan):
        movie = simulate_movie(**TRAIN_MOVIES, seed=seed * 1000 + i + 1)
        write_movie(movie, root.parent / "training_movies" / exp)
        ann = _balanced_annotations(movie.truth, per_class, rng, split, exp)
        crops, rows = crops_for_annotations(movie.image, movie.labels, ann, cs.crop_settings,
                                            source="image.tif", experiment=exp)
        cs.add(crops, rows, annotator="simulation truth")
    return root


def cached_model_path(seed: int = 0, epochs: int = DEFAULT_EPOCHS, recipe: str = DEFAULT_RECIPE,
                      device: str = "auto") -> Path:
    """Where the demo model of ``seed`` is cached (it may not be there yet: ``yeast-phenotypes demo`` makes it)."""
    base, trainable, _ = choose_base_weights()
    cfg = demo_config(seed, epochs, base, trainable, recipe, device)
    key = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"demo-model-{key}.pt"


def get_model(out: Path, seed: int, epochs: int, retrain: bool, recipe: str = DEFAULT_RECIPE,
              device: str = "auto") -> Path:
    """Train the demo model (or copy the cached one) to ``out/model.pt``."""
    from .core.jobs.training import train_model_iter, training_data
    from .core.progress import run_to_end, training_bar

    base, trainable, note = choose_base_weights()
    print(f"  {note}")
    cached = cached_model_path(seed, epochs, recipe, device)
    model_path = out / "model.pt"
    if cached.exists() and not retrain:
        shutil.copyfile(cached, model_path)
        print(f"  using the cached demo model {cached} (--retrain to train anew)")
        return model_path
    data = training_data(curated=out / "curated")
    print(f"  {len(data.train)} training crops, {len(data.val)} validation crops (never augmented)")
    config = demo_train_config(seed, epochs, base, trainable, recipe, device)
    print(f"  training recipe: {recipe}")
    run_to_end(train_model_iter(data, config, model_path, overwrite=True), training_bar())
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, cached)
    return model_path


def score(cells: pd.DataFrame, tracks: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Accuracy per cell-frame and senescence-frame agreement against the simulation's truth."""
    m = cells.merge(truth.rename(columns={"phenotype": "truth"}), on=["frame", "label"], how="inner")
    per_class = {c: float((g["phenotype"] == c).mean()) for c, g in m.groupby("truth")}
    t_sen = truth[truth["phenotype"] == CLASS_NAMES[SENESCENT]].groupby("label")["frame"].min()
    label_of_track = cells.groupby("track_id")["label"].first()
    pred = tracks.set_index("track_id")["senescence_frame"]
    pred_by_label = pd.Series(pred.to_numpy(), index=label_of_track.reindex(pred.index).to_numpy())
    diffs = []
    for label, f in t_sen.items():
        p = pred_by_label.get(label, pd.NA)
        diffs.append(np.inf if pd.isna(p) else abs(int(p) - int(f)))
    diffs = np.asarray(diffs, dtype=float)
    return {
        "cell_frames": int(len(m)),
        "accuracy": float((m["phenotype"] == m["truth"]).mean()),
        "accuracy_unsmoothed": float((m["phenotype_raw"] == m["truth"]).mean()),
        "recall_per_class": per_class,
        "senescent_tracks": int(len(diffs)),
        "senescence_within_2_frames": float((diffs <= 2).mean()) if len(diffs) else float("nan"),
    }


def fit_demo_track_model(out: Path, model_path: Path, device: str) -> tuple[Path, dict]:
    """Classify the validation movie (exp3) and fit the track model on the curated set's labels of it, as a lab
    does with the cells it labelled (``fit-track-model --curated``). Returns the file and the fit's report."""
    from .core.config import ClassifyConfig
    from .core.jobs.classify import classify_movie
    from .core.jobs.track_fit import fit_track_model_job
    from .core.track.track_model_file import report_lines

    movie = out / "training_movies" / "exp3"
    classify_movie(movie / "image.tif", movie / "labels.tif", model_path, ClassifyConfig(device=device),
                   out=out / "validation_result", overwrite=True, title="validation movie (synthetic, exp3)")
    path = out / "track_model.json"
    fit = fit_track_model_job(out / "validation_result", path, curated=out / "curated", overwrite=True)
    for line in report_lines(fit.report):
        print(f"  {line}")
    return path, fit.report


def run_demo(out, overwrite: bool = False, retrain: bool = False, seed: int = 0, epochs: int | None = None,
             recipe: str = DEFAULT_RECIPE, device: str = "auto", track_model: bool = True) -> int:
    """Run the demo into ``out``; returns an exit status. ``track_model``: fit the track model on the validation
    movie's labels and classify with it (else: the built-in transition rates)."""
    from .core.config import ClassifyConfig
    from .core.data.simulate import simulate_movie, write_movie
    from .core.files.atomic import atomic_write, prepare_output_dir
    from .core.jobs.classify import classify_movie
    from .core.progress import frames_bar

    t0 = time.perf_counter()
    epochs = epochs or DEFAULT_EPOCHS
    # a folder the demo made (its mark is there) is the demo's to replace: the README's command runs twice
    again = (Path(out) / DEMO_MARK).is_file()
    out = prepare_output_dir(out, ["cells.csv", "tracks.csv", "summary.png", "curated", "model.pt",
                                   "validation_result", "track_model.json"], overwrite or again)
    (out / DEMO_MARK).write_text("this folder was made by yeast-phenotypes demo, which replaces its own results here\n")
    for stale in ("curated", "training_movies", "validation_result"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)  # the demo's own, or --overwrite (prepare_output_dir refused otherwise)
    steps = 5 if track_model else 4
    print(f"[1/{steps}] simulating 3 training/validation movies and curating their ground truth")
    build_curated_set(out / "curated", seed)
    print(f"[2/{steps}] getting a model")
    model_path = get_model(out, seed, epochs, retrain, recipe, device)
    tm_path = tm_report = None
    if track_model:
        print(f"[3/{steps}] fitting the track model on the validation movie's labelled cells")
        tm_path, tm_report = fit_demo_track_model(out, model_path, device)
    print(f"[{steps - 1}/{steps}] simulating a new movie and classifying it")
    movie = simulate_movie(**DEMO_MOVIE, seed=seed * 1000 + 99)
    write_movie(movie, out / "movie")
    # prepare_output_dir has refused earlier results unless --overwrite
    res = classify_movie(movie.image, movie.labels, model_path, ClassifyConfig(device=device), out=out, overwrite=True,
                         progress=frames_bar("classifying"), title="demo movie (synthetic)",
                         names={"image": "movie/image.tif", "labels": "movie/labels.tif"}, track_model=tm_path).result
    print(f"[{steps}/{steps}] comparing with the ground truth")
    s = score(res.cells, res.tracks, movie.truth)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    s["recipe"], s["device"] = recipe, device
    s["track_model"] = None if tm_report is None else {
        "use": tm_report["decision"]["use"], "model": tm_report["decision"]["model"],
        "why": tm_report["decision"]["why"], "labelled": tm_report["labelled"]}
    with atomic_write(out / "accuracy.json") as fh:
        json.dump(s, fh, indent=2)
    print(f"  accuracy per cell-frame: {s['accuracy']:.3f} (unsmoothed {s['accuracy_unsmoothed']:.3f}, "
          f"n={s['cell_frames']}" + (f"; track model: {s['track_model']['use']}" if s["track_model"] else "")
          + ")")
    print("  recall per class: " + ", ".join(f"{c} {v:.2f}" for c, v in s["recall_per_class"].items()))
    print(f"  senescence frame within 2 frames of the truth: {s['senescence_within_2_frames']:.0%} "
          f"of {s['senescent_tracks']} tracks that become senescent")
    print(f"wrote {out / 'cells.csv'}, {out / 'tracks.csv'}, {out / 'summary.png'}, {out / 'run.json'} "
          f"in {s['seconds']:.0f} s")
    return 0
