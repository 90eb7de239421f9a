"""The napari plugin: sample data, the classify dock, overlays, the plot dock and the CSV writer.

The only part of the package that imports napari and Qt. Nothing here imports torch at module
import: the classifier is loaded inside the worker thread, so napari starts fast. The widgets
translate layers to core calls and results back to layers; they hold no science.
"""
