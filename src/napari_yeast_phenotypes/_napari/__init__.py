"""The napari plugin: sample data, the Classify, Annotate and Train docks, overlays, the plot dock, the writer.

The only part of the package that imports napari and Qt. Nothing here imports torch at module
import: the classifier is loaded inside the worker thread, so napari starts fast. The docks
translate layers to core calls and results back to layers, share one session state per viewer
(:mod:`._state`), and hold no science.
"""

#: the plugin's name in napari (its npe2 manifest)
PLUGIN = "napari-yeast-phenotypes"
