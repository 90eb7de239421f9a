"""Real cells (issue 17): which live head, how well it learns from a few labels, and an OOD score that sees real cells.

Three measurements, from the command line, written to ``benchmarks/results-real-cells.json`` and
two figures under ``docs/``:

A(a) **GFP crops** (``../shared/data/real/pci-yeast-gfp-crops``, GFP channel): mitochondrial
     (AAC1, AAC3 -> Fragmented) against diffuse (AAH1, AAP1 -> Cytoplasm; and a second task with
     the dim diffuse AAR2 added). One image field (1-4) is held out at a time; heads are fitted on
     5, 10, 20 and 50 labels per class drawn from the other three fields, 5 draws each: 20 fits per
     point, mean and standard deviation of the accuracy on the held-out field. Heads: logistic
     regression (several penalties), nearest-class-mean prototypes, diagonal LDA, a class-balanced
     linear layer trained with Adam, and 5-nearest neighbours (not a linear layer: reference only).
     Features of the demo model and of the same network with random weights.
A(b) **The yeastvision movie** with eye labels (``/work/main/benchmarks/labels/yeastvision_by_eye.csv``):
     the head and its penalty are chosen on A(a) and by 5-fold cross-validation grouped by track
     within the ``train`` rows (frames 0-4), then fitted on all ``train`` rows and judged ONCE on
     the ``judge`` rows (other tracks, frames 5-9): agreement per frame and after the track
     smoothing, recall per class, and the majority-class baseline (everything Aggregate).
B    **OOD**: the share of cell-frames with ``ood_score > 1`` on the real movie and on fresh
     simulated movies (seeds 0-9, 40 frames, 256 px, 30 cells, classified with
     ``classify_movie(..., out=None)``), with the model's shipped summary (JSON key ``v1``; version 1 in models
     of earlier versions, version 2 in this version's) and with a
     version 2 summary fitted by ``summarise_training`` on the demo's curated set; the phase
     channel of the same movie and the GFP crops as further unlike data; and after a live update
     with the ``train`` labels: the live head's own summary, on the judge rows and the movie.

    python benchmarks/real_cells.py --demo-out /tmp/research_demo [--finetune]   # 16 (+10) minutes on 2 busy cores

``--demo-out`` is the folder of ``yeast-phenotypes demo`` (its ``model.pt`` and ``curated/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
GFP = REAL / "pci-yeast-gfp-crops" / "pci_toy_yeast_crops.npz"
MOVIE = REAL / "yeastvision-sample-movie"
EYE_LABELS = Path("/work/main/benchmarks/labels/yeastvision_by_eye.csv")
SIZES = (5, 10, 20, 50)
DRAWS = 5
PENALTIES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
SIM = {"n_frames": 40, "size": 256, "n_cells": 30}


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------- data

def gfp_crops() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40x40 crops of the GFP channel (one robust range for the set, as benchmarks/real_crops.py), protein, field."""
    import torch
    import torch.nn.functional as F

    d = np.load(GFP)
    gfp = d["gfp"].astype(np.float32)
    border = np.concatenate([gfp[:, :4].ravel(), gfp[:, -4:].ravel(), gfp[:, :, :4].ravel(), gfp[:, :, -4:].ravel()])
    low, high = float(np.median(border)), float(np.percentile(gfp, 99))
    x = F.interpolate(torch.from_numpy((gfp - low) / (high - low))[:, None], size=(40, 40), mode="bilinear",
                      antialias=True, align_corners=False).numpy()
    field = np.asarray([str(n).split("_")[1] for n in d["crop_name"]])
    return x, d["protein"].astype(str), field


def gfp_task(protein: np.ndarray, with_aar2: bool) -> np.ndarray:
    diffuse = ["AAH1", "AAP1"] + (["AAR2"] if with_aar2 else [])
    return np.where(np.isin(protein, ["AAC1", "AAC3"]), "Fragmented",
                    np.where(np.isin(protein, diffuse), "Cytoplasm", ""))


# ---------------------------------------------------------------------------- heads

