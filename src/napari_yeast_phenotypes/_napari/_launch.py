"""``yeast-phenotypes annotate IMAGE LABELS``: napari opened on a movie with the Classify and Annotate docks.

As micro-sam's annotator commands do: one command from a terminal to a viewer ready to work in. With
a model the movie is classified at once; with a curated set too, annotating starts as soon as the
classification is there.
"""

from __future__ import annotations

from pathlib import Path

from ._dock import open_dock
from ._state import state_of


def open_annotator(image, labels, *, model=None, curated=None, track_model=None, channel: int | None = None,
                   viewer=None, sync: bool = False):
    """Open ``image`` and ``labels`` (files) in a napari viewer (a new one unless given) with the plugin's docks.

    Parameters
    ----------
    model
        A checkpoint: the movie is classified at once (in the background unless ``sync``).
    curated
        A curated set's folder: annotating starts on the classification (needs ``model``).
    track_model
        A track model file for the classification.
    channel
        The reporter's channel of a (T, C, Y, X) image.

    Returns
    -------
    The viewer, and the Classify and Annotate docks.
    """
    import napari

    from ..core.data.movies import as_movie, read_array

    img, lab = as_movie(read_array(image, lazy=True), read_array(labels, lazy=True), channel=channel)
    viewer = viewer if viewer is not None else napari.Viewer()
    image_layer = viewer.add_image(img, name=Path(image).stem)
    viewer.add_labels(lab, name=Path(labels).stem)
    state = state_of(viewer)
    if model is not None:
        state.set_model(model)
    if track_model is not None:
        state.set_track_model(track_model)
    if curated is not None:
        state.set_curated_set(curated)
    classify = open_dock(viewer, "ClassifyWidget", "Classify phenotypes")
    annotate = open_dock(viewer, "AnnotateWidget", "Annotate phenotypes")
    classify.reset_choices()
    classify.image_choice.value = image_layer
    if model is not None:
        if curated is not None:
            annotate.start_when_classified()
        classify.run(sync=sync)
    return viewer, classify, annotate


__all__ = ["open_annotator"]
