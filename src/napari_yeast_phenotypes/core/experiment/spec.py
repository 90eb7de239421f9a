"""The SPEC of an experiment: which movies (image, labels, a name) and what is known of each (strain,
condition, position...), from a CSV or a glob of image files whose labels lie beside them."""

from __future__ import annotations

import glob as _glob
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError

MOVIES_DIR = "movies"


RESERVED = ("movie", "image", "labels")


#: the columns classify-many adds to the SPEC's in ``movies.csv``: a SPEC column may not have their names
STATUS_COLUMNS = ("status", "reason", "seconds", "folder")


#: the longest movie name (it names a folder; file systems allow 255 bytes)
MAX_NAME = 120


#: the placeholders a ``labels_name`` template may hold
TEMPLATE_FIELDS = ("stem", "suffix", "name")


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
    note: str = ""  # how the name was made, when it is not the one the SPEC gave


def _safe_name(name: str) -> str:
    safe = _SAFE.sub("_", str(name))[:MAX_NAME].strip("._")
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


def check_labels_name(labels_name: str | None) -> None:
    """Refuse a ``labels_name`` template that cannot be filled (unknown or broken ``{...}`` fields)."""
    if labels_name is None:
        return
    hint = ("a file name, or a template with {stem} (the image's name without its suffix), {suffix} (such as "
            ".tif) or {name}; write {{ and }} for braces in the name")
    if not str(labels_name).strip():
        raise InputError(f"--labels-name is empty; give {hint}")
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(labels_name) if f is not None]
        bad = [f for f in fields if f not in TEMPLATE_FIELDS]
        extra = [f for _, f, spec, conv in string.Formatter().parse(labels_name) if f is not None and (spec or conv)]
    except ValueError as exc:
        raise InputError(f"--labels-name {labels_name!r} cannot be read as a template ({exc}); give {hint}") from None
    if bad or extra:
        raise InputError(f"--labels-name {labels_name!r} holds the field(s) "
                         f"{', '.join('{' + f + '}' for f in (bad or extra))}; give {hint}")


def find_labels(image: Path, labels_name: str | None = None) -> Path | None:
    """The labels file beside ``image``: ``labels_name`` (a name or template with ``{stem}``,
    ``{suffix}``, ``{name}``) or the first of :data:`LABEL_NAMES` that exists."""
    check_labels_name(labels_name)
    names = [labels_name] if labels_name else list(LABEL_NAMES)
    for pattern in names:
        cand = image.parent / pattern.format(stem=image.stem, suffix=image.suffix, name=image.name)
        if cand.exists() and cand.resolve() != image.resolve():
            return cand
    return None


def _unique(movies: list[MovieSpec]) -> list[MovieSpec]:
    """``movies`` if every name can name a folder of its own (also where case is not told apart)."""
    seen: dict[str, MovieSpec] = {}
    for m in movies:
        if not isinstance(m.movie, str) or _safe_name(m.movie) != m.movie or len(m.movie) > MAX_NAME:
            raise InputError(f"the movie name {m.movie!r} cannot name a folder: use up to {MAX_NAME} letters, digits, "
                             "'.', '_' and '-', not starting with '.' or '_'")
        key = m.movie.casefold()
        if key in seen:
            raise InputError(f"two movies of the SPEC get the name {m.movie!r} ({seen[key].image} and {m.image})"
                             + ("" if seen[key].movie == m.movie else f", or names that differ only in case "
                                f"({seen[key].movie!r})")
                             + "; give each row its own name in a 'movie' column")
        seen[key] = m
    return movies


def _derived_names(images: list[Path], taken: set[str], among: list[Path] | None = None) -> list[str]:
    """Names from the images' paths (relative to the common folder of ``among``, default ``images``),
    made unique among themselves and against ``taken`` (casefolded)."""
    out = []
    among = list(among) if among is not None else list(images)
    paths = dict(zip(among, _names_from_paths(among))) if among else {}
    for n in (_safe_name(paths.get(p, p.stem)) for p in images):
        name, k = n, 2
        while name.casefold() in taken:
            name, k = f"{n[:MAX_NAME - 6]}-{k}", k + 1
        taken.add(name.casefold())
        out.append(name)
    return out


