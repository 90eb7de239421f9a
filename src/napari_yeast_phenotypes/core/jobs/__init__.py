"""The jobs: one function per unit of work, which the command line, the napari docks, the demo, the
benchmarks and Dask workers all call, each configured by one object (:mod:`..config`) and each
leaving a record of itself (``run.json``, :mod:`.record`):

- :func:`classify_movie` (and ``_iter``): one movie -> a result (and a result folder);
- :func:`train_model`, :func:`crossvalidate`, :func:`learning_curve_job`: from a curated set or folders of crops;
- :func:`curate_movie`: a movie's annotated cells into a curated set;
- :func:`fit_track_model_job`: the track model of a classified movie, from a person's labels.
"""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "ClassifyJob": ".classify", "classify_movie": ".classify", "classify_movie_iter": ".classify",
    "write_result": ".classify", "load_model": ".classify", "external_crops_warning": ".classify",
    "ood_report": ".classify",
    "train_model": ".training", "crossvalidate": ".training", "learning_curve_job": ".training",
    "load_crop_folder": ".training",
    "curate_movie": ".curate",
    "fit_track_model_job": ".track_fit", "read_result_folder": ".track_fit", "result_movie_id": ".track_fit",
    "labels_of_result": ".track_fit",
})
