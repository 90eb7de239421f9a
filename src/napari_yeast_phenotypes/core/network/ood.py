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
- **intensity**: plain statistics of the crop's pixels (mean, spread, percentiles, centre minus
  rim), standardised by the training crops': they catch a wrong channel or normalisation.

Each distance is divided by its threshold: the 99th percentile of the distance on **held-out**
crops (the validation crops, never used to fit the summary). A cell's ``ood_score`` is the
largest of the three ratios: above 1, it is unlike the training data. On held-out crops like the
training ones, about 1-3 % are above 1 (the three thresholds together); a movie with many more
is one the model did not learn (:func:`movie_report`).

The summary is a few plain tensors (about 1 MB) stored under the checkpoint's ``ood`` key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

OOD_VERSION = 1
#: principal directions of the within-class feature spread kept for the Mahalanobis distance
N_COMPONENTS = 64
#: the held-out quantile each distance's threshold is set at
QUANTILE = 0.99
#: share of a movie's cells above threshold from which the model warns: about 4 times the share
#: on movies like the training ones (2-3 % on held-out crops and on a new simulated movie)
WARN_SHARE = 0.10
INTENSITY_STATS = ("mean", "std", "p05", "p50", "p95", "centre_minus_rim")
DISTANCES = ("features", "residual", "intensity")


def crop_intensity_stats(crops: np.ndarray) -> np.ndarray:
    """(N, 6) per crop: mean, standard deviation, 5th/50th/95th percentile, centre mean minus rim mean."""
    x = np.asarray(crops, dtype=np.float32)
    x = x.reshape(len(x), x.shape[-2], x.shape[-1])
    s = x.shape[-1]
    flat = x.reshape(len(x), -1)
    q = np.percentile(flat, [5, 50, 95], axis=1).T if len(x) else np.zeros((0, 3))
    a, b = s // 4, s - s // 4
    centre = x[:, a:b, a:b].mean(axis=(1, 2))
    rim_mask = np.ones((s, s), bool)
    rim_mask[a:b, a:b] = False
    rim = x[:, rim_mask].mean(axis=1)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), q, centre - rim]).astype(np.float64)