def adam_head(x, y, class_names, standardiser, steps=200, lr=1e-2, weight_decay=1e-2):
    """A class-balanced linear layer trained with Adam (mini-batch-free, ``steps`` full passes)."""
    import torch

    from napari_yeast_phenotypes.core.network.live_head import LiveHead, labelled_classes

    names = labelled_classes(y, class_names)
    code = {c: i for i, c in enumerate(names)}
    yi = torch.tensor([code[t] for t in y])
    xs = torch.from_numpy(standardiser(x).astype(np.float32))
    counts = torch.bincount(yi, minlength=len(names)).float()
    layer = torch.nn.Linear(xs.shape[1], len(names))
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (len(names) * counts))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(layer(xs), yi).backward()
        opt.step()
    w = layer.weight.detach().double().numpy() / standardiser.scale
    b = layer.bias.detach().double().numpy() - w @ standardiser.centre
    return LiveHead(names, w.astype(np.float32), b.astype(np.float32), {}, "adam", {})


class KnnHead:
    """5 nearest neighbours by cosine similarity of standardised features (a reference, not a layer)."""

    def __init__(self, x, y, class_names, standardiser, k=5):
        from napari_yeast_phenotypes.core.network.live_head import labelled_classes

        self.class_names = labelled_classes(y, class_names)
        self.std, self.k = standardiser, k
        z = standardiser(x)
        self.ref = z / np.linalg.norm(z, axis=1, keepdims=True)
        self.y = np.asarray([self.class_names.index(t) for t in y])

    def predict_proba(self, x):
        z = self.std(x)
        sim = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ self.ref.T
        nn = np.argsort(-sim, axis=1)[:, : self.k]
        votes = np.zeros((len(x), len(self.class_names)))
        for j in range(nn.shape[1]):
            votes[np.arange(len(x)), self.y[nn[:, j]]] += 1
        return votes / votes.sum(axis=1, keepdims=True)


def head_configs() -> dict:
    cfg = {f"logistic penalty {p:g}": {"kind": "logistic", "penalty": p} for p in PENALTIES}
    cfg["prototypes"] = {"kind": "prototype"}
    cfg["diagonal LDA"] = {"kind": "lda", "shrinkage": 0.5}
    cfg["Adam linear layer"] = {"kind": "adam"}
    cfg["5-NN (not a layer)"] = {"kind": "knn"}
    return cfg


def fit_any(kw, x, y, class_names, std):
    from napari_yeast_phenotypes.core.network.live_head import fit_head

    if kw["kind"] == "adam":
        return adam_head(x, y, class_names, std)
    if kw["kind"] == "knn":
        return KnnHead(x, y, class_names, std)
    return fit_head(x, y, class_names, standardiser=std, **kw)


def predict(head, x):
    return np.asarray(head.class_names)[head.predict_proba(x).argmax(axis=1)]


def gfp_heads(feats: np.ndarray, protein, field, configs: dict) -> dict:
    """A(a): accuracy on a held-out field against labels per class; mean and sd over 4 fields x 5 draws."""
    from napari_yeast_phenotypes.core.network.live_head import Standardiser

    out = {}
    for task, with_aar2 in (("mito_vs_AAH1_AAP1", False), ("mito_vs_AAH1_AAP1_AAR2", True)):
        cls = gfp_task(protein, with_aar2)
        keep = cls != ""
        std = Standardiser.of(feats[keep])  # all crops of the set: known before any label, as a movie's are
        res = {}
        for name, kw in configs.items():
            res[name] = {}
            for n in SIZES:
                acc, bal = [], []
                for f in sorted(set(field)):
                    test = keep & (field == f)
                    for draw in range(DRAWS):
                        rng = np.random.default_rng(1000 * n + draw)
                        idx = np.concatenate([rng.choice(np.flatnonzero(keep & (field != f) & (cls == c)), n,
                                                         replace=False) for c in ("Cytoplasm", "Fragmented")])
                        pred = predict(fit_any(kw, feats[idx], cls[idx], ("Cytoplasm", "Fragmented"), std), feats[test])
                        acc.append(float((pred == cls[test]).mean()))
                        bal.append(float(np.mean([(pred[cls[test] == c] == c).mean() for c in ("Cytoplasm",
                                                                                              "Fragmented")])))
                res[name][n] = {"accuracy_mean": round(float(np.mean(acc)), 4),
                                "accuracy_sd": round(float(np.std(acc)), 4),
                                "balanced_mean": round(float(np.mean(bal)), 4),
                                "balanced_sd": round(float(np.std(bal)), 4),
                                "fits": len(acc)}
            log(f"  GFP {task:24s} {name:24s} " + "  ".join(
                f"{n}: {res[name][n]['accuracy_mean']:.3f}±{res[name][n]['accuracy_sd']:.3f}" for n in SIZES))
        out[task] = {"n_test_fields": 4, "draws": DRAWS, "heads": res,
                     "classes": {c: int((cls == c).sum()) for c in ("Cytoplasm", "Fragmented")}}
    return out


