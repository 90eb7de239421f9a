"""Labels chosen by "next cell to check" vs at random: how many to reach 0.95 accuracy on another experiment.

What it does (small enough for a laptop CPU: a few minutes):

1. **The base model**: the demo's (``yeast-phenotypes demo``: the adapted ResNet50, every layer,
   from random weights, 8 epochs on 2,560 crops of two simulated experiments; taken from the
   demo's cache when there, else trained, about 5 minutes on a quiet 2-core CPU), or ``--model``.
   **Experiment A** (one more simulated movie like those) stands for the data it learnt from.
   (A model trained on experiment A alone, 1,533 crops, was tried first: it reached 0.84 on B
   and even with every pool cell-frame labelled the refitted ``fc`` stayed under 0.91, so no
   strategy could reach 0.95 with it.)
2. **Experiment B** (another simulated movie: other seed, other mix of phenotypes, cells that
   switch twice as often, seen through "another microscope": slightly out of focus (Gaussian
   blur of 1 px) and noisier (Gaussian noise of 10% of the image's spread), so the base model
   is wrong on about one cell in six): classified by the base model. Its tracks are split in two halves:
   a pool a person labels from, and held-out tracks on which accuracy is measured.
3. Rounds of ``--step`` labels, up to ``--budget``, two ways: the top of the "next cell to
   check" queue (:func:`napari_yeast_phenotypes.core.track.review.review_queue`, on the pool,
   recomputed after every round with the labels as fixed evidence for the track model), or
   cell-frames of the pool drawn at random (``--seeds`` draws). The label is the simulation's
   truth: a perfect annotator.
4. After each round the model is corrected the cheap way a viewer session can afford: the final
   layer (``fc``) is refitted on the cached features of A's crops and of B's labelled crops (the
   rest of the network stays as it was). Accuracy = the corrected model's class per
   cell-frame on the held-out tracks of B (before the track model; after it in the JSON too).

Writes ``annotate_learning_curve.png`` and ``.json`` into ``--out`` (default ``docs/``).

    python benchmarks/annotate_learning_curve.py [--out docs] [--correct finetune|fc]
        [--budgets 0,20,40,80,160] [--seeds 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sections.common import add_threads_option, set_threads  # the sections package sits beside this script

EXP_A = {"n_frames": 30, "size": 320, "n_cells": 45, "seed": 101}
EXP_B = {"n_frames": 30, "size": 320, "n_cells": 45, "seed": 202, "p_switch": 0.08,
         "phenotype_weights": [3, 1, 1, 2, 1, 2, 1]}
# experiment B's microscope: blur (px) and added noise (fraction of the image's standard deviation)
MICROSCOPE_B = {"blur": 1.0, "noise": 0.1, "seed": 5}
TARGET = 0.95


def other_microscope(image: np.ndarray, blur: float, noise: float, seed: int) -> np.ndarray:
    """The same cells seen through another microscope: defocus blur and extra camera noise."""
    from scipy import ndimage

    img = np.stack([ndimage.gaussian_filter(f.astype(np.float32), blur) for f in image])
    return img + np.random.default_rng(seed).normal(0, noise * img.std(), img.shape).astype(np.float32)


def movie_set(params: dict, microscope: dict | None = None):
    """A simulated movie's cell table, crops (through the one crop function) and true classes."""
    from napari_yeast_phenotypes.core.data.crops import movie_crops, movie_stats
    from napari_yeast_phenotypes.core.data.simulate import simulate_movie
    from napari_yeast_phenotypes.core.data.tracking import build_cell_table
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    movie = simulate_movie(**params)
    image = movie.image if microscope is None else other_microscope(movie.image, **microscope)
    table = build_cell_table(movie.labels)
    table = table.merge(movie.truth[["frame", "label", "phenotype"]], on=["frame", "label"], how="left")
    table = table.rename(columns={"phenotype": "truth"})
    stats = movie_stats(image, movie.labels)
    crops = movie_crops(image, movie.labels, table, stats=stats)
    target = np.array([CLASS_NAMES.index(c) for c in table["truth"]])
    return movie, table, crops, target