@dataclass
class OODSummary:
    """What the checkpoint keeps of its training crops, and the thresholds chosen on held-out crops."""

    mean: np.ndarray  # (D,) feature mean
    components: np.ndarray  # (k, D) principal directions of the within-class spread
    variances: np.ndarray  # (k,) within-class variance along them
    class_means: np.ndarray  # (C, k) class means in those coordinates
    residual_scale: float  # mean squared residual outside them, on the fitting crops
    intensity_mean: np.ndarray  # (m,)
    intensity_std: np.ndarray  # (m,)
    thresholds: np.ndarray  # (3,) features, residual, intensity: the held-out quantile
    quantile: float = QUANTILE
    n_fit: int = 0
    n_heldout: int = 0
    heldout_outside: float = float("nan")  # share of held-out crops with a score above 1
    heldout_kind: str = "validation crops"

    # ------------------------------------------------------------------ scores
    def distances(self, features: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """(N, 3) distances (features, residual, intensity), each about 1 on typical training crops."""
        f = np.asarray(features, dtype=np.float64) - self.mean
        z = f @ self.components.T
        d2 = ((z[:, None, :] - self.class_means[None]) ** 2 / self.variances).sum(axis=2).min(axis=1)
        resid = (f * f).sum(axis=1) - (z * z).sum(axis=1)  # components are orthonormal
        s = (crop_intensity_stats(crops) - self.intensity_mean) / self.intensity_std
        return np.column_stack([np.sqrt(d2 / len(self.variances)),
                                np.sqrt(np.maximum(resid, 0.0) / self.residual_scale),
                                np.sqrt((s * s).mean(axis=1))])

    def score(self, features: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """(N,) ``ood_score``: the largest distance over its threshold; above 1 = unlike the training data."""
        return (self.distances(features, crops) / self.thresholds).max(axis=1)

    # ------------------------------------------------------------------ checkpoint
    def to_state(self) -> dict:
        """Plain tensors and values for the checkpoint (loadable with ``weights_only=True``)."""
        import torch

        t = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32))
             for k in ("mean", "components", "variances", "class_means", "intensity_mean", "intensity_std",
                       "thresholds")}
        return {"version": OOD_VERSION, **t, "residual_scale": float(self.residual_scale),
                "quantile": float(self.quantile), "n_fit": int(self.n_fit), "n_heldout": int(self.n_heldout),
                "heldout_outside": float(self.heldout_outside), "heldout_kind": str(self.heldout_kind),
                "intensity_stats": list(INTENSITY_STATS)}

    @classmethod
    def from_state(cls, d, where: str = "the checkpoint") -> OODSummary:
        """Read back :meth:`to_state`'s dict, checking shapes (a changed file is refused in words)."""
        version = d.get("version", 0) if isinstance(d, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > OOD_VERSION:
            raise InputError(f"{where}: its summary of the training data was written by a newer "
                             f"napari-yeast-phenotypes (format {version}; this version reads up to {OOD_VERSION}); "
                             "update the package")
        try:
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"its version is {version!r}, not a whole number")
            if not isinstance(d, dict) or int(d.get("version", 0)) > OOD_VERSION:
                raise ValueError("not a summary this version can read")
            arr = {k: np.asarray(d[k].numpy() if hasattr(d[k], "numpy") else d[k], dtype=np.float64)
                   for k in ("mean", "components", "variances", "class_means", "intensity_mean", "intensity_std",
                             "thresholds")}
            k, dim = arr["components"].shape
            ok = (arr["mean"].shape == (dim,) and arr["variances"].shape == (k,) and arr["class_means"].ndim == 2
                  and arr["class_means"].shape[1] == k and arr["thresholds"].shape == (3,)
                  and arr["intensity_mean"].shape == arr["intensity_std"].shape == (len(INTENSITY_STATS),)
                  and all(np.isfinite(v).all() for v in arr.values())
                  and (arr["variances"] > 0).all() and (arr["thresholds"] > 0).all()
                  and (arr["intensity_std"] > 0).all() and float(d["residual_scale"]) > 0)
            if not ok:
                raise ValueError("its arrays have shapes or values that do not fit together")
            return cls(**arr, residual_scale=float(d["residual_scale"]), quantile=float(d.get("quantile", QUANTILE)),
                       n_fit=int(d.get("n_fit", 0)), n_heldout=int(d.get("n_heldout", 0)),
                       heldout_outside=float(d.get("heldout_outside", float("nan"))),
                       heldout_kind=str(d.get("heldout_kind", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{where}: its summary of the training data (key 'ood') is not readable ({exc}); "
                             "the file was changed or made by another program") from exc


def fit_summary(features: np.ndarray, targets: np.ndarray, crops: np.ndarray, n_classes: int,
                heldout_features: np.ndarray, heldout_crops: np.ndarray, n_components: int = N_COMPONENTS,
                quantile: float = QUANTILE, heldout_kind: str = "validation crops") -> OODSummary:
    """Fit the summary on training crops' features and pick the thresholds on held-out crops.

    Parameters
    ----------
    features, targets, crops
        Penultimate-layer features (N, D), classes (N,) and crops (N, 1, S, S) of the training crops.
    heldout_features, heldout_crops
        The same for crops not used to fit (validation crops): the thresholds are their quantile.
    """
    f = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(f) < 2 or len(heldout_features) < 1:
        raise InputError("the summary of the training data needs at least 2 training crops and 1 held-out crop")
    mean = f.mean(axis=0)
    present = [c for c in range(n_classes) if (targets == c).any()]
    centred = f.copy()
    for c in present:
        centred[targets == c] -= f[targets == c].mean(axis=0)
    # principal directions of the shared within-class covariance
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    dof = max(len(f) - len(present), 1)
    var = sing ** 2 / dof
    k = int(min(n_components, int((var > var[0] * 1e-8).sum()) if len(var) else 0))
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
    stats = crop_intensity_stats(crops)
    summary = OODSummary(mean, comps, var, class_means, float(max(resid.mean(), 1e-12)), stats.mean(axis=0),
                         np.maximum(stats.std(axis=0), 1e-6), np.ones(3), quantile, len(f), len(heldout_features),
                         heldout_kind=heldout_kind)
    held = summary.distances(heldout_features, heldout_crops)
    summary.thresholds = np.maximum(np.quantile(held, quantile, axis=0), 1e-6)
    summary.heldout_outside = float((summary.score(heldout_features, heldout_crops) > 1).mean())
    return summary


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
    """The summary of a trained model's training crops (``train``, a CropSet), thresholds on ``val``.

    Without a validation set, a quarter of the training crops (whole groups: tracks, movies, where
    the set says) is held out for the thresholds. At most ``max_crops`` training crops are used
    (a seeded draw), so the cost stays a few seconds. ``None`` for a set too small to summarise
    (under 8 crops): such a model cannot say which movies are unlike its training data.
    """
    if len(train) < 8:
        return None
    rng = np.random.default_rng(seed)
    idx = np.arange(len(train))
    kind = "validation crops"
    if val is None or len(val) == 0:
        groups = np.asarray(train.groups) if getattr(train, "groups", None) is not None else idx
        uniq = rng.permutation(np.unique(groups))
        held_groups = uniq[: max(1, len(uniq) // 4)]
        held = np.isin(groups, held_groups)
        if held.all() or not held.any():
            held = rng.random(len(idx)) < 0.25
        held_crops = train.crops[held]
        idx = idx[~held]
        kind = "a quarter of the training crops, held out by group (no validation set)"
    else:
        held_crops = val.crops
    if len(idx) > max_crops:
        idx = np.sort(rng.choice(idx, max_crops, replace=False))
    if len(held_crops) > max_crops:
        held_crops = held_crops[np.sort(rng.choice(len(held_crops), max_crops, replace=False))]
    crops = train.crops[idx]
    _, feats = model_features(model, crops, device=device)
    _, held_feats = model_features(model, held_crops, device=device)
    return fit_summary(feats, train.targets[idx], crops, len(train.class_names), held_feats, held_crops,
                       heldout_kind=kind)


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
        report["threshold_from"] = f"{QUANTILE:.0%} of {summary.n_heldout} {summary.heldout_kind}"
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


__all__ = ["DISTANCES", "INTENSITY_STATS", "OODSummary", "crop_intensity_stats", "fit_summary", "model_features",
           "movie_report", "summarise_training"]