def finetune_gfp(model_path: Path, crops, protein, field, feats, kw, sizes=(5, 50), draws=2) -> dict:
    """The study's path beside the live head: fine-tune conv1 + fc from the demo model (the Train dock's
    defaults: 10 epochs, batch 64, lr 1e-3; no hold-out or calibration inside) on the same draws as the heads
    (4 held-out fields x ``draws``), the dim diffuse AAR2 included; the live head on exactly those draws."""
    import warnings

    from napari_yeast_phenotypes.core.config import TrainConfig
    from napari_yeast_phenotypes.core.data.cropset import CropSet
    from napari_yeast_phenotypes.core.network.live_head import Standardiser
    from napari_yeast_phenotypes.core.network.predict import predict_crops
    from napari_yeast_phenotypes.core.network.train import train

    names = ("Cytoplasm", "Fragmented")
    cls = gfp_task(protein, True)
    keep = cls != ""
    std = Standardiser.of(feats[keep])
    out = {}
    for n in sizes:
        ft, lh, secs = [], [], []
        for f in sorted(set(field)):
            test = keep & (field == f)
            for draw in range(draws):
                rng = np.random.default_rng(1000 * n + draw)  # the draws of gfp_heads
                idx = np.concatenate([rng.choice(np.flatnonzero(keep & (field != f) & (cls == c)), n, replace=False)
                                      for c in names])
                t0 = time.perf_counter()
                cfg = TrainConfig(base_weights=str(model_path), trainable="conv1,fc", holdout=0.0, calibrate=False,
                                  patience=0, seed=draw)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf = train(CropSet(crops[idx], np.asarray([names.index(c) for c in cls[idx]]), names), None, cfg)
                secs.append(time.perf_counter() - t0)
                pred = np.asarray(names)[predict_crops(clf.model, crops[test]).argmax(axis=1)]
                ft.append(float((pred == cls[test]).mean()))
                head = fit_any(kw, feats[idx], cls[idx], names, std)
                lh.append(float((predict(head, feats[test]) == cls[test]).mean()))
        out[n] = {"finetune_mean": round(float(np.mean(ft)), 4), "finetune_sd": round(float(np.std(ft)), 4),
                  "live_head_mean": round(float(np.mean(lh)), 4), "live_head_sd": round(float(np.std(lh)), 4),
                  "runs": len(ft), "finetune_seconds_median": round(float(np.median(secs)), 1)}
        log(f"  fine-tune vs live head, {n} per class: {out[n]}")
    return out


def movie_rows(mf, labels: pd.DataFrame) -> np.ndarray:
    rows = mf.index(labels["frame"].to_numpy(), labels["track_id"].to_numpy())  # label id == track id here
    if (rows < 0).any():
        raise SystemExit("some eye labels name cells that are not in the movie")
    return rows


