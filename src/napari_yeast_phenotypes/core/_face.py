"""The small public face of each subpackage of ``core``: names loaded from their modules when first used.

A subpackage's ``__init__`` lists the names a user (or another part of the package) takes from it,
and the module each lives in; nothing is imported until a name is asked for. So
``from napari_yeast_phenotypes.core.network import load_classifier`` imports torch, but importing
``core.data`` for a crop function does not, and the subpackages can use each other without cycles.
"""

from __future__ import annotations

import importlib
import sys


def public_face(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose ``names`` map each name to its module
    (relative to the package, e.g. ``".crops"``)."""

    def __getattr__(name: str):
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # found at once the next time
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, sorted(names)
