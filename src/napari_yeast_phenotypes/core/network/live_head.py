"""The live head: a new ``fc`` refitted on a person's labels after each label, the movie re-predicted at once.

The network's features of every cell-frame of the open movie are computed once and cached
(:mod:`.features`); after each label, a linear head is fitted on the labelled cells' features
and applied to all of them, and the tracks are smoothed again (:func:`~.timeline.add_timeline`).
Nothing runs through the network again, so a round takes milliseconds to a fraction of a second
(``benchmarks/live_head.py``).

Only the classes that have labels are predicted. A head is a ``Linear(2048, K)`` over the ``K``
labelled classes (in the base model's class order): the same kind of layer as the network's ``fc``,
so :meth:`LiveHead.to_classifier` puts it on the model's backbone and
:func:`~.model.save_checkpoint` saves it as an ordinary checkpoint whose ``class_names`` are the
labelled classes; ``yeast-phenotypes classify`` and ``classify-many`` use it unchanged, with the
same probabilities as the live head (up to float rounding). The classes without labels are "not
labelled yet" (:attr:`LiveUpdate.not_labelled`).

Which head (``benchmarks/real_cells.py``, NOTES-issue17.md): multinomial logistic regression on
standardised features (standardised with the whole movie's features, which are known before any
label), class-balanced, with an L2 penalty, fitted by L-BFGS. The standardisation is folded into
the weights, so the head is a plain linear layer on the raw features. Nearest-class-mean
prototypes and shrinkage LDA (also linear layers) are here for the measurements.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError

HEAD_KINDS = ("logistic", "prototype", "lda")
#: the L2 penalty of the logistic head, per standardised feature (chosen on the real GFP crops, NOTES-issue17.md)
DEFAULT_PENALTY = 100.0
#: a head needs labels of at least this many classes
MIN_CLASSES = 2


def labelled_classes(targets, class_names=()) -> tuple[str, ...]:
    """The classes that have at least one label: those of ``class_names`` in its order, then any others sorted."""
    present = {str(t) for t in targets}
    known = [c for c in class_names if c in present]
    return tuple(known + sorted(present - set(known)))


@dataclass
class Standardiser:
    """Per-feature centre and scale: features are used as ``(x - centre) / scale``."""

    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Standardiser:
        """From a set of features (the whole movie's): mean and standard deviation, dead features kept finite."""
        x = np.asarray(features)
        centre = np.zeros(x.shape[1])
        sq = np.zeros(x.shape[1])
        for a in range(0, len(x), 4096):  # in blocks: no float64 copy of a long movie's features
            part = x[a:a + 4096].astype(np.float64)
            centre += part.sum(axis=0)
            sq += (part * part).sum(axis=0)
        centre /= max(len(x), 1)
        sd = np.sqrt(np.maximum(sq / max(len(x), 1) - centre * centre, 0.0))
        floor = 1e-3 * float(sd.mean()) if sd.size and sd.mean() > 0 else 1e-6
        return cls(centre, np.maximum(sd, floor))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.centre) / self.scale


