"""The curate job: a movie's annotated cells into a curated set, each run recorded in the set's ``runs/``."""

from __future__ import annotations

import os
from pathlib import Path

from .record import RunRecord, _as_input, write_record

RUNS_FOLDER = "runs"


def curate_movie(image, labels, annotations, out, *, experiment: str | None = None, annotator: str = "",
                 channel: int | None = None):
    """Add a movie's annotated cells to the curated set in ``out``; returns ``(set, report)``.

    The movie is known in the set by its content
    (:func:`~napari_yeast_phenotypes.core.data.curated.manifest.movie_identity`); its path and ``experiment`` are
    kept as provenance. ``report`` is an :class:`~napari_yeast_phenotypes.core.data.curated.writer.AddReport`
    (added, already there, conflicts).
    """
    from ..data.curated.annotations import crops_for_annotations, read_annotations
    from ..data.curated.manifest import movie_identity
    from ..data.curated.store import CuratedSet
    from ..data.movies import as_movie

    image_path = Path(image) if isinstance(image, (str, os.PathLike)) else None
    inputs: dict = {}
    image, labels = as_movie(_as_input(image, "image", inputs), _as_input(labels, "labels", inputs), channel=channel)
    ann = read_annotations(annotations)
    record = RunRecord("curate", {"experiment": experiment, "annotator": annotator, "channel": channel},
                       inputs={**inputs, "annotations": str(annotations)})
    cs = CuratedSet(out)  # a new set takes the default crop settings, an existing one keeps its own
    source = image_path.name if image_path else "movie"
    crops, rows = crops_for_annotations(image, labels, ann, cs.crop_settings, source=source,
                                        experiment=experiment or (image_path.resolve().parent.name if image_path
                                                                  else ""),
                                        movie_id=movie_identity(image, labels),
                                        movie_path=str(image_path.resolve()) if image_path else "")
    report = cs.add(crops, rows, annotator=annotator)
    stamp = record.data["started"].replace(":", "").replace("+0000", "Z")
    write_record(Path(out) / RUNS_FOLDER / f"{stamp}-curate-{rows['movie_id'].iloc[0][:8]}.json",
                 record.finish(added=report.added, already=report.already, relabelled=report.relabelled,
                               conflicts=len(report.conflicts), movie_id=str(rows["movie_id"].iloc[0])))
    return cs, report


__all__ = ["curate_movie"]
