"""How unlike its training data a cell is: an out-of-distribution (OOD) score from the checkpoint's summary.

A network says *something* for every crop. Given a phase-contrast movie as fluorescence, or a
real movie when it learnt from simulations, it can call most cells Senescent with confidence 1.0
and say nothing else. The checkpoint therefore keeps a summary of its training crops, and each
classified cell gets a distance from it, measured three ways:

- **features**: the Mahalanobis distance of the crop's penultimate-layer features (the 2048
  numbers ``fc`` receives) to the nearest class mean, with one covariance shared by the classes
  (Lee et al. 2018), in the top principal directions of the within-class spread;
- **residual**: the part of the features outside those directions (what none of the training
  crops varied in), relative to its size on the training crops;
- **crop**: plain statistics of the crop's pixels (:data:`DESCRIPTORS`): intensity (mean, spread,
  percentiles, centre minus rim) and texture (pixel noise against the crop's contrast, gradient,
  neighbour correlation, the share of blanked pixels, skewness, kurtosis), standardised by the
  training crops' and compared with a Mahalanobis distance (shrunk covariance). The network
  squeezes the look of a crop into features that separate its classes; a real cell, noisy and
  among blanked neighbours, lands among them (the demo model puts 81 % of the real yeastvision
  movie in its Senescent class), while its pixels say at once that it is not a simulated cell.

Each distance is divided by its threshold: the 99.5th percentile of the distance on **held-out**
crops, measured by cross-fitting: the summary is fitted without one group of crops (a movie or
experiment, else a set of tracks) and that group's distances are measured, for every group in
turn; the final summary is then fitted on all crops. Crops of another movie than those fitted on
vary more than the validation crops of a movie fitted on: thresholds from the validation crops
alone (version 1) flagged 1-9 % of fresh simulated movies; cross-fitted ones 0-2 %
(NOTES-issue17.md). A cell's ``ood_score`` is the largest of the three ratios: above 1, it is
unlike the training data. About 1-2 % of held-out crops like the training ones are above 1; a
movie with many more is one the model did not learn (:func:`movie_report`).

The summary is a few plain tensors (about 1 MB) stored under the checkpoint's ``ood`` key.
Version 1 summaries (six intensity statistics, thresholds from validation crops) are still read
and scored as before; a model trained again gets a version 2 summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.descriptors import DESCRIPTORS, INTENSITY_STATS, SUMMARY_DESCRIPTORS, crop_descriptors
from ..errors import InputError

OOD_VERSION = 2


#: principal directions of the within-class feature spread kept for the Mahalanobis distance (at most)
N_COMPONENTS = 64


#: the held-out quantile each distance's threshold is set at
QUANTILE = 0.995


#: share of a movie's cells above threshold from which the model warns: several times the share
#: on movies like the training ones (1-2 % on held-out crops, 0-2 % on new simulated movies)
WARN_SHARE = 0.10


#: folds of the cross-fitted thresholds (at most; one per group when there are fewer groups)
MAX_FOLDS = 5


#: shrinkage of the descriptors' correlation matrix towards the identity
DESCRIPTOR_SHRINKAGE = 0.1


DISTANCES = ("features", "residual", "crop")


_ARRAY_KEYS = ("mean", "components", "variances", "class_means", "descriptor_mean", "descriptor_std", "thresholds")


@dataclass
class OODSummary:
    """What the checkpoint keeps of its training crops, and the thresholds chosen on held-out crops.

    ``descriptor_precision`` is the inverse of the standardised descriptors' shrunk correlation
    (version 2); ``None`` in a version 1 summary, whose crop distance is the root-mean-square of
    the standardised intensity statistics.
    """

    mean: np.ndarray  # (D,) feature mean
    components: np.ndarray  # (k, D) principal directions of the within-class spread
    variances: np.ndarray  # (k,) within-class variance along them
    class_means: np.ndarray  # (C, k) class means in those coordinates
    residual_scale: float  # mean squared residual outside them, on the fitting crops
    descriptor_mean: np.ndarray  # (m,)
    descriptor_std: np.ndarray  # (m,)
    thresholds: np.ndarray  # (3,) features, residual, crop: the held-out quantile
    quantile: float = QUANTILE
    n_fit: int = 0
    n_heldout: int = 0
    heldout_outside: float = float("nan")  # share of held-out crops with a score above 1
    heldout_kind: str = "validation crops"
    descriptor_names: tuple = SUMMARY_DESCRIPTORS
    descriptor_precision: np.ndarray | None = None  # (m, m)
    version: int = OOD_VERSION
    _columns: np.ndarray = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.descriptor_names = tuple(self.descriptor_names)
        unknown = [d for d in self.descriptor_names if d not in DESCRIPTORS]
        if unknown:
            raise ValueError(f"unknown crop statistics {unknown}")
        self._columns = np.asarray([DESCRIPTORS.index(d) for d in self.descriptor_names])

    # ------------------------------------------------------------------ scores
    def distances_from_descriptors(self, features: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
        """(N, 3) distances (features, residual, crop) from features and :func:`crop_descriptors` rows."""
        f = np.asarray(features, dtype=np.float64) - self.mean
        z = f @ self.components.T
        d2 = np.full(len(f), np.inf)
        for cm in self.class_means:  # one class at a time: no (N, C, k) array for a long movie
            d2 = np.minimum(d2, ((z - cm) ** 2 / self.variances).sum(axis=1))
        resid = (f * f).sum(axis=1) - (z * z).sum(axis=1)  # components are orthonormal
        e = (np.asarray(descriptors, dtype=np.float64)[:, self._columns] - self.descriptor_mean) / self.descriptor_std
        if self.descriptor_precision is None:
            crop = np.sqrt((e * e).mean(axis=1))
        else:
            crop = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", e, self.descriptor_precision, e), 0.0) / e.shape[1])
        return np.column_stack([np.sqrt(d2 / len(self.variances)),
                                np.sqrt(np.maximum(resid, 0.0) / self.residual_scale), crop])

    def distances(self, features: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """(N, 3) distances (features, residual, crop), each about 1 on typical training crops."""
        return self.distances_from_descriptors(features, crop_descriptors(crops))

    def score_from_descriptors(self, features: np.ndarray, descriptors: np.ndarray) -> np.ndarray:
        """:meth:`score` from cached descriptors (:class:`~.features.MovieFeatures`): no crop needed."""
        return (self.distances_from_descriptors(features, descriptors) / self.thresholds).max(axis=1)

    def score(self, features: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """(N,) ``ood_score``: the largest distance over its threshold; above 1 = unlike the training data."""
        return (self.distances(features, crops) / self.thresholds).max(axis=1)

    # ------------------------------------------------------------------ checkpoint
    def to_state(self) -> dict:
        """Plain tensors and values for the checkpoint (loadable with ``weights_only=True``)."""
        import torch

        t = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32)) for k in _ARRAY_KEYS}
        if self.descriptor_precision is not None:
            t["descriptor_precision"] = torch.from_numpy(np.ascontiguousarray(self.descriptor_precision,
                                                                              dtype=np.float32))
        if self.version < 2:  # a version 1 summary read from an older checkpoint is written back as it was
            t["intensity_mean"], t["intensity_std"] = t.pop("descriptor_mean"), t.pop("descriptor_std")
            return {"version": 1, **t, "residual_scale": float(self.residual_scale),
                    "quantile": float(self.quantile), "n_fit": int(self.n_fit), "n_heldout": int(self.n_heldout),
                    "heldout_outside": float(self.heldout_outside), "heldout_kind": str(self.heldout_kind),
                    "intensity_stats": list(self.descriptor_names)}
        return {"version": OOD_VERSION, **t,
                "residual_scale": float(self.residual_scale),
                "quantile": float(self.quantile), "n_fit": int(self.n_fit), "n_heldout": int(self.n_heldout),
                "heldout_outside": float(self.heldout_outside), "heldout_kind": str(self.heldout_kind),
                "descriptor_names": list(self.descriptor_names)}

    @classmethod
    def from_state(cls, d, where: str = "the checkpoint") -> OODSummary:
        """Read back :meth:`to_state`'s dict (version 1 or 2), checking shapes (a changed file is refused in words)."""
        version = d.get("version", 0) if isinstance(d, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > OOD_VERSION:
            raise InputError(f"{where}: its summary of the training data was written by a newer "
                             f"napari-yeast-phenotypes (format {version}; this version reads up to {OOD_VERSION}); "
                             "update the package")
        try:
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"its version is {version!r}, not a whole number")
            if not isinstance(d, dict):
                raise ValueError("not a summary this version can read")
            version = int(d.get("version", 0))
            if version > OOD_VERSION:
                raise ValueError(f"version {version} was written by a newer napari-yeast-phenotypes; update the "
                                 "package")
            if version < 1:
                raise ValueError("not a summary this version can read")
            keys = dict(zip(_ARRAY_KEYS, _ARRAY_KEYS))
            if version == 1:  # the first summaries: six intensity statistics, root-mean-square distance
                keys.update(descriptor_mean="intensity_mean", descriptor_std="intensity_std")
            arr = {k: np.asarray(d[src].numpy() if hasattr(d[src], "numpy") else d[src], dtype=np.float64)
                   for k, src in keys.items()}
            names = tuple(d.get("intensity_stats", INTENSITY_STATS)) if version == 1 else \
                tuple(d["descriptor_names"])
            precision = None
            if version >= 2:
                p = d["descriptor_precision"]
                precision = np.asarray(p.numpy() if hasattr(p, "numpy") else p, dtype=np.float64)
            k, dim = arr["components"].shape
            m = len(names)
            ok = (arr["mean"].shape == (dim,) and arr["variances"].shape == (k,) and arr["class_means"].ndim == 2
                  and arr["class_means"].shape[1] == k and arr["thresholds"].shape == (3,)
                  and arr["descriptor_mean"].shape == arr["descriptor_std"].shape == (m,)
                  and (precision is None or precision.shape == (m, m))
                  and all(np.isfinite(v).all() for v in arr.values())
                  and (precision is None or np.isfinite(precision).all())
                  and (arr["variances"] > 0).all() and (arr["thresholds"] > 0).all()
                  and (arr["descriptor_std"] > 0).all() and float(d["residual_scale"]) > 0)
            if not ok:
                raise ValueError("its arrays have shapes or values that do not fit together")
            return cls(**arr, residual_scale=float(d["residual_scale"]), quantile=float(d.get("quantile", QUANTILE)),
                       n_fit=int(d.get("n_fit", 0)), n_heldout=int(d.get("n_heldout", 0)),
                       heldout_outside=float(d.get("heldout_outside", float("nan"))),
                       heldout_kind=str(d.get("heldout_kind", "")), descriptor_names=names,
                       descriptor_precision=precision, version=version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{where}: its summary of the training data (key 'ood') is not readable ({exc}); "
                             "the file was changed or made by another program") from exc