def _spec_from_table(df: pd.DataFrame, base: Path, where: str) -> list[MovieSpec]:
    df = df.rename(columns=lambda c: str(c).strip())
    missing = [c for c in ("image", "labels") if c not in df.columns]
    if missing and len(df.columns) == 1 and any(sep in str(df.columns[0]) for sep in (";", "\t")):
        sep = "semicolons" if ";" in str(df.columns[0]) else "tabs"
        raise InputError(f"{where} is separated by {sep}, not commas (its header reads as one column "
                         f"{str(df.columns[0])[:60]!r}); save it as comma-separated CSV (a spreadsheet's "
                         "'CSV UTF-8 (comma delimited)') and run again")
    if missing:
        raise InputError(f"{where} lacks the column(s) {', '.join(missing)}; a SPEC needs one row per movie "
                         "with 'image' and 'labels' (file names, relative to the SPEC's folder) and may have "
                         "'movie' (a name) and any other columns (strain, condition, position, ...)")
    if not len(df):
        raise InputError(f"{where} names no movie; add one row per movie")
    taken = [c for c in df.columns if c in STATUS_COLUMNS]
    if taken:
        raise InputError(f"{where} has the column(s) {', '.join(taken)}, which classify-many writes itself into "
                         f"movies.csv ({', '.join(STATUS_COLUMNS)}); rename them in the SPEC (e.g. "
                         f"{taken[0]}_spec)")
    df = df.apply(lambda col: col.str.strip())
    meta_cols = [c for c in df.columns if c not in RESERVED]
    images, labels = [], []
    for i, (img, lab) in enumerate(zip(df["image"], df["labels"]), start=2):  # row 1 is the header
        if not img or not lab:
            raise InputError(f"{where}, row {i}: both 'image' and 'labels' are needed")
        images.append(Path(img) if Path(img).is_absolute() else base / img)
        labels.append(Path(lab) if Path(lab).is_absolute() else base / lab)
    given = list(df["movie"]) if "movie" in df.columns else [""] * len(df)
    names: list[str | None] = [None] * len(df)
    notes = [""] * len(df)
    taken_names: set[str] = set()
    for k, g in enumerate(given):
        if g:
            names[k] = _safe_name(g)
            taken_names.add(names[k].casefold())
            if names[k] != g:
                notes[k] = f"the movie {g!r} is named {names[k]} (a folder name takes letters, digits, '.', '_', '-')"
    blank = [k for k, n in enumerate(names) if n is None]
    if blank:
        derived = _derived_names([images[k] for k in blank], taken_names, images)
        for k, n in zip(blank, derived):
            names[k] = n
            if "movie" in df.columns:
                notes[k] = f"row {k + 2} of {where} gives no movie name: named {n} after its image"
    movies = [MovieSpec(n, img, lab, {c: df[c].iloc[k] for c in meta_cols}, notes[k])
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
    from ..files.tables import read_user_csv

    check_labels_name(labels_name)
    glob_only = (f"--labels-name {labels_name!r} is for a glob SPEC (it names the labels beside each image); a "
                 "CSV SPEC names each movie's labels in its 'labels' column: leave out --labels-name")
    if isinstance(spec, (list, tuple)) and all(isinstance(m, MovieSpec) for m in spec):
        if labels_name is not None:
            raise InputError(glob_only)
        return _unique(list(spec))
    if isinstance(spec, pd.DataFrame):
        if labels_name is not None:
            raise InputError(glob_only)
        return _spec_from_table(spec.fillna("").astype(str), Path.cwd(), "the SPEC table")
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise InputError(f"SPEC {path} not found; give a CSV (one row per movie) or a glob of image files")
        if labels_name is not None:
            raise InputError(glob_only)
        df = read_user_csv(path, "the SPEC")
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
    names = _derived_names(imgs, set())
    return _unique([MovieSpec(n, img, lab, {}) for n, (img, lab) in zip(names, pairs.values())])


__all__ = ["MovieSpec", "check_labels_name", "find_labels", "read_spec"]
