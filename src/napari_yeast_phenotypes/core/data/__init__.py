"""Data: movies read and checked (:mod:`.movies`), the cell table along tracks (:mod:`.tracking`), the ONE
crop function (:mod:`.crops`), sets of crops in memory (:mod:`.cropset`) and on disk, made here (the
curated set, :mod:`.curated`) or elsewhere (:mod:`.cropfolder`), and simulated movies with ground
truth (:mod:`.simulate`). No torch here."""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "read_array": ".movies", "as_movie": ".movies",
    "build_cell_table": ".tracking", "Tracker": ".tracking", "labels_look_tracked": ".tracking",
    "CropSettings": ".crops", "movie_stats": ".crops", "extract_crops": ".crops", "movie_crops": ".crops",
    "CropSet": ".cropset", "load_image_folder": ".cropfolder",
    "CuratedSet": ".curated", "movie_identity": ".curated", "read_annotations": ".curated",
    "simulate_movie": ".simulate", "write_movie": ".simulate", "SyntheticMovie": ".simulate",
})
