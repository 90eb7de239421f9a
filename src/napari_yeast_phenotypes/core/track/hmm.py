"""The hidden Markov model along one track: emissions from calibrated probabilities, the transition matrix
(Senescent absorbing), and the messages forward and backward, scaled where they can be and
in log space where long tracks would underflow (never NaN)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """``log(sum(exp(x)))`` along ``axis``; ``-inf`` where every term is ``-inf``."""
    m = x.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def _normalise_log(logp: np.ndarray) -> np.ndarray:
    """Rows of log-probabilities (up to a constant each) as probabilities summing to 1."""
    logp = logp - logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=-1, keepdims=True)


def log_forward_backward(log_e: np.ndarray, log_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward messages of one track in log space (flat prior over the start state).

    Each row of both is normalised (its log-sum-exp is 0), so ``lf[t] + lb[t]`` is the log posterior
    of frame ``t`` up to a constant, and ``lf[t-1, i] + log_a[i, j] + log_e[t, j] + lb[t, j]`` that of
    the transition ``i -> j`` into frame ``t``. In log space a class that became very unlikely over a
    long track (a live class after a hundred senescent calls: below 1e-308 as a probability) stays
    possible, so a person's label of it later on is still followed, never turned into NaN.

    Raises
    ------
    InputError
        When no path at all is possible (a person's labels that no track can follow).
    """
    t_len, n = log_e.shape
    lf = np.empty((t_len, n))
    f = log_e[0] - np.log(n)
    for t in range(t_len):
        if t:
            f = _logsumexp(lf[t - 1][:, None] + log_a, axis=0) + log_e[t]
        top = f.max()
        if not np.isfinite(top):
            raise InputError(f"no path of the track model can explain frame {t} of this track: its labels need a "
                             "change the track model forbids (a live phenotype after Senescent)")
        lf[t] = f - _logsumexp(f, axis=0)
    lb = np.empty((t_len, n))
    lb[-1] = -np.log(n)
    for t in range(t_len - 2, -1, -1):
        b = _logsumexp(log_a + (log_e[t + 1] + lb[t + 1])[None, :], axis=1)
        lb[t] = b - _logsumexp(b, axis=0)
    return lf, lb


#: scaled messages with an entry below this are computed again in log space (products of two stay normal)
_UNDERFLOW_GUARD = 1e-150


def _scaled_forward_backward(emis: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled forward and backward messages (each row summing to 1) in plain probabilities: quick, but
    a state that becomes less likely than 1e-308 is lost (0, or NaN for a whole track)."""
    t_len, n = emis.shape
    fwd = np.empty((t_len, n))
    f = emis[0] / n
    fwd[0] = f / f.sum()
    for t in range(1, t_len):
        f = (fwd[t - 1] @ a) * emis[t]
        fwd[t] = f / f.sum()
    bwd = np.empty((t_len, n))
    bwd[-1] = 1.0 / n
    b = bwd[-1]
    for t in range(t_len - 2, -1, -1):
        b = a @ (emis[t + 1] * b)
        b = b / b.sum()
        bwd[t] = b
    return fwd, bwd


def messages(emis: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log forward and backward messages of one track (as :func:`log_forward_backward`).

    Computed with plain scaled probabilities where they stay well inside float64's range (most
    tracks: three times faster), else in log space: a long run of one call makes the other classes
    less likely than float64 can hold, and a label of one of them later (or the network's calls
    turning) would otherwise give NaN or a confidence of the wrong class.
    """
    with np.errstate(all="ignore"):
        fwd, bwd = _scaled_forward_backward(emis, a)
        if fwd.min() > _UNDERFLOW_GUARD and bwd.min() > _UNDERFLOW_GUARD:  # False for NaN too
            return np.log(fwd), np.log(bwd)
        return log_forward_backward(np.log(emis), np.log(a))


def forward_backward(emis: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward messages of one track as probabilities (rows summing to 1), never NaN
    (:func:`messages`); ``fwd[t] * bwd[t]`` is proportional to the posterior of frame ``t``."""
    lf, lb = messages(emis, a)
    return _normalise_log(lf), _normalise_log(lb)


def calibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with their log divided by ``temperature`` and renormalised (rows)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(axis=1, keepdims=True)


def emissions(probs: np.ndarray, settings) -> np.ndarray:
    """(T, C) emission of each class at each frame from the network's probabilities (rows sum to 1)."""
    if settings.confusion is not None:
        q = np.asarray(settings.confusion, dtype=np.float64).T[np.asarray(probs).argmax(axis=1)]
    else:
        q = calibrated(probs, settings.temperature)
    emis = np.clip(q, settings.min_probability, 1.0)
    emis /= emis.sum(axis=1, keepdims=True)
    return emis


def transition_matrix(n: int, absorbing: int | None, s) -> np.ndarray:
    """Row-stochastic (n, n) transition matrix with ``absorbing`` as a sink state."""
    live = [i for i in range(n) if i != absorbing]
    a = np.zeros((n, n))
    for i in live:
        others = [j for j in live if j != i]
        a[i, others] = s.switch_rate / max(len(others), 1)
        if absorbing is not None:
            a[i, absorbing] = s.senescence_rate
        a[i, i] = 1.0 - a[i].sum()
    if absorbing is not None:
        a[absorbing, absorbing] = 1.0
    return a
