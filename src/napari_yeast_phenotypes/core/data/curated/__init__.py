"""The curated set on disk: crops a person vouched for, browsable and ImageFolder compatible.

Layout::

    <root>/settings.json                   crop settings and class names of the whole set
    <root>/manifest.csv                    one row per cell-frame, with provenance (the source of truth)
    <root>/history.jsonl                   every change, newest last (an append-only record)
    <root>/<split>/<class>/<crop_id>.tif   the crops (float32, 40x40, normalised per movie)
    <root>/_marked/<mark>/<crop_id>.tif    cells marked "unsure" or "bad_segmentation": kept, not trained on
    <root>/.curated.lock                   the writers' lock (never deleted)

Identity. A cell-frame is ``(movie_id, frame, label)``; ``movie_id`` is a hash of the movie's
image and labels (:func:`~.manifest.movie_identity`), so two movies that happen to share a folder
and file name are still two movies, and the same movie opened from another path is still the same
one. The path, the experiment name and who annotated are provenance. Crop ids are made from the
movie id, frame and label (plus a readable experiment prefix), so they are unique by construction.
All frames of one track go to one split (the first label of a track decides), so frames of one
cell never land on both sides of a train/validation split.

Safety. Writers (the viewer's Annotate dock, ``yeast-phenotypes curate``, two viewers on one set)
serialise on a file lock (:class:`~napari_yeast_phenotypes.core.files.locking.FileLock`: works across
processes and on network file systems with locking) and read the manifest again under the lock
before each change, so no writer loses another's rows. Every file is written to a temporary name
and renamed into place; new crops are written before the manifest that names them, old ones are
moved away only after it stops naming them. A crash at any moment leaves a valid manifest; files
it does not name are moved to ``<root>/.orphans`` when the set is next opened, removed crops go to
``<root>/.removed``: nothing is deleted.

Undo and redo belong to the :class:`CuratedSet` object that made the change (one viewer session,
one command): undoing never reverts another writer's work, and a change that another writer has
since overwritten is not undone (the message says so).

Modules: :mod:`.store` (:class:`CuratedSet`: opening, reading, queries), :mod:`.manifest` (the
manifest file and the names in it), :mod:`.writer` (crops in, moved and out), :mod:`.history`
(undo, redo, ``history.jsonl``), :mod:`.annotations` (annotation tables and their crops).
"""

from ..._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "CuratedSet": ".store", "LOCK_FILE": ".store", "AddReport": ".writer", "Change": ".history",
    "movie_identity": ".manifest", "identity_from_hashes": ".manifest", "cell_key": ".manifest",
    "normalise_split": ".manifest", "normalise_mark": ".manifest", "check_class_names": ".manifest",
    "MARKS": ".manifest", "SPLITS": ".manifest", "MIN_PER_CLASS": ".manifest", "MANIFEST_COLUMNS": ".manifest",
    "LEGACY_COLUMNS": ".manifest", "MARK_FOLDER": ".manifest",
    "read_annotations": ".annotations", "crops_for_annotations": ".annotations",
})
