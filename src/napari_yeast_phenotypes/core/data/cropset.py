"""A set of crops with their classes: what training, evaluation and the curated set exchange.

Kept apart from ``train`` so that reading a curated set does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: crop pixels beyond this (in either sign) are not data: the package's crops are normalised to about 0 (background)
#: to 1 (the movie's 99th percentile), integer crops from elsewhere likewise; a pixel of 3e38 overflows the first
#: convolution and ends in "learning rate too high"
CROP_VALUE_LIMIT = 1e6


@dataclass
class CropSet:
    """Crops (N, 1, S, S) float32 with their class indices, and where each came from."""

    crops: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]
    paths: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # e.g. experiment or track, for grouped cross-validation
    notes: list[str] = field(default_factory=list)
    #: where the crops come from: ``{"kind": "curated", ...}`` for crops this package made,
    #: ``{"kind": "external", ...}`` (with how they were resized and normalised) for others
    origin: dict = field(default_factory=dict)
    #: the cell (track) each crop belongs to, e.g. ``"<movie_id>:<track_id>"``; ``None`` when unknown
    tracks: np.ndarray | None = None

    def __post_init__(self):
        self.crops = np.ascontiguousarray(self.crops, dtype=np.float32)
        self.targets = np.asarray(self.targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def check_finite(self, where: str = "the crops") -> None:
        """Refuse crops holding NaN, infinity or pixels beyond :data:`CROP_VALUE_LIMIT`, naming their files.

        Such a crop is not data: set to 0 it would be trained on as a blank cell of its class, and
        kept as it is it turns the loss NaN in the first batch that holds it, which reads as a
        learning rate too high.
        """
        flat = self.crops.reshape(len(self.crops), -1)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(np.abs(flat) <= CROP_VALUE_LIMIT).all(axis=1)) if flat.size else np.zeros(0, int)
        if bad.size:
            names = [str(self.paths[i]) if self.paths else f"#{i}" for i in bad[:5]]
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            raise InputError(f"{bad.size} of the {len(self)} crops of {where} hold NaN or infinite pixels: "
                             f"{', '.join(names)}{more} (or absurdly large ones, beyond +-{CROP_VALUE_LIMIT:g}; this "
                             "package's crops run from about 0 to a few). A crop must be numbers of a fluorescence "
                             "image; take these out of the set (or make them again from their movie) before training")

    def counts(self) -> dict[str, int]:
        return {c: int((self.targets == i).sum()) for i, c in enumerate(self.class_names)}

    def subset(self, idx) -> CropSet:
        idx = np.asarray(idx)
        return CropSet(self.crops[idx], self.targets[idx], self.class_names,
                       [self.paths[i] for i in idx] if self.paths else [],
                       None if self.groups is None else self.groups[idx], list(self.notes), dict(self.origin),
                       None if self.tracks is None else self.tracks[idx])

    def restrict(self, class_names) -> CropSet:
        """The crops of ``class_names`` only, their targets renumbered in that order (a model of the classes a
        lab has labelled: the others are not labelled yet)."""
        keep_names = tuple(class_names)
        index = {c: i for i, c in enumerate(keep_names)}
        old = [index.get(c, -1) for c in self.class_names]
        mapped = np.asarray(old, dtype=np.int64)[self.targets] if len(self.targets) else self.targets
        sub = self.subset(np.flatnonzero(mapped >= 0))
        sub.targets = mapped[mapped >= 0]
        sub.class_names = keep_names
        return sub

    @staticmethod
    def concat(sets: list[CropSet]) -> CropSet:
        """One set of the crops of ``sets`` (same classes), in order: cross-validation pools a curated set's
        splits."""
        first = sets[0]
        if any(tuple(s.class_names) != tuple(first.class_names) for s in sets):
            raise ValueError("crop sets of different classes cannot be pooled")
        cat = lambda name: (None if any(getattr(s, name) is None for s in sets)
                            else np.concatenate([np.asarray(getattr(s, name), dtype=object) for s in sets]))
        return CropSet(np.concatenate([s.crops for s in sets]), np.concatenate([s.targets for s in sets]),
                       first.class_names, [p for s in sets for p in s.paths], cat("groups"),
                       list(dict.fromkeys(n for s in sets for n in s.notes)), dict(first.origin), cat("tracks"))
