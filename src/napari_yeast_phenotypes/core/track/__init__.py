"""Along the track: smoothing each track's calls with Senescent absorbing and a person's labels as fixed
evidence (:mod:`.timeline`), the track model fitted on labelled tracks (:mod:`.track_model`, its estimators
in :mod:`.track_estimates`), the queue of cells to check (:mod:`.review`) and the annotation session that
keeps labels, curated set and smoothing in step (:mod:`.annotation`). No torch here."""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "TimelineSettings": ".timeline", "add_timeline": ".timeline", "track_summary": ".timeline",
    "smooth_track_posterior": ".timeline",
    "fit_track_model": ".track_model", "fit_em": ".track_estimates", "load_track_model": ".track_model_file",
    "save_track_model": ".track_model_file", "TrackModelFit": ".track_model",
    "review_queue": ".review", "AnnotationSession": ".annotation",
})
