"""An ageing experiment: many movies classified on Dask, into one folder with combined tables.

A SPEC names the movies: a CSV with one row per movie (``image``, ``labels``, an optional
``movie`` name and any other columns, e.g. ``strain``, ``condition``, ``position``) or a glob of
image files whose labels lie beside them. :func:`classify_many` runs
:func:`~napari_yeast_phenotypes.core.jobs.classify.classify_movie` once per movie, each into its own result
folder, and writes for the whole run::

    OUT/movies/<movie>/   cells.csv, tracks.csv, summary.png, run.json   (one per movie)
    OUT/cells.csv         every movie's cells, with the SPEC's columns in front
    OUT/tracks.csv        every movie's tracks, likewise
    OUT/failures.csv      movie, image, labels, reason: the movies that could not be classified
    OUT/movies.csv        the SPEC as read, with each movie's status
    OUT/experiment.json   how the run was made (version, config, model, workers, counts)

It is resumable and idempotent: a movie whose folder is complete (its ``run.json`` and the
files it lists, unchanged) and was made with this run's config, model and inputs (their content,
SHA-256) is skipped, so
a killed run restarted finishes only what is missing; the combined tables are rebuilt from the
movie folders at the end of every run, written whole or not at all, so they never hold a movie
twice. Movies made with another config, model or input are not replaced unless ``overwrite``; a
SPEC that lists one movie twice (the same image or labels content) is refused.

Where it runs: a local Dask cluster by default, whose workers x torch threads fit the cores
(:func:`plan_local`), or an existing ``dask.distributed`` scheduler (``scheduler=ADDRESS``, e.g.
one started by dask-jobqueue on SLURM or PBS), or, with ``workers=0``, this process alone. Each
worker process loads the model once (a cache keyed by the model file's SHA-256) and reuses it
for every movie it classifies.
"""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "classify_many": ".run", "ExperimentResult": ".run", "run_movie": ".worker", "cached_model": ".worker",
    "movies_bar": ".run",
    "read_spec": ".spec", "MovieSpec": ".spec", "find_labels": ".spec",
    "plan_local": ".cluster", "local_cluster": ".cluster", "connect": ".cluster", "usable_cpus": ".cluster",
    "read_combined": ".combine", "combine_tables": ".combine",
    "run_ageing": ".ageing", "read_tracks": ".ageing",
})
