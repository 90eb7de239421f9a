"""The ``yeast-phenotypes`` command: demo, simulate, classify, train, curate, crossval.

Every sub-command calls the same core functions as the napari plugin. User errors are printed as
one plain message (what is wrong, what to do) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _progress_bar(desc: str, unit: str = "frame"):
    """A tqdm bar driven by ``(done, total)`` callbacks."""
    from tqdm import tqdm

    state = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _train_progress(desc: str = "training"):
    from tqdm import tqdm

    state = {}

    def update(p: dict) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=p["epochs"] * p.get("steps", 1), desc=desc, unit="batch",
                                      dynamic_ncols=True)
        if p.get("done_epoch"):
            msg = f"epoch {p['epoch']}/{p['epochs']} loss {p['train_loss']:.3f}"
            if "val_balanced_accuracy" in p:
                msg += f" val acc {p['val_accuracy']:.3f} bal {p['val_balanced_accuracy']:.3f}"
            bar.set_postfix_str(msg)
            if p["epoch"] == p["epochs"]:
                bar.close()
        else:
            bar.update(1)

    return update


def _load_movie(args):
    from .core.io import read_array

    return read_array(args.image, lazy=True), read_array(args.labels, lazy=True)


def _relink_arg(args):
    return {"yes": True, "no": False, "auto": "auto"}[args.relink]


def cmd_simulate(args) -> int:
    from .core.io import prepare_output_dir
    from .core.simulate import simulate_movie, write_movie

    out = prepare_output_dir(args.out, ["image.tif", "labels.tif", "truth.csv"], args.overwrite)
    movie = simulate_movie(n_frames=args.frames, size=args.size, n_cells=args.cells, seed=args.seed)
    paths = write_movie(movie, out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}: {movie.image.shape[0]} frames, "
          f"{movie.truth['label'].nunique()} cells")
    return 0


def cmd_classify(args) -> int:
    from .core.export import write_tables
    from .core.io import as_movie, prepare_output_dir
    from .core.model import load_classifier
    from .core.pipeline import analyse
    from .core.plots import save_summary

    names = ["cells.csv", "tracks.csv", "summary.png"]
    image, labels = _load_movie(args)
    image, labels = as_movie(image, labels, channel=args.channel)
    class_names = args.class_names.split(",") if args.class_names else None
    clf = load_classifier(args.model, class_names, trust=args.trust_model_file)
    out = prepare_output_dir(args.out, names, args.overwrite)
    res = analyse(image, labels, clf, relink=_relink_arg(args), batch_size=args.batch_size,
                  chunk_frames=args.chunk_frames, device=args.device, progress=_progress_bar("classifying"))
    if res.cells.attrs.get("relinked"):
        print("the label ids were not tracked across frames: cells were relinked by overlap")
    paths = write_tables(res.cells, res.tracks, out, clf.class_names)
    save_summary(res.cells, res.tracks, out / "summary.png", clf.class_names, title=str(args.image))
    print(f"{len(res.cells)} cell-frames in {len(res.tracks)} tracks; "
          f"{int(res.tracks['senescence_frame'].notna().sum())} tracks become senescent")
    print(f"wrote {paths['cells']}, {paths['tracks']}, {out / 'summary.png'}")
    return 0


def _train_config(args):
    from .core.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       base_weights=args.base_weights, trainable=args.trainable,
                       augment=not args.no_augment, device=args.device)


def load_crop_folder(path, class_names):
    """A curated set's split (manifest-backed) or a plain ImageFolder, with the crop settings its
    crops were made with (a curated set's own; the defaults for a plain folder)."""
    from .core.crops import CropSettings
    from .core.curated import CuratedSet
    from .core.train import load_image_folder

    path = Path(path)
    if (path.parent / "manifest.csv").exists() and (path.parent / "settings.json").exists():
        cs = CuratedSet(path.parent)
        return cs.load_split(path.name), cs.crop_settings
    return load_image_folder(path, class_names), CropSettings()


def _class_names(args) -> tuple[str, ...]:
    from .phenotypes import CLASS_NAMES

    return tuple(args.class_names.split(",")) if args.class_names else CLASS_NAMES


def _print_metrics(title: str, m: dict) -> None:
    print(f"{title}: accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f} (n={m['n']})")
    print(f"  {'class':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>6}")
    for c, v in m["per_class"].items():
        fmt = lambda x: "   -" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"  {c:<16}{fmt(v['precision']):>10}{fmt(v['recall']):>8}{fmt(v['f1']):>8}{v['support']:>6}")