def grouped_cv(feats, labels: pd.DataFrame, rows, kw, class_names, std, seeds=(0, 1, 2), k=5) -> dict:
    """5-fold cross-validation grouped by track within the train rows, 3 fold assignments."""
    y = labels["phenotype"].to_numpy()
    accs, bals = [], []
    for seed in seeds:
        tracks = np.random.default_rng(seed).permutation(labels["track_id"].unique())
        pred = np.empty(len(labels), dtype=object)
        for part in np.array_split(tracks, k):
            te = labels["track_id"].isin(part).to_numpy()
            pred[te] = predict(fit_any(kw, feats[rows[~te]], y[~te], class_names, std), feats[rows[te]])
        accs.append(float((pred == y).mean()))
        bals.append(float(np.mean([(pred[y == c] == c).mean() for c in ("Aggregate", "Cytoplasm")])))
    return {"accuracy": round(float(np.mean(accs)), 4), "balanced_A_C": round(float(np.mean(bals)), 4)}


def choose(gfp: dict, cv: dict) -> str:
    """The linear head with the best mean rank over the two GFP tasks (mean accuracy over 5-50 labels)
    and the grouped cross-validation (balanced accuracy): no judge row is looked at."""
    from napari_yeast_phenotypes.core.network.live_head import HEAD_KINDS

    kinds = head_configs()
    linear = [n for n in cv if kinds[n]["kind"] in HEAD_KINDS]  # the heads the package offers
    scores = {
        "gfp_easy": {n: np.mean([gfp["mito_vs_AAH1_AAP1"]["heads"][n][s]["accuracy_mean"] for s in SIZES])
                     for n in linear},
        "gfp_aar2": {n: np.mean([gfp["mito_vs_AAH1_AAP1_AAR2"]["heads"][n][s]["accuracy_mean"] for s in SIZES])
                     for n in linear},
        "cv": {n: cv[n]["balanced_A_C"] for n in linear},
    }
    ranks = {n: np.mean([sorted(v, key=lambda m: -v[m]).index(n) for v in scores.values()]) for n in linear}
    return min(linear, key=lambda n: (ranks[n], n))


def judge(mf, cells, clf, labels: pd.DataFrame, kw) -> dict:
    """A(b): the chosen head fitted on all train rows, judged once on the judge rows."""
    from napari_yeast_phenotypes.core.network.live_head import LiveModel

    train = labels[labels["role"] == "train"].rename(columns={"track_id": "label"})
    jud = labels[labels["role"] == "judge"]
    live = LiveModel(mf, cells, clf, kind=kw["kind"], penalty=kw.get("penalty", 1.0))
    t0 = time.perf_counter()
    up = live.update(train[["frame", "label", "phenotype"]])
    seconds = time.perf_counter() - t0
    tab = up.cells.set_index(["frame", "label"])
    at = tab.loc[list(zip(jud["frame"], jud["track_id"]))]
    y = jud["phenotype"].to_numpy()

    def scores(pred):
        return {"agreement": round(float((pred == y).mean()), 4),
                "recall": {c: round(float((pred[y == c] == c).mean()), 4) for c in sorted(set(y))},
                "predicted": {str(k): int(v) for k, v in pd.Series(pred).value_counts().items()}}

    own = clf.model.fc
    lg = mf.features[mf.rows_of(cells)] @ own.weight.detach().numpy().T + own.bias.detach().numpy()
    base_call = np.asarray(clf.class_names)[lg.argmax(axis=1)]
    base_at = pd.Series(base_call, index=pd.MultiIndex.from_frame(cells[["frame", "label"]])).loc[
        list(zip(jud["frame"], jud["track_id"]))].to_numpy()
    majority = train["phenotype"].value_counts().index[0]
    out = {
        "n_judge": len(jud), "n_train": len(train), "judge_tracks": int(jud["track_id"].nunique()),
        "head": dict(kw), "classes": list(up.class_names), "not_labelled": list(up.not_labelled),
        "per_frame": scores(at["phenotype_raw"].to_numpy()),
        "smoothed": scores(at["phenotype"].to_numpy()),
        "majority_baseline": {"class": majority, **scores(np.full(len(y), majority, dtype=object))},
        "demo_model_unchanged": scores(base_at),
        "movie_share_per_class": {c: round(float((up.cells["phenotype"] == c).mean()), 4) for c in up.class_names},
        "update_seconds": round(seconds, 4),
    }
    return out, live, up


# ---------------------------------------------------------------------------- OOD