def demo_model(work: Path) -> tuple:
    """The demo's model (trained on the demo's simulated experiments; from its cache when there)."""
    from napari_yeast_phenotypes.core.network.checkpoint import load_classifier
    from napari_yeast_phenotypes.demo import DEFAULT_EPOCHS, build_curated_set, get_model

    build_curated_set(work / "curated", 0)
    path = get_model(work, 0, DEFAULT_EPOCHS, retrain=False)
    return load_classifier(path), path


def features(model, crops, batch: int = 256) -> np.ndarray:
    """The network's penultimate features (what ``fc`` sees), in eval mode."""
    import torch

    model.eval()
    head, model.fc = model.fc, torch.nn.Identity()
    try:
        with torch.inference_mode():
            out = [model(torch.from_numpy(np.ascontiguousarray(crops[a:a + batch]))).numpy()
                   for a in range(0, len(crops), batch)]
    finally:
        model.fc = head
    return np.concatenate(out)


def cached_features(model_path: Path, model, crops_a, crops_b):
    """Features of both experiments' crops, cached beside the model (they depend on nothing else)."""
    from napari_yeast_phenotypes.core.data.simulate import SIMULATOR_VERSION
    from napari_yeast_phenotypes.core.files.fingerprint import file_sha256
    from napari_yeast_phenotypes.core.files.paths import cache_dir

    key = hashlib.sha1(json.dumps([file_sha256(model_path), EXP_A, EXP_B, MICROSCOPE_B, SIMULATOR_VERSION],
                                  sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"annotate-benchmark-features-{key}.npz"
    if path.exists():
        got = np.load(path)
        return got["a"], got["b"]
    a, b = features(model, crops_a), features(model, crops_b)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, a=a, b=b)
    return a, b


def refit_fc(w0, b0, feats_a, target_a, feats_l, target_l, steps: int = 60):
    """``fc`` refitted from the base weights on A's features plus B's labelled ones (equal weight)."""
    import torch
    import torch.nn.functional as F

    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    xa, ya = torch.from_numpy(feats_a), torch.from_numpy(target_a)
    xl, yl = torch.from_numpy(feats_l), torch.from_numpy(target_l)
    opt = torch.optim.Adam([w, b], lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(xa @ w.T + b, ya)
        if len(yl):
            loss = loss + F.cross_entropy(xl @ w.T + b, yl)
        loss = loss + 1e-4 * ((w - torch.from_numpy(w0)) ** 2).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy(), b.detach().numpy()


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def finetune(ctx: dict, idx: np.ndarray) -> np.ndarray:
    """Probabilities on all of B after fine-tuning every layer on A's anchor crops + B's labelled ones.

    What the Train dock does with "the current model" as base weights, in small: a copy of the
    base model, every layer trainable, AdamW, the training augmentations, ``--finetune-epochs``
    passes over the anchor crops of A and B's labelled crops (these repeated to weigh as much as
    A's together).
    """
    import copy

    import torch

    from napari_yeast_phenotypes.core.network.predict import predict_crops
    from napari_yeast_phenotypes.core.network.train_steps import batch_loss

    if not len(idx):
        return ctx["probs0"]
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = copy.deepcopy(ctx["model"]).to(memory_format=torch.channels_last)
    model.set_trainable("all")
    model.train()
    xa, ya = ctx["anchor_crops"], ctx["anchor_target"]
    reps = max(1, len(xa) // len(idx))
    x = torch.from_numpy(np.concatenate([xa, np.repeat(ctx["crops_b"][idx], reps, axis=0)]))
    y = torch.from_numpy(np.concatenate([ya, np.repeat(ctx["target_b"][idx], reps)]))
    opt = torch.optim.AdamW(model.parameters(), lr=ctx["lr"])
    for _ in range(ctx["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x) - 63, 64):
            i = perm[s:s + 64]
            loss = batch_loss(model, x[i], y[i], gen, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return predict_crops(model, ctx["crops_b"], 256, "cpu")


def run_curve(strategy: str, seed: int, ctx: dict, budgets: list[int]) -> list[dict]:
    from napari_yeast_phenotypes.core.results.schema import prob_columns
    from napari_yeast_phenotypes.core.track.review import review_queue
    from napari_yeast_phenotypes.core.track.timeline import add_timeline
    from napari_yeast_phenotypes.phenotypes import CLASS_NAMES

    rng = np.random.default_rng(seed)
    pool, test = ctx["pool"], ctx["test"]
    table_b, yb = ctx["table_b"], ctx["target_b"]
    probs = ctx["probs0"]
    labelled: list[int] = []  # positions in the pool
    curve = []
    for budget in budgets:
        step = budget - len(labelled)
        if step > 0:
            if strategy == "random":
                free = np.setdiff1d(np.arange(len(pool)), labelled)
                new = rng.choice(free, size=min(step, len(free)), replace=False).tolist()
            else:
                cells = table_b.iloc[pool].reset_index(drop=True)
                cells[prob_columns()] = probs[pool]
                given = [CLASS_NAMES[yb[pool[i]]] for i in labelled]
                ann = cells.iloc[labelled][["frame", "label"]].assign(phenotype=given)
                cells = add_timeline(cells, annotations=ann)
                # add_timeline sorts by (frame, label): map its rows back to pool positions
                pos = pd.MultiIndex.from_frame(table_b.iloc[pool][["frame", "label"]]).get_indexer(
                    pd.MultiIndex.from_frame(cells[["frame", "label"]]))
                mask = np.zeros(len(cells), bool)
                mask[np.isin(pos, labelled)] = True
                q = review_queue(cells, labelled=mask)
                new = [int(pos[r]) for r in q["row"].to_numpy()[:step]]
            labelled += new
            probs = ctx["correct"](ctx, pool[np.asarray(labelled)])
        test_pred = probs[test].argmax(axis=1)
        cells_test = table_b.iloc[test].copy()
        cells_test[prob_columns()] = probs[test]
        smoothed = add_timeline(cells_test)
        smooth_acc = float((smoothed["phenotype"].to_numpy() == smoothed["truth"].to_numpy()).mean())
        curve.append({"labels": len(labelled), "accuracy": float((test_pred == yb[test]).mean()),
                      "accuracy_smoothed": smooth_acc})
        print(f"  {strategy} {seed}: {len(labelled)} labels, accuracy {curve[-1]['accuracy']:.3f} "
              f"(smoothed {smooth_acc:.3f})", flush=True)
    return curve


def refit_correct(ctx: dict, idx: np.ndarray) -> np.ndarray:
    w, b = refit_fc(ctx["w0"], ctx["b0"], ctx["feats_a"], ctx["target_a"], ctx["feats_b"][idx], ctx["target_b"][idx])
    return softmax(ctx["feats_b"] @ w.T + b)


def first_reaching(curve, key="accuracy"):
    hit = [c["labels"] for c in curve if c[key] >= TARGET]
    return hit[0] if hit else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs", help="folder for annotate_learning_curve.png and .json")
    ap.add_argument("--correct", choices=["finetune", "fc"], default="finetune",
                    help="how the model is corrected after each round: fine-tune every layer, or refit fc only")
    ap.add_argument("--budgets", default="0,20,40,80,160", help="labels given so far at each round")
    ap.add_argument("--seeds", type=int, default=3, help="random draws of the random strategy")
    ap.add_argument("--finetune-epochs", type=int, default=3, help="passes over the anchor + labelled crops")
    ap.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate (AdamW)")
    ap.add_argument("--anchor", type=int, default=512, help="crops of A kept in every fine-tuning")
    ap.add_argument("--model", help="the base checkpoint (default: the demo's model)")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    t_start = time.perf_counter()

    _, table_a, crops_a, target_a = movie_set(EXP_A)
    work = tempfile.TemporaryDirectory()
    if args.model:
        from napari_yeast_phenotypes.core.network.checkpoint import load_classifier

        clf, model_path = load_classifier(args.model), Path(args.model)
    else:
        clf, model_path = demo_model(Path(work.name))
    _, table_b, crops_b, target_b = movie_set(EXP_B, MICROSCOPE_B)
    t0 = time.perf_counter()
    feats_a, feats_b = cached_features(model_path, clf.model, crops_a, crops_b)
    print(f"features of {len(crops_a)} + {len(crops_b)} crops in {time.perf_counter() - t0:.0f} s", flush=True)
    tracks = np.unique(table_b["track_id"])
    rng = np.random.default_rng(0)
    held_out = set(rng.choice(tracks, size=len(tracks) // 2, replace=False).tolist())
    is_test = table_b["track_id"].isin(held_out).to_numpy()
    ctx = {"table_b": table_b, "feats_a": feats_a, "target_a": target_a, "feats_b": feats_b, "target_b": target_b,
           "pool": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test),
           "w0": clf.model.fc.weight.detach().numpy().copy(), "b0": clf.model.fc.bias.detach().numpy().copy(),
           "model": clf.model, "crops_b": crops_b, "epochs": args.finetune_epochs, "lr": args.lr,
           "correct": finetune if args.correct == "finetune" else refit_correct}
    ctx["probs0"] = softmax(feats_b @ ctx["w0"].T + ctx["b0"])
    anchor = np.sort(rng.choice(len(crops_a), size=min(args.anchor, len(crops_a)), replace=False))
    ctx["anchor_crops"], ctx["anchor_target"] = crops_a[anchor], target_a[anchor]
    budgets = sorted({int(b) for b in args.budgets.split(",")} | {0})
    curves = {"queue": [run_curve("queue", 0, ctx, budgets)]}
    curves["random"] = [run_curve("random", s, ctx, budgets) for s in range(args.seeds)]
    base_acc_a = float((softmax(feats_a @ ctx["w0"].T + ctx["b0"]).argmax(1) == target_a).mean())
    summary = {
        "target": TARGET, "experiment_a": EXP_A, "experiment_b": EXP_B, "microscope_b": MICROSCOPE_B,
        "base_model": args.model or "the demo model", "correct": args.correct,
        "finetune": {"epochs": args.finetune_epochs, "lr": args.lr, "anchor_crops_of_a": int(len(anchor))},
        "crops_a": int(len(crops_a)), "pool_cell_frames": int(len(ctx["pool"])),
        "test_cell_frames": int(len(ctx["test"])), "base_accuracy_on_a": round(base_acc_a, 4),
        "start_accuracy_on_b": round(curves["queue"][0][0]["accuracy"], 4),
        "labels_to_target_queue": first_reaching(curves["queue"][0]),
        "labels_to_target_random": [first_reaching(c) for c in curves["random"]],
        "labels_to_target_queue_smoothed": first_reaching(curves["queue"][0], "accuracy_smoothed"),
        "labels_to_target_random_smoothed": [first_reaching(c, "accuracy_smoothed") for c in curves["random"]],
        "seconds": round(time.perf_counter() - t_start, 1), "curves": curves,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotate_learning_curve.json").write_text(json.dumps(summary, indent=1))
    plot(curves, out / "annotate_learning_curve.png", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "curves"}, indent=1))
    return 0


def plot(curves: dict, path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "accuracy", "per frame (the network)"),
                           (axes[1], "accuracy_smoothed", "after the track model")):
        q = curves["queue"][0]
        ax.plot([c["labels"] for c in q], [c[key] for c in q], "-o", ms=3, color="#d62728",
                label='"next cell to check"')
        xs = [c["labels"] for c in curves["random"][0]]
        ys = np.array([[c[key] for c in curve] for curve in curves["random"]])
        ax.plot(xs, ys.mean(axis=0), "-o", ms=3, color="#1f77b4", label=f"random (mean of {len(ys)})")
        ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color="#1f77b4", alpha=0.2)
        ax.axhline(TARGET, color="grey", ls="--", lw=1)
        ax.set_xlabel("labels given on experiment B")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on held-out tracks of B")
    axes[0].legend(loc="lower right", fontsize=8)
    how = ("every layer fine-tuned" if summary["correct"] == "finetune" else "fc refitted") + " after each round"
    fig.suptitle("Correcting the demo model for experiment B (another simulated experiment, seen through "
                 f"another microscope)\n{how}; the simulation's truth as the labels", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