@dataclass
class LiveHead:
    """A linear head over the labelled classes: ``logits = features @ weight.T + bias`` on the raw features.

    Attributes
    ----------
    class_names
        The labelled classes, in the base model's order: the head's outputs.
    weight, bias
        (K, D) and (K,) float32: a ``Linear(D, K)``'s parameters.
    counts
        Labels per class it was fitted on.
    kind, params
        How it was fitted (:func:`fit_head`).
    """

    class_names: tuple[str, ...]
    weight: np.ndarray
    bias: np.ndarray
    counts: dict = field(default_factory=dict)
    kind: str = "logistic"
    params: dict = field(default_factory=dict)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float32 logits, as the layer computes them (float32 product)."""
        return np.asarray(features, dtype=np.float32) @ self.weight.T + self.bias

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, K) softmax probabilities (float64) over the labelled classes."""
        z = self.logits(features).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def fc_layer(self):
        """The head as a ``torch.nn.Linear(D, K)``."""
        import torch

        layer = torch.nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(self.weight, dtype=np.float32)))
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(self.bias, dtype=np.float32)))
        return layer

    def to_classifier(self, base, ood=None, metadata: dict | None = None):
        """A :class:`~.model.Classifier`: ``base``'s backbone with this head as ``fc``, its classes the labelled ones.

        The backbone's weights are copied (``base`` is not changed). ``ood`` is the head's own
        summary of its training data (:func:`~.ood.summarise_features`); ``metadata`` is added
        to what the checkpoint records (how the head was fitted, the base model's classes).
        """
        from .model import Classifier, YeastResNet

        model = YeastResNet(len(self.class_names), getattr(base.model, "trainable", ("conv1", "fc")))
        state = {k: v for k, v in base.model.state_dict().items() if not k.startswith("fc.")}
        fc = self.fc_layer()
        state["fc.weight"], state["fc.bias"] = fc.weight.detach(), fc.bias.detach()
        model.load_state_dict(state, strict=True)
        model.eval()
        # the base model's training figures are not this model's: only where its crops came from is kept
        meta = {**{k: v for k, v in base.metadata.items() if k in ("crop_origin", "base_weights")},
                "live_head": {"kind": self.kind, "params": self.params, "labels_per_class": self.counts,
                              "base_class_names": list(base.class_names)},
                **(metadata or {})}
        return Classifier(model, tuple(self.class_names), base.crop_settings, meta, ood)


def _balanced_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = (len(y) / (k * np.maximum(counts, 1)))[y]
    return w / w.sum()


@contextmanager
def _one_thread():
    """Run torch on one thread: the head's products are small, and on a busy 2-core machine two threads
    waiting for each other make them up to 40 times slower (measured, NOTES-issue17.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_warmed = False


def _warm_up_optimiser() -> None:
    """Take one L-BFGS step on a toy problem: torch imports its compiler stack (sympy...) at an
    optimiser's first step, 1.5 s on an idle 2-core machine and over 10 s on a busy one."""
    global _warmed
    if _warmed:
        return
    import torch

    with _one_thread():
        x = torch.zeros(2, requires_grad=True)
        opt = torch.optim.LBFGS([x], max_iter=1)

        def closure():
            opt.zero_grad()
            loss = (x * x).sum()
            loss.backward()
            return loss

        opt.step(closure)
    _warmed = True