def ood_shares(model_v1, model_v2, live_clf=None) -> dict:
    """B: share of cell-frames with ood_score > 1 per movie, by classify_movie(out=None)."""
    import tifffile

    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie
    from napari_yeast_phenotypes.core.jobs import classify_movie

    cfg = ClassifyConfig(device="cpu", precision="fp32")
    out = {}
    image = tifffile.imread(MOVIE / "cdc_fluorescence.tif")
    phase = tifffile.imread(MOVIE / "phase.tif")
    masks = tifffile.imread(MOVIE / "masks.tif")
    movies = {"real_fluorescence": (image, masks), "real_phase_as_fluorescence": (phase, masks)}
    for s in range(10):
        m = simulate_movie(**SIM, seed=s)
        movies[f"simulated_seed{s}"] = (m.image, m.labels)
    import warnings

    for name, (img, lab) in movies.items():
        row = {}
        for tag, model in (("v1", model_v1), ("v2", model_v2)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = classify_movie(img, lab, model, cfg, out=None)
            sc = job.result.cells["ood_score"].to_numpy()
            row[tag] = {"share": round(float((sc > 1).mean()), 4), "cells": int(len(sc)),
                        "warned": bool(job.run["ood"].get("warning"))}
            if name == "real_fluorescence":
                c = job.result.cells
                sen = (c["phenotype_raw"] == "Senescent").to_numpy()
                row[tag]["senescent_calls"] = int(sen.sum())
                row[tag]["senescent_calls_passing"] = round(float((sc[sen] <= 1).mean()), 4) if sen.any() else None
        out[name] = row
        log(f"  OOD {name:30s} v1 {row['v1']['share']:.3f}  v2 {row['v2']['share']:.3f}")
    sims = [out[f"simulated_seed{s}"] for s in range(10)]
    out["simulated_summary"] = {tag: {"mean": round(float(np.mean([r[tag]["share"] for r in sims])), 4),
                                      "max": round(float(np.max([r[tag]["share"] for r in sims])), 4)}
                                for tag in ("v1", "v2")}
    return out


def ood_gfp(clf_v1, clf_v2, feats, crops) -> dict:
    from napari_yeast_phenotypes.core.data.descriptors import crop_descriptors

    desc = crop_descriptors(crops)
    return {tag: round(float((c.ood.score_from_descriptors(feats, desc) > 1).mean()), 4)
            for tag, c in (("v1", clf_v1), ("v2", clf_v2))}


def ood_after_live(live, labels: pd.DataFrame, image, masks, tmp: Path) -> dict:
    """After a live update with the train labels: the head's own summary on the judge rows and the whole movie;
    the saved checkpoint classified again gives the same probabilities and scores."""
    import warnings

    from napari_yeast_phenotypes.core.config import ClassifyConfig
    from napari_yeast_phenotypes.core.jobs import classify_movie
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
    from napari_yeast_phenotypes.core.results.schema import prob_columns

    train = labels[labels["role"] == "train"].rename(columns={"track_id": "label"})[["frame", "label", "phenotype"]]
    jud = labels[labels["role"] == "judge"]
    t0 = time.perf_counter()
    summary = live.summary(train)
    summary_s = time.perf_counter() - t0
    scores = live.ood_scores(summary)
    cells = live.cells
    key = pd.MultiIndex.from_frame(cells[["frame", "label"]])
    at_judge = pd.Series(scores, index=key).loc[list(zip(jud["frame"], jud["track_id"]))].to_numpy()
    up = live.update(train)
    clf = live.head.to_classifier(live.base, summary)
    path = save_checkpoint(tmp / "live_head.pt", clf)
    back = load_classifier(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = classify_movie(image, masks, back, ClassifyConfig(device="cpu", precision="fp32"), out=None)
    c = job.result.cells.set_index(["frame", "label"]).loc[list(zip(cells["frame"], cells["label"]))]
    p_err = float(np.abs(c[prob_columns(up.class_names)].to_numpy() - up.probabilities).max())
    s_err = float(np.max(np.abs(c["ood_score"].to_numpy() - scores) / np.maximum(np.abs(scores), 1e-9)))
    return {"labels": len(train), "summary_seconds": round(summary_s, 3), "thresholds_from": summary.heldout_kind,
            "heldout_outside": round(summary.heldout_outside, 4),
            "judge_share": round(float((at_judge > 1).mean()), 4), "movie_share": round(float((scores > 1).mean()), 4),
            "checkpoint": {"classes": list(back.class_names), "classify_share": round(float(
                (job.result.cells["ood_score"] > 1).mean()), 4), "max_probability_difference": p_err,
                "max_relative_score_difference": s_err, "bytes": path.stat().st_size}}


def ood_vs_labels(mf, cells, base, labels: pd.DataFrame, kw, sizes=(15, 30, 80, 150), draws=3) -> dict:
    """The live head's own summary from fewer labels: whole train tracks drawn until ``n`` cell-frames,
    share of the judge rows and of the movie flagged (mean over ``draws``)."""
    from napari_yeast_phenotypes.core.network.live_head import LiveModel

    train = labels[labels["role"] == "train"].rename(columns={"track_id": "label"})
    jud = labels[labels["role"] == "judge"]
    key = pd.MultiIndex.from_frame(cells[["frame", "label"]])
    out = {}
    for n in sizes:
        judge_share, movie_share, made = [], [], 0
        for draw in range(draws):
            order = np.random.default_rng(draw).permutation(train["label"].unique())
            take = train[train["label"].isin(order[: np.searchsorted(
                train.groupby("label").size().reindex(order).cumsum().to_numpy(), n) + 1])]
            if take["phenotype"].nunique() < 2:
                continue
            live = LiveModel(mf, cells, base, kind=kw["kind"], penalty=kw.get("penalty", 1.0))
            ann = take[["frame", "label", "phenotype"]]
            live.update(ann)
            summary = live.summary(ann)
            if summary is None:
                continue
            sc = live.ood_scores(summary)
            at_judge = pd.Series(sc, index=key).loc[list(zip(jud["frame"], jud["track_id"]))]
            judge_share.append(float((at_judge > 1).mean()))
            movie_share.append(float((sc > 1).mean()))
            made += 1
        out[n] = {"draws": made, "judge_share": round(float(np.mean(judge_share)), 4) if made else None,
                  "movie_share": round(float(np.mean(movie_share)), 4) if made else None,
                  "movie_share_max": round(float(np.max(movie_share)), 4) if made else None}
        log(f"  OOD after a live update with about {n} labels: {out[n]}")
    return out


# ---------------------------------------------------------------------------- figures

def figures(res: dict, docs: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    chosen = res["choice"]["head"]
    show = [chosen, "prototypes", "diagonal LDA", "Adam linear layer", "5-NN (not a layer)"]
    from matplotlib.ticker import NullFormatter

    for ax, task in zip(axes, ("mito_vs_AAH1_AAP1", "mito_vs_AAH1_AAP1_AAR2")):
        for feats in ("demo", "random"):
            block = res["gfp"].get(feats, {}).get(task)
            if not block:
                continue
            for i, name in enumerate(show if feats == "demo" else [chosen]):
                r = block["heads"][str(name)]
                m = [r[str(s)]["accuracy_mean"] if str(s) in r else r[s]["accuracy_mean"] for s in SIZES]
                sd = [r[str(s)]["accuracy_sd"] if str(s) in r else r[s]["accuracy_sd"] for s in SIZES]
                off = 1 + 0.03 * (i - 2)  # a little apart, so the error bars can be told apart
                ax.errorbar(np.asarray(SIZES) * off, m, yerr=sd, ls="-" if feats == "demo" else ":", marker="o", ms=3,
                            capsize=2, color=f"C{i}" if feats == "demo" else "0.4", label=f"{name} ({feats} weights)")
        ax.set_xscale("log")
        ax.set_xticks(SIZES, [str(s) for s in SIZES])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("labels per class")
        ax.set_title(task.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on a held-out image field\n(mean ± sd, 4 fields x 5 draws)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Live heads on the real GFP crops (mitochondrial vs diffuse)", fontsize=10)
    fig.tight_layout()
    p = docs / "live_head_gfp.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    made.append(str(p))

    fig, ax = plt.subplots(figsize=(9, 3.8))
    ood = res["ood"]["movies"]
    names = ["real_fluorescence", "real_phase_as_fluorescence"] + [f"simulated_seed{s}" for s in range(10)]
    labels = ["real", "real phase"] + [f"sim {s}" for s in range(10)]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [ood[n]["v1"]["share"] for n in names], 0.4, label="the summary the demo model ships with")
    ax.bar(x + 0.2, [ood[n]["v2"]["share"] for n in names], 0.4,
           label="version 2 refitted here on the demo's curated set")
    live = res["ood"].get("after_live_update")
    if live:
        ax.scatter([0.2], [live["movie_share"]], marker="v", color="k", zorder=3,
                   label=f"real, after a live update with {live['labels']} labels (head's own summary)")
    ax.axhline(0.9, color="C3", lw=0.8, ls="--")
    ax.axhline(0.05, color="C2", lw=0.8, ls="--")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("share of cell-frames flagged\n(ood_score > 1)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Out-of-distribution score with the demo model: targets >= 90 % real, <= 5 % simulated", fontsize=9)
    fig.tight_layout()
    p = docs / "ood_real_cells.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    made.append(str(p))
    return made


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-out", required=True, help="folder of `yeast-phenotypes demo` (model.pt, curated/)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results-real-cells.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    ap.add_argument("--work", default="/tmp/real_cells_work", help="where the version 2 and live checkpoints go")
    ap.add_argument("--no-random", action="store_true", help="skip the random-weights features")
    ap.add_argument("--skip-ood", action="store_true")
    ap.add_argument("--finetune", action="store_true", help="also fine-tune conv1+fc on GFP draws (about 10 minutes)")
    ap.add_argument("--figures-only", action="store_true", help="redraw the figures from --out's JSON")
    args = ap.parse_args(argv)
    if args.figures_only:
        for p in figures(json.loads(Path(args.out).read_text()), Path(args.docs)):
            log(f"wrote {p}")
        return 0
    if not GFP.exists() or not MOVIE.exists():
        log(f"real data not found under {REAL}; nothing to measure")
        return 0
    import tifffile
    import torch

    from napari_yeast_phenotypes.core.data.curated import CuratedSet
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier, save_checkpoint
    from napari_yeast_phenotypes.core.network.features import crop_features, movie_features
    from napari_yeast_phenotypes.core.network.live_head import Standardiser
    from napari_yeast_phenotypes.core.network.model import Classifier, YeastResNet
    from napari_yeast_phenotypes.core.network.ood import summarise_training

    t_start = time.perf_counter()
    demo = Path(args.demo_out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clf = load_classifier(demo / "model.pt")
    torch.manual_seed(0)
    rand = Classifier(YeastResNet(8).eval())
    res = {"model": str(demo / "model.pt"), "load_before": list(os.getloadavg()), "timings": {}}

    crops, protein, field = gfp_crops()
    image = tifffile.imread(MOVIE / "cdc_fluorescence.tif")
    masks = tifffile.imread(MOVIE / "masks.tif")
    cells = build_cell_table(masks, relink=False)
    labels = pd.read_csv(EYE_LABELS)
    configs = head_configs()

    res["gfp"], res["cv"], feats_of = {}, {}, {}
    for tag, model in (("demo", clf), ("random", rand)):
        if tag == "random" and args.no_random:
            continue
        t0 = time.perf_counter()
        gfeats = crop_features(model.model, crops)
        mf = movie_features(image, masks, model)
        res["timings"][f"features_{tag}_s"] = round(time.perf_counter() - t0, 1)
        feats_of[tag] = (gfeats, mf)
        log(f"[A(a)] GFP crops, {tag} features")
        res["gfp"][tag] = gfp_heads(gfeats, protein, field, configs)
        log(f"[A(b)] grouped cross-validation on the train rows, {tag} features")
        train = labels[labels["role"] == "train"].reset_index(drop=True)
        rows = movie_rows(mf, train)
        std = Standardiser.of(mf.features)
        res["cv"][tag] = {n: grouped_cv(mf.features, train, rows, kw, clf.class_names, std)
                          for n, kw in configs.items()}
        for n, r in res["cv"][tag].items():
            log(f"  CV {tag} {n:24s} accuracy {r['accuracy']:.3f} balanced(A,C) {r['balanced_A_C']:.3f}")

    head = choose(res["gfp"]["demo"], res["cv"]["demo"])
    kw = configs[head]
    res["choice"] = {"head": head, "config": kw, "rule": "best mean rank over GFP (both tasks, mean over 5-50 "
                     "labels per class) and the grouped cross-validation (balanced accuracy), demo features; "
                     "judge rows not used"}
    log(f"[choice] {head}")
    gfeats, mf = feats_of["demo"]
    if args.finetune:
        log("[A(a)] fine-tune conv1+fc beside the live head (GFP, AAR2 included)")
        t0 = time.perf_counter()
        res["gfp_finetune"] = finetune_gfp(demo / "model.pt", crops, protein, field, gfeats, kw)
        res["timings"]["finetune_s"] = round(time.perf_counter() - t0, 1)
    res["judge"], live, _ = judge(mf, cells, clf, labels, kw)
    j = res["judge"]
    log(f"[A(b)] judge ({j['n_judge']} rows): per frame {j['per_frame']['agreement']:.3f}, smoothed "
        f"{j['smoothed']['agreement']:.3f}, majority {j['majority_baseline']['agreement']:.3f}, demo model "
        f"{j['demo_model_unchanged']['agreement']:.3f}; recall {j['smoothed']['recall']}")

    if not args.skip_ood:
        log("[B] OOD: version 2 summary of the demo model (its curated set, cross-fitted)")
        cs = CuratedSet(demo / "curated")
        t0 = time.perf_counter()
        v2 = Classifier(clf.model, clf.class_names, clf.crop_settings, dict(clf.metadata))
        v2.ood = summarise_training(v2.model, cs.load_split("train"), cs.load_split("val"))
        res["timings"]["summary_v2_s"] = round(time.perf_counter() - t0, 1)
        v2_path = save_checkpoint(work / "demo_model_ood_v2.pt", v2)
        v2 = load_classifier(v2_path)
        res["ood"] = {"v2_summary": {"thresholds": [round(float(t), 4) for t in v2.ood.thresholds],
                                     "heldout_outside": round(v2.ood.heldout_outside, 4),
                                     "from": v2.ood.heldout_kind, "n_fit": v2.ood.n_fit,
                                     "components": int(len(v2.ood.variances))},
                      "v1_summary": {"thresholds": [round(float(t), 4) for t in clf.ood.thresholds],
                                     "heldout_outside": round(clf.ood.heldout_outside, 4),
                                     "from": clf.ood.heldout_kind}}
        t0 = time.perf_counter()
        res["ood"]["movies"] = ood_shares(clf, v2)
        res["timings"]["ood_movies_s"] = round(time.perf_counter() - t0, 1)
        res["ood"]["gfp_crops"] = ood_gfp(clf, v2, gfeats, crops)
        live_v2 = type(live)(mf, cells, v2, kind=kw["kind"], penalty=kw.get("penalty", 1.0))
        res["ood"]["after_live_update"] = ood_after_live(live_v2, labels, image, masks, work)
        res["ood"]["after_live_update_fewer_labels"] = ood_vs_labels(mf, cells, v2, labels, kw)
        a = res["ood"]["after_live_update"]
        log(f"[B] after a live update: judge rows {a['judge_share']:.3f}, movie {a['movie_share']:.3f} flagged; "
            f"checkpoint max |dp| {a['checkpoint']['max_probability_difference']:.2g}")
        res["figures"] = figures(res, Path(args.docs))
    res["load_after"] = list(os.getloadavg())
    res["timings"]["total_s"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).write_text(json.dumps(res, indent=1, default=str))
    log(f"wrote {args.out} in {res['timings']['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
