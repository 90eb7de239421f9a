"""The network: the adapted ResNet50 (:mod:`.model`), its checkpoints (:mod:`.checkpoint`) and base weights
(:mod:`.base_weights`), where and in which precision it runs (:mod:`.device`, :mod:`.cpu_inference`), crops
to probabilities (:mod:`.predict`), training (:mod:`.train`, :mod:`.cpu_training`), judging it
(:mod:`.evaluation`, :mod:`.intervals`, :mod:`.evaluation_figures`) and how unlike its training data a cell
is (:mod:`.ood`). Everything here needs torch."""

from .._face import public_face

__getattr__, __dir__, __all__ = public_face(__name__, {
    "YeastResNet": ".model", "Classifier": ".model", "build_model": ".base_weights",
    "load_classifier": ".checkpoint", "save_checkpoint": ".checkpoint", "read_model_file": ".checkpoint",
    "select_device": ".device", "resolve_precision": ".device",
    "predict_crops": ".predict", "BatchStream": ".predict",
    "train": ".train", "train_iter": ".train", "crossval": ".crossval", "learning_curve": ".crossval",
    "metrics": ".evaluation", "OODSummary": ".ood", "movie_report": ".ood",
})
