"""JSON read from files a person may have edited: a nesting too deep for Python is a plain ``ValueError``.

``json.loads`` of 200,000 nested brackets raises ``RecursionError``, which no ``except ValueError``
of a caller catches (a traceback); a structure deep enough to load may still break later code that
walks it recursively. The files of this package are a few levels deep, so text nested deeper than
:data:`MAX_DEPTH` is refused as not being one of them, through the ``ValueError`` every reader of
JSON already turns into its own plain message.
"""

from __future__ import annotations

import json

#: deepest nesting accepted (the package's files: run.json, track models, settings, under 10 levels)
MAX_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested more deeply than :data:`MAX_DEPTH` levels."""


def depth(obj) -> int:
    """Nesting depth of a loaded JSON value (a scalar is 0, ``[1]`` is 1), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            d += 1
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((v, d) for v in value if isinstance(v, (dict, list)))
    return deepest


def loads_json(text: str | bytes):
    """``json.loads(text)``; too deep a nesting raises :class:`TooDeep` (a ``ValueError``), never ``RecursionError``."""
    try:
        obj = json.loads(text)
    except RecursionError:
        raise TooDeep(f"nested more than {MAX_DEPTH} levels deep; not a file of napari-yeast-phenotypes") from None
    if depth(obj) > MAX_DEPTH:
        raise TooDeep(f"nested more than {MAX_DEPTH} levels deep; not a file of napari-yeast-phenotypes")
    return obj


__all__ = ["MAX_DEPTH", "TooDeep", "depth", "loads_json"]
