"""How long a live update takes: from a key press (a new label) to the whole movie re-predicted and re-smoothed.

The features of every cell-frame are cached (``core.features``); one update is
``LiveModel.update``: the head refitted on all labels (warm-started from the previous head),
every cell-frame's probabilities from it, every track smoothed again with the labels as fixed
evidence. Measured on

- ``real``: the real yeastvision movie (1,226 cell-frames, 140 tracks), with the features of a
  model (``--model``; random weights when none is given: the cost does not depend on the
  weights, only the number of L-BFGS steps a little); up to 500 labels (the person's eye labels,
  then more cells labelled with the class of the nearest labelled track);
- ``synthetic``: 40,000 cell-frames (1,000 tracks of 40 frames) of 2048 synthetic features in 8
  clusters, 500 labels over the 8 classes.

For each, the labels are given one at a time, as in the viewer; the JSON has the time of every
update from 2 labelled classes on, and the median and maximum over the last 20 updates (at
480-500 labels), split into fit, predict and smooth. Also the one-off costs: the features of the
real movie through the network (when ``--model`` is given and they are not cached) and
``LiveModel`` set-up. Timings are noisy when other programs use the CPU: the JSON records the
load average before and after.

    python benchmarks/live_head.py [--model demo_out/model.pt] [--out benchmarks/results-live-head.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "yeastvision-sample-movie"
EYE_LABELS = Path("/work/main/benchmarks/labels/yeastvision_by_eye.csv")


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def label_sequence(cells: pd.DataFrame, first: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``first`` (frame, label, phenotype) then more cells up to ``n``, labelled like their track
    (or, for tracks without a label, like a random labelled track): the order a person would go in."""
    rng = np.random.default_rng(seed)
    rows = [first]
    have = set(zip(first["frame"], first["label"]))
    by_track = first.merge(cells[["frame", "label", "track_id"]], on=["frame", "label"]).groupby("track_id")[
        "phenotype"].agg(lambda s: s.mode().iloc[0])
    classes = first["phenotype"].unique()
    rest = cells[[(f, lab) not in have for f, lab in zip(cells["frame"], cells["label"])]]
    rest = rest.iloc[rng.permutation(len(rest))][: max(0, n - len(first))]
    ph = [by_track.get(t, classes[rng.integers(len(classes))]) for t in rest["track_id"]]
    rows.append(pd.DataFrame({"frame": rest["frame"].to_numpy(), "label": rest["label"].to_numpy(), "phenotype": ph}))
    return pd.concat(rows, ignore_index=True).iloc[:n]


def time_updates(live, labels: pd.DataFrame, start: int, stop: int, every: int = 1) -> list[dict]:
    """One update per added label (every ``every``-th from ``start`` to ``stop`` labels)."""
    out = []
    for n in range(start, stop + 1, every):
        t0 = time.perf_counter()
        up = live.update(labels.iloc[:n])
        total = time.perf_counter() - t0
        out.append({"labels": n, "total_s": round(total, 4), **{f"{k}_s": round(v, 4) for k, v in up.seconds.items()
                                                                  if k != "total"}})
    return out


def summarise(steps: list[dict]) -> dict:
    last = steps[-20:]
    return {"labels": last[-1]["labels"],
            "median_s": round(float(np.median([s["total_s"] for s in last])), 4),
            "max_s": round(float(np.max([s["total_s"] for s in last])), 4),
            **{f"median_{k}_s": round(float(np.median([s[f"{k}_s"] for s in last])), 4)
               for k in ("fit", "predict", "smooth")}}


