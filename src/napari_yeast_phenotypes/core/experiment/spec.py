"""The SPEC of an experiment: which movies (image, labels, a name) and what is known of each (strain,
condition, position...), from a CSV or a glob of image files whose labels lie beside them."""

from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError

MOVIES_DIR = "movies"


RESERVED = ("movie", "image", "labels")


#: file names tried beside an image for its labels when a SPEC is a glob
LABEL_NAMES = ("labels{suffix}", "masks{suffix}", "{stem}_labels{suffix}", "{stem}_masks{suffix}",
               "{stem}_label{suffix}", "{stem}_mask{suffix}")


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class MovieSpec:
    """One movie of an experiment: its name (also its folder's), files and the SPEC's other columns."""

    movie: str
    image: Path
    labels: Path
    meta: dict = field(default_factory=dict)


def _safe_name(name: str) -> str:
    safe = _SAFE.sub("_", str(name)).strip("._")
    return safe or "movie"


def _names_from_paths(paths: list[Path]) -> list[str]:
    """Movie names from image paths: their path below the common folder, without the suffix (and
    without the file name when every image has the same one, e.g. ``A/image.tif, B/image.tif``)."""
    if len(paths) == 1:
        return [paths[0].stem]
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    same_stem = len({p.name for p in resolved}) == 1
    names = []
    for p in resolved:
        rel = p.parent.relative_to(root) if same_stem else p.relative_to(root).with_suffix("")
        names.append("-".join(rel.parts) or p.stem)
    return names


def find_labels(image: Path, labels_name: str | None = None) -> Path | None:
    """The labels file beside ``image``: ``labels_name`` (a name or template with ``{stem}``,
    ``{suffix}``) or the first of :data:`LABEL_NAMES` that exists."""
    names = [labels_name] if labels_name else list(LABEL_NAMES)
    for pattern in names:
        cand = image.parent / pattern.format(stem=image.stem, suffix=image.suffix, name=image.name)
        if cand.exists() and cand.resolve() != image.resolve():
            return cand
    return None


def _unique(movies: list[MovieSpec]) -> list[MovieSpec]:
    seen: dict[str, MovieSpec] = {}
    for m in movies:
        if m.movie in seen:
            raise InputError(f"two movies of the SPEC get the name {m.movie!r} ({seen[m.movie].image} and {m.image}); "
                             "give each row its own name in a 'movie' column")
        seen[m.movie] = m
    return movies


def _spec_from_table(df: pd.DataFrame, base: Path, where: str) -> list[MovieSpec]:
    df = df.rename(columns=lambda c: str(c).strip())
    missing = [c for c in ("image", "labels") if c not in df.columns]
    if missing:
        raise InputError(f"{where} lacks the column(s) {', '.join(missing)}; a SPEC needs one row per movie "
                         "with 'image' and 'labels' (file names, relative to the SPEC's folder) and may have "
                         "'movie' (a name) and any other columns (strain, condition, position, ...)")
    if not len(df):
        raise InputError(f"{where} names no movie; add one row per movie")
    meta_cols = [c for c in df.columns if c not in RESERVED]
    images, labels = [], []
    for i, (img, lab) in enumerate(zip(df["image"].astype(str).str.strip(), df["labels"].astype(str).str.strip()),
                                   start=2):  # row 1 is the header
        if not img or not lab:
            raise InputError(f"{where}, row {i}: both 'image' and 'labels' are needed")
        images.append(Path(img) if Path(img).is_absolute() else base / img)
        labels.append(Path(lab) if Path(lab).is_absolute() else base / lab)
    if "movie" in df.columns and (df["movie"].astype(str).str.strip() != "").all():
        names = [_safe_name(n) for n in df["movie"].astype(str).str.strip()]
    else:
        names = [_safe_name(n) for n in _names_from_paths(images)]
    movies = [MovieSpec(n, img, lab, {c: df[c].iloc[k] for c in meta_cols})
              for k, (n, img, lab) in enumerate(zip(names, images, labels))]
    return _unique(movies)


def read_spec(spec, labels_name: str | None = None) -> list[MovieSpec]:
    """The movies of a SPEC.

    Parameters
    ----------
    spec
        A CSV file (one row per movie: ``image``, ``labels``, optional ``movie``, any other
        columns; relative paths are relative to the CSV's folder), a ``pandas.DataFrame`` of the
        same columns, a glob of image files (``"movies/*/image.tif"``) or a list of
        :class:`MovieSpec`.
    labels_name
        For a glob: the labels' file name beside each image, or a template such as
        ``"{stem}_masks{suffix}"`` (default: the first of :data:`LABEL_NAMES` found).
    """
    if isinstance(spec, (list, tuple)) and all(isinstance(m, MovieSpec) for m in spec):
        return _unique(list(spec))
    if isinstance(spec, pd.DataFrame):
        return _spec_from_table(spec.astype(str), Path.cwd(), "the SPEC table")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise InputError(f"SPEC {path} not found; give a CSV (one row per movie) or a glob of image files")
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        return _spec_from_table(df, path.resolve().parent, str(path))
    matches = sorted(Path(p) for p in _glob.glob(text, recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise InputError(f"no file matches {text!r}; give a CSV SPEC or a glob of image files "
                         "(quote it so that the shell does not expand it)")
    pairs = {}
    for img in files:
        lab = find_labels(img, labels_name)
        if lab is not None:
            pairs[img.resolve()] = (img, lab)
    label_files = {lab.resolve() for _, lab in pairs.values()}
    pairs = {k: v for k, v in pairs.items() if k not in label_files}  # a glob that caught the labels too
    lonely = [str(p) for p in files if p.resolve() not in pairs and p.resolve() not in label_files]
    if lonely:
        tried = labels_name or ", ".join(LABEL_NAMES)
        raise InputError(f"no labels found beside {lonely[0]}" + (f" (and {len(lonely) - 1} more)" if len(lonely) > 1
                                                                   else "")
                         + f"; looked for {tried}. Name them with --labels-name, or use a CSV SPEC")
    imgs = [v[0] for v in pairs.values()]
    names = [_safe_name(n) for n in _names_from_paths(imgs)]
    return _unique([MovieSpec(n, img, lab, {}) for n, (img, lab) in zip(names, pairs.values())])


__all__ = ["MovieSpec", "find_labels", "read_spec"]