def cmd_train(args) -> int:
    from .core.io import InputError
    from .core.train import train

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; choose another --out or pass --overwrite to replace it")
    train_set, settings = load_crop_folder(args.train, _class_names(args))
    val_set = None
    if args.val:
        val_set, val_settings = load_crop_folder(args.val, _class_names(args))
        if val_settings != settings:
            raise InputError(f"{args.val} holds crops made with other crop settings than {args.train}; "
                             "train and validate on crops made the same way")
    for note in train_set.notes:
        print(f"note: {note}")
    print(f"training on {len(train_set)} crops " + ", ".join(f"{k} {v}" for k, v in train_set.counts().items()))
    if val_set is None:
        print("note: no --val set: the figures below are on the training data, which flatter. Keep a "
              "hand-curated validation set of difficult cells from other experiments.")
    clf = train(train_set, val_set, _train_config(args), settings, out=out, progress=_train_progress())
    if clf.metadata.get("validation"):
        _print_metrics("validation (best epoch)", clf.metadata["validation"])
    print(f"wrote {out}")
    return 0


def cmd_crossval(args) -> int:
    from .core.io import atomic_write
    from .core.train import crossval

    data, settings = load_crop_folder(args.data, _class_names(args))
    res = crossval(data, args.folds, _train_config(args), settings, progress=_train_progress("fold"))
    for i, m in enumerate(res["folds"]):
        print(f"fold {i + 1}: accuracy {m['accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f} (n={m['n']})")
    _print_metrics(f"{args.folds}-fold cross-validation, pooled", res["pooled"])
    if args.out:
        with atomic_write(args.out) as fh:
            json.dump(res, fh, indent=2)
        print(f"wrote {args.out}")
    return 0


def cmd_curate(args) -> int:
    from .core.curated import CuratedSet, read_annotations
    from .core.io import as_movie
    from .core.curated import crops_for_annotations

    image, labels = as_movie(*_load_movie(args), channel=args.channel)
    ann = read_annotations(args.annotations)
    cs = CuratedSet(args.out)  # a new set takes the default crop settings, an existing one keeps its own
    crops, rows = crops_for_annotations(image, labels, ann, cs.crop_settings, source=Path(args.image).name,
                                        experiment=args.experiment or Path(args.image).resolve().parent.name)
    added, skipped = cs.add(crops, rows, annotator=args.annotator)
    print(f"added {added} crops to {args.out}" + (f", skipped {skipped} already there" if skipped else ""))
    print(cs.counts().to_string())
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, overwrite=args.overwrite, retrain=args.retrain, seed=args.seed,
                    epochs=args.epochs)


def _common_model_args(p):
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-weights", default="imagenet", help="imagenet | none | PATH to a ResNet50 state dict")
    p.add_argument("--trainable", default="conv1,fc", help="layers to train: conv1,fc (default, as in the study) or all")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/intensity changes")
    p.add_argument("--class-names", help="comma-separated class names, in model output order")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="yeast-phenotypes",
        description="Phenotypes of budding-yeast cells along tracks: simulate, classify, curate, train, crossval, demo.")
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate, curate, train a quick model, classify, report accuracy")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--retrain", action="store_true", help="train anew even if a cached demo model exists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write a synthetic movie with ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--cells", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("classify", help="classify every cell of a segmented movie")
    p.add_argument("--image", required=True, help="(T,Y,X) or (Y,X) TIFF or .npy")
    p.add_argument("--labels", required=True, help="instance labels of the same shape")
    p.add_argument("--model", required=True, help="checkpoint (.pt) or bare ResNet50 state dict")
    p.add_argument("--out", required=True)
    p.add_argument("--relink", choices=["auto", "yes", "no"], default="auto", nargs="?", const="yes",
                   help="relink label ids across frames by overlap (default auto: when they look untracked)")
    p.add_argument("--channel", type=int, help="channel of a (T,C,Y,X) image to classify")
    p.add_argument("--class-names", help="class names of a bare state dict, in output order")
    p.add_argument("--trust-model-file", action="store_true",
                   help="allow a whole pickled model; this runs any code in the file: only for files you trust")
    p.add_argument("--batch-size", type=int, default=128, help="crops per forward pass (128: measured best here)")
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("train", help="train the adapted ResNet50 on crops (ImageFolder layout)")
    p.add_argument("--train", required=True, help="folder of <class>/<crop>.tif|png (or a curated set's split)")
    p.add_argument("--val", help="validation folder, same layout; never augmented")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--overwrite", action="store_true")
    _common_model_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("crossval", help="grouped k-fold cross-validation on a crop set")
    p.add_argument("--data", required=True, help="crop folder (a curated split groups by experiment)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", help="write the metrics as JSON")
    _common_model_args(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("curate", help="add annotated cells of a movie to a curated set")
    p.add_argument("--image", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--annotations", required=True, help="CSV: frame, label, phenotype [, split, experiment]")
    p.add_argument("--out", required=True, help="curated set folder (created, or grown if it exists)")
    p.add_argument("--experiment", help="experiment name for provenance (default: the image's folder name)")
    p.add_argument("--annotator", default="")
    p.add_argument("--channel", type=int)
    p.set_defaults(func=cmd_curate)
    return ap


def main(argv=None) -> int:
    from .core.io import InputError
    from .core.model import WeightsUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, WeightsUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files written so far are complete", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