def _fit_logistic(x: np.ndarray, y: np.ndarray, k: int, penalty: float, sample_w: np.ndarray,
                  init: np.ndarray | None = None, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised ``x``: weighted cross-entropy + penalty/2 |W|^2 / n.

    The sample weights sum to 1 and the penalty is divided by the number of labels: the usual
    "sum of losses + penalty/2 |W|^2", scaled. A few labels are held close to zero, many are
    fitted closely. L-BFGS (torch, float32, one thread), from ``init`` (a previous head) when given.
    """
    import torch

    with _one_thread():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        wt = torch.from_numpy(np.asarray(sample_w, dtype=np.float32))
        lam = float(penalty) / len(y)
        d = x.shape[1]
        theta = torch.zeros(k * d + k) if init is None else torch.from_numpy(np.asarray(init, dtype=np.float32))
        theta.requires_grad_(True)
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=1e-5,
                                tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            w, b = theta[:k * d].view(k, d), theta[k * d:]
            logp = torch.log_softmax(xt @ w.T + b, dim=1)
            loss = -(wt * logp[torch.arange(len(yt)), yt]).sum() + 0.5 * lam * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        out = theta.detach().double().numpy()
    return out[:k * d].reshape(k, d), out[k * d:]


def fit_head(features: np.ndarray, targets, class_names=(), *, kind: str = "logistic",
             penalty: float = DEFAULT_PENALTY, balanced: bool = True, standardiser: Standardiser | None = None,
             temperature: float | None = None, shrinkage: float = 0.5, init: LiveHead | None = None) -> LiveHead:
    """Fit a linear head on labelled cells' features.

    Parameters
    ----------
    features
        (n, D) features of the labelled cells (:class:`~.features.MovieFeatures` rows).
    targets
        (n,) class names given by a person.
    class_names
        The base model's classes: the head's classes are the labelled ones, in this order.
    kind
        ``"logistic"`` (the choice, see the module notes), ``"prototype"`` (nearest class mean in
        standardised features, softmax of minus half the squared distance over ``temperature``),
        ``"lda"`` (shrinkage linear discriminant: class means, one shared diagonal-plus-shrinkage
        covariance).
    penalty
        L2 penalty of the logistic head (per standardised feature and label).
    balanced
        Weigh each class equally (logistic) or use a flat prior (prototype, lda), whatever its
        number of labels.
    standardiser
        Centre and scale of the features (:meth:`Standardiser.of` the whole movie's features);
        from the labelled features when ``None``.
    init
        A previous head of the same classes: the logistic fit starts from it (fewer iterations).

    Returns
    -------
    LiveHead
        A linear layer on the raw features (the standardisation folded in).

    Raises
    ------
    InputError
        When fewer than :data:`MIN_CLASSES` classes have labels.
    """
    x_raw = np.asarray(features, dtype=np.float64)
    targets = np.asarray([str(t) for t in targets])
    if kind not in HEAD_KINDS:
        raise InputError(f"unknown head {kind!r}; use one of {', '.join(HEAD_KINDS)}")
    names = labelled_classes(targets, class_names)
    if len(names) < MIN_CLASSES:
        raise InputError(f"the live head needs labels of at least {MIN_CLASSES} classes; "
                         + (f"only {names[0]} has labels" if names else "no cell has a label yet"))
    if len(x_raw) != len(targets):
        raise InputError(f"{len(x_raw)} feature rows for {len(targets)} labels")
    k = len(names)
    code = {c: i for i, c in enumerate(names)}
    y = np.asarray([code[t] for t in targets], dtype=np.int64)
    std = standardiser if standardiser is not None else Standardiser.of(x_raw)
    x = std(x_raw)
    counts = {c: int((y == i).sum()) for i, c in enumerate(names)}
    params: dict = {"balanced": balanced, "n_labels": len(y)}
    if kind == "logistic":
        sw = _balanced_weights(y, k) if balanced else np.full(len(y), 1.0 / len(y))
        theta0 = None
        if init is not None and tuple(init.class_names) == names and init.params.get("standardised") is not None:
            # the previous head, back in standardised coordinates
            w_std = init.weight.astype(np.float64) * std.scale
            b_std = init.bias.astype(np.float64) + init.weight.astype(np.float64) @ std.centre
            theta0 = np.concatenate([w_std.ravel(), b_std])
        w, b = _fit_logistic(x, y, k, penalty, sw, theta0)
        params.update(penalty=penalty, standardised=True)
    else:
        means = np.stack([x[y == i].mean(axis=0) for i in range(k)])
        if kind == "prototype":
            # -|x - m|^2 / (2 T) = (x.m - |m|^2 / 2) / T + a term equal for every class
            t = float(temperature) if temperature is not None else float(x.shape[1])
            w, b = means / t, -0.5 * (means * means).sum(axis=1) / t
            params.update(temperature=t, standardised=True)
        else:
            resid = x - means[y]
            var = (resid * resid).sum(axis=0) / max(len(y) - k, 1)
            var = (1 - shrinkage) * var + shrinkage * float(var.mean() if var.mean() > 0 else 1.0)
            w = means / var
            b = -0.5 * (means * w).sum(axis=1)
            params.update(shrinkage=shrinkage, standardised=True)
        if not balanced:
            b = b + np.log(np.bincount(y, minlength=k) / len(y))
    # fold the standardisation in: w.(x - c)/s + b = (w/s).x + (b - (w/s).c)
    w_raw = w / std.scale
    b_raw = b - w_raw @ std.centre
    return LiveHead(names, w_raw.astype(np.float32), b_raw.astype(np.float32), counts, kind, params)


def probabilities_with_all(probs: np.ndarray, head_classes, class_names) -> np.ndarray:
    """(N, C) probabilities over ``class_names``: the head's where it has the class, 0 where not labelled yet."""
    out = np.zeros((len(probs), len(class_names)))
    for j, c in enumerate(head_classes):
        if c in class_names:
            out[:, list(class_names).index(c)] = probs[:, j]
    return out


@dataclass
class LiveUpdate:
    """What one live update gives: the head, the movie's new probabilities and smoothed calls, the costs."""

    head: LiveHead
    #: (N, K) probabilities over ``class_names`` of every row of the movie's cell table, in its order
    probabilities: np.ndarray
    #: the cell table with ``p_<class>`` for the labelled classes, ``phenotype_raw``, ``phenotype``,
    #: ``confidence`` and ``annotated`` (the labels as fixed evidence), rows in the table's order
    cells: pd.DataFrame
    class_names: tuple[str, ...]
    #: the base model's classes that have no label yet, in its order
    not_labelled: tuple[str, ...]
    #: seconds: fit, predict, smooth, total
    seconds: dict


BASE_COLUMNS = ("frame", "label", "track_id", "y", "x", "area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")


class LiveModel:
    """One movie's cached features and a head refitted on its labels (what the Annotate dock drives).

    Parameters
    ----------
    features
        The movie's :class:`~.features.MovieFeatures` (:func:`~.features.movie_features`).
    cells
        The movie's cell table (a Result's ``cells``: ``frame``, ``label``, ``track_id``...), whose
        rows the updates give probabilities for, in its order.
    base
        The :class:`~.model.Classifier` whose backbone made the features (its class order names
        the head's classes; its crop settings go into a saved head).
    timeline
        The track model's settings (:class:`~.timeline.TimelineSettings`); a confusion matrix
        fitted for other classes is dropped (it is for the base model's classes).
    kind, penalty
        The head (:func:`fit_head`).
    """

    def __init__(self, features, cells: pd.DataFrame, base, timeline=None, *, kind: str = "logistic",
                 penalty: float = DEFAULT_PENALTY):
        from ..track.timeline import TimelineSettings

        _warm_up_optimiser()  # 1-2 s once per process, here rather than at the first label

        self.features, self.base = features, base
        self.cells = cells
        self.rows = features.rows_of(cells)  # the features row of each cell-table row
        self.standardiser = Standardiser.of(features.features)
        self.timeline = timeline if timeline is not None else TimelineSettings()
        self.kind, self.penalty = kind, penalty
        self.head: LiveHead | None = None
        self._base_cells = cells[[c for c in BASE_COLUMNS if c in cells]].copy()

    def labelled_rows(self, annotations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the cell table and class names of ``annotations`` (``frame, label, phenotype``; marks ignored)."""
        ann = annotations[annotations["phenotype"].astype(str).str.len() > 0]
        ann = ann.drop_duplicates(["frame", "label"], keep="last")
        index = pd.MultiIndex.from_arrays([self.cells["frame"].to_numpy(np.int64),
                                           self.cells["label"].to_numpy(np.int64)])
        pos = index.get_indexer(pd.MultiIndex.from_arrays([ann["frame"].to_numpy(np.int64),
                                                           ann["label"].to_numpy(np.int64)]))
        keep = pos >= 0
        return pos[keep], ann["phenotype"].astype(str).to_numpy()[keep]

    def fit(self, annotations: pd.DataFrame, extra: tuple[np.ndarray, np.ndarray] | None = None) -> LiveHead:
        """Fit the head on this movie's labels (and ``extra`` = (features, class names) from elsewhere)."""
        rows, y = self.labelled_rows(annotations)
        x = self.features.features[self.rows[rows]]
        if extra is not None and len(extra[0]):
            x = np.concatenate([x, np.asarray(extra[0], dtype=np.float32)])
            y = np.concatenate([y, np.asarray(extra[1]).astype(str)])
        init = self.head if self.head is not None and self.head.kind == self.kind else None
        self.head = fit_head(x, y, self.base.class_names, kind=self.kind, penalty=self.penalty,
                             standardiser=self.standardiser, init=init)
        return self.head

    def update(self, annotations: pd.DataFrame, extra=None) -> LiveUpdate:
        """Refit the head on the labels, re-predict every cell-frame and smooth every track again.

        ``annotations``: the person's labels of this movie (``frame, label, phenotype``; a
        curated set's ``labels_of_movie``), used to fit and as fixed evidence along the tracks.
        Costs: see ``benchmarks/live_head.py`` (about 0.1 s for 1,226 cell-frames and 500
        labels, under 1 s for 40,000, on 2 cores).
        """
        from ..results.schema import prob_columns
        from ..track.timeline import TimelineSettings, add_timeline

        t0 = time.perf_counter()
        head = self.fit(annotations, extra)
        t1 = time.perf_counter()
        probs = head.predict_proba(self.features.features)[self.rows]  # every cell-frame, in the table's order
        t2 = time.perf_counter()
        table = self._base_cells.copy()
        table[prob_columns(head.class_names)] = probs
        table["_row"] = np.arange(len(table))
        settings = self.timeline
        if settings.confusion is not None and len(settings.confusion) != len(head.class_names):
            settings = TimelineSettings(**{**settings.to_dict(), "confusion": None})
        ann = annotations[annotations["phenotype"].astype(str).isin(head.class_names)]
        smoothed = add_timeline(table, head.class_names, settings, annotations=ann)
        smoothed = smoothed.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)
        t3 = time.perf_counter()
        not_labelled = tuple(c for c in self.base.class_names if c not in head.class_names)
        return LiveUpdate(head, probs, smoothed, head.class_names, not_labelled,
                          {"fit": t1 - t0, "predict": t2 - t1, "smooth": t3 - t2, "total": t3 - t0})

    def summary(self, annotations: pd.DataFrame):
        """The head's own summary of its training data (:func:`~.ood.summarise_labelled`), or ``None``.

        Fitted on the labelled cells' cached features and crop descriptors; thresholds from folds
        of whole tracks. Under 8 labelled cell-frames there is none. Cost: 6 fits of
        (labels x 2048), about 0.1-0.5 s for 500 labels on 2 cores: call it when the labels
        settle (or with a checkpoint), not after every key press.
        """
        from .ood import summarise_labelled

        if self.head is None:
            self.fit(annotations)
        rows, y = self.labelled_rows(annotations)
        fr = self.rows[rows]
        return summarise_labelled(self.features.features[fr], self.features.descriptors[fr], y,
                                  self.head.class_names, groups=self.cells["track_id"].to_numpy()[rows])

    def ood_scores(self, summary) -> np.ndarray:
        """(N,) ``ood_score`` of every row of the cell table under ``summary`` (from the cache; no crop made)."""
        return summary.score_from_descriptors(self.features.features, self.features.descriptors)[self.rows]

    def classifier(self, annotations: pd.DataFrame | None = None, *, ood: bool = True, extra=None):
        """The current head on the base model's backbone, as a :class:`~.model.Classifier` to save.

        With ``ood``, its own summary of the training data (:func:`~.ood.summarise_labelled`):
        fitted on the labelled cells' features and descriptors, thresholds from held-out tracks,
        so cells like the labelled ones are not flagged.
        """
        if self.head is None:
            if annotations is None:
                raise InputError("no live head yet: label cells of at least two classes first")
            self.fit(annotations, extra)
        summary = self.summary(annotations) if ood and annotations is not None else None
        return self.head.to_classifier(self.base, summary)


__all__ = ["DEFAULT_PENALTY", "HEAD_KINDS", "LiveHead", "LiveModel", "LiveUpdate", "Standardiser", "fit_head",
           "labelled_classes", "probabilities_with_all"]
