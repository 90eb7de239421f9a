"""The eight phenotype classes: the one source of truth for names, codes and colours.

The canonical order (index 0..7) is used in checkpoints, CSV columns and colours unless a
checkpoint names its own classes.

The colours are painted at :data:`OVERLAY_OPACITY` over a (usually dark grey) fluorescence image,
so each must differ clearly from grey once blended: the hues are those of PHENOTYPES.md; Senescent
("grey") is a light grey, as a mid grey blended over a grey image looks unpainted
(``tests/napari/test_layers.py`` checks the contrast of every class on dark greys).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phenotype:
    """One phenotype class."""

    index: int
    name: str
    code: str
    colour: str  # hex RGB
    description: str


PHENOTYPES: tuple[Phenotype, ...] = (
    Phenotype(0, "Nuclear", "N", "#1f5fff", "one bright compact body, dim cytoplasm"),
    Phenotype(1, "Aggregate", "A", "#e8262b", "one small, very bright focus"),
    Phenotype(2, "Cytoplasm", "C", "#2ca02c", "signal spread over the whole cell"),
    Phenotype(3, "Triple", "T", "#ff8c00", "three distinct foci"),
    Phenotype(4, "BinaryAggregate", "B", "#e040e0", "two distinct foci"),
    Phenotype(5, "Fragmented", "F", "#17d4e0", "many small, dim, scattered fragments"),
    Phenotype(6, "Circular", "O", "#f2e01a", "a ring inside the cell, dark centre"),
    Phenotype(7, "Senescent", "S", "#d2d2d2", "old or dead cell: enlarged, irregular, granular"),
)

#: opacity of the painted classes in the viewer: the cell's texture stays visible underneath
OVERLAY_OPACITY = 0.6

CLASS_NAMES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES)
N_CLASSES = len(PHENOTYPES)
SENESCENT = CLASS_NAMES.index("Senescent")
COLOURS: dict[str, str] = {p.name: p.colour for p in PHENOTYPES}
CODES: dict[str, str] = {p.name: p.code for p in PHENOTYPES}


def hex_to_rgba(colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """Convert ``#rrggbb`` to an RGBA tuple of floats in [0, 1]."""
    c = colour.lstrip("#")
    return (int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255, alpha)


def class_index(name: str, class_names: tuple[str, ...] | list[str] = CLASS_NAMES) -> int:
    """Index of a class given its name or one-letter code (case-insensitive).

    Raises
    ------
    ValueError
        If the name matches no class; the message lists the valid names.
    """
    key = str(name).strip().lower()
    for i, n in enumerate(class_names):
        if n.lower() == key:
            return i
    if tuple(class_names) == CLASS_NAMES:
        for p in PHENOTYPES:
            if p.code.lower() == key:
                return p.index
    raise ValueError(
        f"unknown phenotype {name!r}; valid names are: {', '.join(class_names)}"
        + (" (or their one-letter codes)" if tuple(class_names) == CLASS_NAMES else "")
    )


def class_colours(class_names) -> list[tuple]:
    """RGBA colours in class order (the canonical colours; grey shades for unknown classes)."""
    out = []
    for i, c in enumerate(class_names):
        out.append(hex_to_rgba(COLOURS[c]) if c in COLOURS else (0.3 + 0.05 * i, 0.3, 0.3, 1.0))
    return out