def real_movie(args) -> dict:
    import tifffile

    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
    from napari_yeast_phenotypes.core.network.features import movie_features
    from napari_yeast_phenotypes.core.network.live_head import LiveModel
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet

    if not REAL.exists():
        return {"skipped": f"real data not found at {REAL}"}
    image = tifffile.imread(REAL / "cdc_fluorescence.tif")
    labels = tifffile.imread(REAL / "masks.tif")
    if args.model:
        clf = load_classifier(args.model)
    else:
        import torch

        torch.manual_seed(0)
        clf = Classifier(YeastResNet(8).eval())
    t0 = time.perf_counter()
    mf = movie_features(image, labels, clf)
    features_s = time.perf_counter() - t0
    cells = build_cell_table(labels, relink=False)
    t0 = time.perf_counter()
    live = LiveModel(mf, cells, clf)
    setup_s = time.perf_counter() - t0
    eye = pd.read_csv(EYE_LABELS) if EYE_LABELS.exists() else None
    if eye is not None:
        first = eye.rename(columns={"track_id": "label"})[["frame", "label", "phenotype"]]
    else:
        pick = cells.sample(40, random_state=0)
        first = pd.DataFrame({"frame": pick["frame"], "label": pick["label"],
                              "phenotype": np.where(np.arange(40) % 2, "Aggregate", "Cytoplasm")})
    seq = label_sequence(cells, first, args.labels)
    t0 = time.perf_counter()
    live.update(seq.iloc[:40])
    first_s = time.perf_counter() - t0
    steps = time_updates(live, seq, args.labels - 19, args.labels)
    early = time_updates(live, seq, 10, 100, every=10)
    return {"cell_frames": len(cells), "tracks": int(cells["track_id"].nunique()),
            "model": str(args.model or "random weights"), "features_s": round(features_s, 3),
            "features_cached": mf.meta.get("seconds") is not None and features_s < 1.0,
            "setup_s": round(setup_s, 4), "first_update_s": round(first_s, 4), "at_500": summarise(steps),
            "steps": early + steps}


def synthetic(args) -> dict:
    from napari_yeast_phenotypes.core.network.features import MovieFeatures
    from napari_yeast_phenotypes.core.network.live_head import LiveModel
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rng = np.random.default_rng(0)
    n_tracks, n_frames, dim = args.tracks, args.frames, 2048
    track = np.repeat(np.arange(1, n_tracks + 1), n_frames)
    frame = np.tile(np.arange(n_frames), n_tracks)
    cls = rng.integers(0, 8, n_tracks)[track - 1]
    centres = np.abs(rng.normal(0, 1, (8, dim)))
    x = np.abs(centres[cls] + rng.normal(0, 1.5, (len(track), dim))).astype(np.float32)
    order = np.lexsort((track, frame))
    mf = MovieFeatures(frame[order], track[order], x[order], np.zeros((len(track), 6), np.float32))
    cells = pd.DataFrame({"frame": frame, "label": track, "track_id": track})
    t0 = time.perf_counter()
    live = LiveModel(mf, cells, Classifier(YeastResNet(8).eval()))
    setup_s = time.perf_counter() - t0
    pick = rng.permutation(len(cells))[: args.labels]
    seq = pd.DataFrame({"frame": frame[pick], "label": track[pick], "phenotype": np.asarray(CLASS_NAMES)[cls[pick]]})
    # every class first, so that the head has all 8 from the start (the slowest case)
    first = seq.groupby("phenotype").head(1)
    seq = pd.concat([first, seq.drop(first.index)], ignore_index=True)
    live.update(seq.iloc[:40])
    steps = time_updates(live, seq, args.labels - 19, args.labels)
    return {"cell_frames": len(cells), "tracks": n_tracks, "classes_labelled": 8, "setup_s": round(setup_s, 4),
            "at_500": summarise(steps), "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint whose features the real movie gets (default: random)")
    ap.add_argument("--labels", type=int, default=500)
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results-live-head.json"))
    args = ap.parse_args(argv)
    import torch

    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "load_before": _load()}}
    result["real"] = real_movie(args)
    print("real movie:", json.dumps(result["real"].get("at_500", result["real"])), flush=True)
    result["synthetic"] = synthetic(args)
    print("synthetic:", json.dumps(result["synthetic"]["at_500"]), flush=True)
    result["machine"]["load_after"] = _load()
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