def _principal_directions(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors (rows) of ``x``, the first ``k`` (at least), largest first.

    With fewer rows than columns (a few hundred labelled cells, 2048 features) through the rows'
    Gram matrix: the same directions, an eigenproblem of (n x n) instead of an SVD of (n x D),
    about 10 times faster.
    """
    n, d = x.shape
    if n >= d:
        _, sing, vt = np.linalg.svd(x, full_matrices=False)
        return sing, vt
    w, u = np.linalg.eigh(x @ x.T)
    order = np.argsort(w)[::-1]
    w, u = np.maximum(w[order], 0.0), u[:, order]
    sing = np.sqrt(w)
    m = int(min(max(k, 1), (sing > sing[0] * 1e-6).sum() if sing[0] > 0 else 1))
    vt = (x.T @ u[:, :m] / np.maximum(sing[:m], 1e-300)).T
    return sing, vt


def _fit(features: np.ndarray, targets: np.ndarray, descriptors: np.ndarray, n_classes: int,
         n_components: int = N_COMPONENTS) -> OODSummary:
    """The summary of one set of crops, thresholds left at 1."""
    f = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    mean = f.mean(axis=0)
    present = [c for c in range(n_classes) if (targets == c).any()]
    centred = f.copy()
    for c in present:
        centred[targets == c] -= f[targets == c].mean(axis=0)
    # principal directions of the shared within-class covariance
    sing, vt = _principal_directions(centred, n_components)
    dof = max(len(f) - len(present), 1)
    var = sing ** 2 / dof
    rank = int((var > var[0] * 1e-8).sum()) if len(var) and var[0] > 0 else 0
    # at most a third of the crops (directions estimated from few crops are noise) and half the dimensions
    # (the residual needs room: with every direction kept it is rounding noise)
    k = int(min(n_components, rank, max(1, len(f) // 3), max(1, f.shape[1] // 2)))
    if k < 1:
        raise InputError("the training crops' features do not vary; the summary of the training data cannot be made")
    comps, var = vt[:k], var[:k]
    var = var + 1e-3 * var.mean()  # a little shrinkage: the smallest kept directions are noisy
    z = (f - mean) @ comps.T
    class_means = np.zeros((n_classes, k))
    for c in range(n_classes):
        # a class absent from the training crops gets the global mean (it cannot make a crop look familiar)
        class_means[c] = z[targets == c].mean(axis=0) if (targets == c).any() else 0.0
    fm = f - mean
    resid = np.maximum((fm * fm).sum(axis=1) - (z * z).sum(axis=1), 0.0)
    cols = [DESCRIPTORS.index(d) for d in SUMMARY_DESCRIPTORS]
    de = np.asarray(descriptors, dtype=np.float64)[:, cols]
    d_mean, d_std = de.mean(axis=0), np.maximum(de.std(axis=0), 1e-3)
    e = (de - d_mean) / d_std
    corr = np.cov(e, rowvar=False) if len(e) > 1 else np.eye(len(cols))
    corr = (1 - DESCRIPTOR_SHRINKAGE) * np.atleast_2d(corr) + DESCRIPTOR_SHRINKAGE * np.eye(len(cols))
    return OODSummary(mean, comps, var, class_means, float(max(resid.mean(), 1e-12)), d_mean, d_std, np.ones(3),
                      n_fit=len(f), descriptor_names=SUMMARY_DESCRIPTORS, descriptor_precision=np.linalg.inv(corr))


def _finish(summary: OODSummary, held: np.ndarray, quantile: float, kind: str) -> OODSummary:
    summary.thresholds = np.maximum(np.quantile(held, quantile, axis=0), 1e-6)
    summary.quantile = quantile
    summary.n_heldout = len(held)
    summary.heldout_outside = float(((held / summary.thresholds).max(axis=1) > 1).mean())
    summary.heldout_kind = kind
    return summary


def fit_summary(features: np.ndarray, targets: np.ndarray, crops: np.ndarray, n_classes: int,
                heldout_features: np.ndarray, heldout_crops: np.ndarray, n_components: int = N_COMPONENTS,
                quantile: float = QUANTILE, heldout_kind: str = "validation crops") -> OODSummary:
    """Fit the summary on training crops' features and pick the thresholds on given held-out crops.

    Parameters
    ----------
    features, targets, crops
        Penultimate-layer features (N, D), classes (N,) and crops (N, 1, S, S) of the training crops.
    heldout_features, heldout_crops
        The same for crops not used to fit (validation crops): the thresholds are their quantile.

    See :func:`fit_summary_grouped` for thresholds by cross-fitting (what training uses).
    """
    if len(features) < 2 or len(heldout_features) < 1:
        raise InputError("the summary of the training data needs at least 2 training crops and 1 held-out crop")
    summary = _fit(features, targets, crop_descriptors(crops), n_classes, n_components)
    held = summary.distances(heldout_features, heldout_crops)
    return _finish(summary, held, quantile, heldout_kind)


def _folds(groups: np.ndarray | None, n: int, seed: int, max_folds: int) -> tuple[np.ndarray, str]:
    """A fold number per crop: whole groups per fold (one fold per group when there are few)."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        if len(uniq) >= 2:
            k = min(max_folds, len(uniq))
            fold_of_group = rng.permutation(len(uniq)) % k
            return fold_of_group[inv.ravel()], f"{k} folds of {len(uniq)} groups"
    k = min(max_folds, n)
    return rng.permutation(n) % k, f"{k} random folds"


def fit_summary_grouped(features: np.ndarray, targets: np.ndarray, descriptors: np.ndarray, n_classes: int,
                        groups=None, n_components: int = N_COMPONENTS, quantile: float = QUANTILE,
                        max_folds: int = MAX_FOLDS, seed: int = 0, what: str = "crops") -> OODSummary:
    """Fit the summary on all crops; thresholds from cross-fitted held-out distances.

    For each fold (whole ``groups``: movies, experiments or tracks), a summary fitted without
    it measures its distances; the thresholds are the ``quantile`` of those distances over all
    folds, and the summary kept is fitted on every crop. A crop of a movie the summary never saw
    is then judged by what such crops look like, not by crops of the movies it was fitted on.

    Parameters
    ----------
    features, targets, descriptors
        (N, D) features, (N,) class indices and (N, 13) :func:`crop_descriptors` of the crops.
    groups
        (N,) what each crop belongs to (movie, experiment or track); random folds when ``None``
        or a single group.
    """
    f = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    descriptors = np.asarray(descriptors, dtype=np.float64)
    if len(f) < 8:
        raise InputError("the summary of the training data needs at least 8 crops")
    fold, how = _folds(groups, len(f), seed, max_folds)
    held = np.zeros((len(f), 3))
    for i in np.unique(fold):
        out = fold == i
        part = _fit(f[~out], targets[~out], descriptors[~out], n_classes, n_components)
        held[out] = part.distances_from_descriptors(f[out], descriptors[out])
    summary = _fit(f, targets, descriptors, n_classes, n_components)
    return _finish(summary, held, quantile, f"{what}, each measured by a summary fitted without it ({how})")


def model_features(model, crops: np.ndarray, batch_size: int = 128, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, features)`` of crops through ``model`` (fp32, eval mode, one pass)."""
    import torch

    from .cpu_inference import inference_forward
    from .device import select_device

    device = select_device(device)
    model.eval().to(device)
    crops = np.asarray(crops, dtype=np.float32)
    sample = torch.from_numpy(np.ascontiguousarray(crops[:batch_size])).to(device)
    forward = inference_forward(model, device, sample, build=len(crops) >= 1024, precision="fp32")
    probs, feats = [], []
    with torch.inference_mode():
        for a in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[a:a + batch_size])).to(device)
            logits, f = forward.with_features(x)
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            feats.append(f.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(feats)


def summarise_training(model, train, val=None, device="cpu", max_crops: int = 4000,
                       seed: int = 0) -> OODSummary | None:
    """The summary of a trained model's training crops (``train`` and ``val``, CropSets), thresholds by cross-fitting.

    The training and validation crops are pooled (at most ``max_crops``, a seeded draw) and
    the thresholds measured by :func:`fit_summary_grouped` on folds of whole groups: the sets'
    ``groups`` (experiments, movies) when there are two or more, else their tracks, else random
    folds. ``None`` for a set too small to summarise (under 8 crops): such a model cannot say which
    movies are unlike its training data. Cost: one forward pass of the crops and 6 fits of a few
    seconds each.
    """
    parts = [train] + ([val] if val is not None and len(val) else [])
    n = sum(len(p) for p in parts)
    if len(train) < 8 or n < 8:
        return None
    crops = np.concatenate([p.crops for p in parts])
    targets = np.concatenate([p.targets for p in parts])

    def labels(attr, prefix):
        got = [getattr(p, attr, None) for p in parts]
        if any(g is None for g in got):
            return None
        return np.concatenate([np.char.add(f"{prefix}{i}:", np.asarray(g).astype(str)) for i, g in enumerate(got)])

    groups = labels("groups", "")
    if groups is not None:
        groups = np.asarray([g.split(":", 1)[1] for g in groups])  # an experiment is one group in both sets
    if groups is None or len(np.unique(groups)) < 2:
        groups = labels("tracks", "set")
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    if n > max_crops:
        idx = np.sort(rng.choice(n, max_crops, replace=False))
    _, feats = model_features(model, crops[idx], device=device)
    return fit_summary_grouped(feats, targets[idx], crop_descriptors(crops[idx]), len(train.class_names),
                               None if groups is None else groups[idx], seed=seed,
                               what="training and validation crops")


def summarise_labelled(features: np.ndarray, descriptors: np.ndarray, targets, class_names, groups=None,
                       seed: int = 0) -> OODSummary | None:
    """The summary of a live head's (or any model's) labelled cells, from cached features and descriptors.

    Parameters
    ----------
    features, descriptors
        (n, D) and (n, 13) of the labelled cell-frames (:class:`~.features.MovieFeatures` rows).
    targets
        (n,) class names; ``class_names`` are the model's classes (its ``fc`` outputs).
    groups
        (n,) tracks (or movies): the thresholds come from folds of whole tracks, so frames of a
        cell never judge the frames of the same cell.

    Returns ``None`` under 8 labelled cell-frames. Cost: a few fits of (n x 2048), well under a
    second for 500 labels.
    """
    names = list(class_names)
    keep = np.asarray([str(t) in names for t in targets])
    if keep.sum() < 8:
        return None
    y = np.asarray([names.index(str(t)) for t, k in zip(targets, keep) if k])
    g = None if groups is None else np.asarray(groups)[keep]
    return fit_summary_grouped(np.asarray(features)[keep], y, np.asarray(descriptors)[keep], len(names), g,
                               seed=seed, what="labelled cells")


def movie_report(scores: np.ndarray, track_ids=None, warn_share: float = WARN_SHARE,
                 summary: OODSummary | None = None) -> dict:
    """Per-movie figures of the cells' ``ood_score`` and, when many are outside, a warning in words."""
    scores = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(scores)
    if not ok.any():
        return {"available": False, "warning": None}
    outside = scores[ok] > 1
    share = float(outside.mean())
    report = {"available": True, "cells": int(ok.sum()), "outside": int(outside.sum()), "share_outside": share,
              "median_score": float(np.median(scores[ok])), "p90_score": float(np.quantile(scores[ok], 0.9)),
              "warn_share": warn_share}
    if summary is not None:
        report["expected_share_outside"] = summary.heldout_outside
        report["threshold_from"] = f"{summary.quantile:.1%} of {summary.n_heldout} {summary.heldout_kind}"
    if track_ids is not None:
        t = np.asarray(track_ids)[ok]
        per_track = {tid: bool(outside[t == tid].mean() > 0.5) for tid in np.unique(t)}
        report["tracks"] = len(per_track)
        report["tracks_mostly_outside"] = int(sum(per_track.values()))
    warning = None
    if share > warn_share:
        warning = (f"{share:.0%} of the cells of this movie ({int(outside.sum())} of {int(ok.sum())}) are unlike "
                   "the crops this model learnt from (ood_score above 1; on crops like its training ones about "
                   f"{(summary.heldout_outside if summary is not None else 1 - QUANTILE):.0%} are): its calls on "
                   "them cannot be trusted, however confident they look. Check that the image is the fluorescence "
                   "channel the model was trained on, with the same microscope settings; label some of these cells "
                   "(the Annotate dock offers them first) and train on them.")
    report["warning"] = warning
    return report


__all__ = ["DISTANCES", "OODSummary", "fit_summary", "fit_summary_grouped", "model_features", "movie_report",
           "summarise_labelled", "summarise_training"]
