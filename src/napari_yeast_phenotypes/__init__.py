"""napari-yeast-phenotypes: phenotype classification of budding-yeast cells along tracks.

The package import is light: no napari, no Qt, no torch. Import the parts you need, e.g.
``from napari_yeast_phenotypes.core import pipeline``.
"""

__version__ = "0.1.0"

from .phenotypes import CLASS_NAMES, PHENOTYPES

__all__ = ["CLASS_NAMES", "PHENOTYPES", "__version__"]
