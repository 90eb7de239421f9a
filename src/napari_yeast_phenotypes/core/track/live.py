"""The live model of an annotation session: after every label a head is refitted on the curated labels and the
whole movie re-predicted and smoothed again, in about a second (what ilastik's live update does for a
random forest on fixed features, here for the network's own features, along tracks).

:class:`LiveSession` joins an :class:`~.annotation.AnnotationSession` (the labels, the curated set, the
cell table) and a :class:`~napari_yeast_phenotypes.core.network.live_head.LiveModel` (the movie's cached
features and the head). The head calls only the classes that have labels; the others are "not
labelled yet" (probability 0 in the session's table, never a call). Labels of other movies in the
curated set count too: their crops' features are computed once, when the live session starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import InputError
from .annotation import AnnotationSession, Outcome

#: labels of at least this many classes before the head can be fitted
MIN_CLASSES = 2


class LiveSession:
    """A live model over an annotation session (see the module docstring).

    Parameters
    ----------
    session
        The annotation session (its cells are updated in place by :meth:`update`).
    live
        The movie's :class:`~napari_yeast_phenotypes.core.network.live_head.LiveModel`.
    extra
        ``(features, class names)`` of labelled crops of other movies of the curated set, or ``None``.
    """

    def __init__(self, session: AnnotationSession, live, extra=None):
        self.session, self.live, self.extra = session, live, extra
        self.last = None  # the last LiveUpdate
        self.dirty_ood = False
        self.ood_report: dict | None = None  # the movie's ood report under the live model's summary (refresh_ood)

    @classmethod
    def start(cls, session: AnnotationSession, base, *, progress: Callable[[int, int], None] | None = None,
              other_movies: bool = True) -> LiveSession:
        """The movie's features (from the cache, or one forward pass of every crop), the labelled crops of
        other movies of the curated set, and the live model: the slow part, once (run it in a worker)."""
        from ..network.features import crop_features, movie_features
        from ..network.live_head import LiveModel

        features = movie_features(session.image, session.labels, base, stats=session.stats,
                                  movie_id=session.movie_id, progress=progress)
        extra = None
        if other_movies:
            cs = session.curated
            rows = cs.trainable()
            rows = rows[(rows["movie_id"] != session.movie_id) & rows["phenotype"].isin(session.class_names)]
            if len(rows):
                import tifffile

                crops = np.stack([tifffile.imread(cs.root / p) for p in rows["path"]])[:, None].astype(np.float32)
                extra = (crop_features(base.model, crops), rows["phenotype"].to_numpy(dtype=str))
        return cls(session, LiveModel(features, session.cells, base, timeline=session.timeline), extra)

    def labels(self):
        """The person's class labels of this movie (``frame, label, phenotype``)."""
        return self.session.labels_table()[["frame", "label", "phenotype"]]

    def classes_labelled(self) -> list[str]:
        names = set(self.labels()["phenotype"])
        if self.extra is not None:
            names |= set(self.extra[1])
        return [c for c in self.session.class_names if c in names]

    def update(self) -> Outcome:
        """Refit the head, re-predict and re-smooth the whole movie; the rows whose class changed."""
        from ..network.live_head import probabilities_with_all

        have = self.classes_labelled()
        if len(have) < MIN_CLASSES:
            return Outcome(message=f"the live model waits for labels of {MIN_CLASSES} classes (labelled so far: "
                                   f"{', '.join(have) or 'none'})")
        t0 = time.perf_counter()
        up = self.live.update(self.labels(), self.extra)
        probs = probabilities_with_all(up.probabilities, up.class_names, self.session.class_names)
        changed = self.session.adopt(probs, up.cells)
        self.last, self.dirty_ood = up, True
        seconds = time.perf_counter() - t0
        note = f"; not labelled yet: {', '.join(up.not_labelled)}" if up.not_labelled else ""
        return Outcome(changed, f"live model: {len(changed)} cell-frames changed class ({seconds:.2f} s){note}")

    @property
    def not_labelled(self) -> tuple[str, ...]:
        return tuple(self.last.not_labelled) if self.last is not None else tuple(self.session.class_names)

    def refresh_ood(self) -> np.ndarray | None:
        """The cells' ``ood_score`` under the head's own summary of its labelled cells (when the labels
        settle: 0.1-1.4 s); ``None`` under 8 labels. Cells like the labelled ones are no longer flagged.
        ``ood_report`` is then the movie's report under that summary (as ``run.json``'s ``ood``), its warning
        gone when few cells are unlike the labelled ones."""
        summary = self.live.summary(self.labels()) if self.live.head is not None else None
        if summary is None:
            return None
        from ..network.ood import movie_report

        scores = self.live.ood_scores(summary)
        self.session.cells["ood_score"] = scores.astype(np.float64)
        self.session._queue = None
        self.dirty_ood = False
        self.ood_report = movie_report(scores, self.session.cells["track_id"].to_numpy(), summary=summary)
        self.ood_report["summary_of"] = "the live model's labelled cells"
        return scores

    def classifier(self):
        """The live model as a :class:`~napari_yeast_phenotypes.core.network.model.Classifier` (the base model's
        backbone, the head as ``fc`` over the labelled classes, its own summary of the labelled cells), to save
        as an ordinary checkpoint that ``classify`` and ``classify-many`` use."""
        if self.live.head is None:
            raise InputError(f"no live model yet: label cells of at least {MIN_CLASSES} classes first")
        clf = self.live.classifier(self.labels(), extra=self.extra)
        clf.metadata = {**clf.metadata, "not_labelled": list(self.not_labelled),
                        "live_head_from": {"movie": self.session.movie_path or self.session.experiment,
                                           "curated_set": str(self.session.curated.root)}}
        return clf


__all__ = ["MIN_CLASSES", "LiveSession"]
