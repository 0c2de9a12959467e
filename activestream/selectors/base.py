"""Boundary checks and the ``Selector`` protocol.

Shapes and directions used throughout ``activestream.selectors``:

* ``probs``: ``[batch, classes]``, one probability distribution per item.
* ``samples``: ``[batch, classes, samples]``, several distributions per item
  (MC-dropout passes or committee members); every ``[:, :, s]`` is a
  distribution over classes.
* ``scores``: float64 ``[batch]``; **higher always means more worth a human
  label**. There are no "reverse" flags.

Inputs are checked once, here, and come out as float64; the scoring code
after the check can then assume clean data.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from activestream.errors import InvalidInput

SUM_TOLERANCE = 1e-3
"""How far a distribution may sum from 1 (float16 inputs need ~5e-4)."""

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@runtime_checkable
class Selector(Protocol):
    """Scores how worth a human label each item is.

    ``score`` is a pure query: ``[batch, classes]`` probabilities (or
    ``[batch, classes, samples]`` for committee selectors) in, float64
    ``[batch]`` scores in ``[0, 1]`` out, higher = more worth a label.
    """

    name: str

    def score(self, probs: np.ndarray) -> np.ndarray: ...


def _as_array(x, kind: str, shape_doc: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except Exception as e:  # a CUDA tensor, a ragged list, ...
        raise InvalidInput(
            kind,
            f"could not read the input as a numpy array ({e}); pass a numpy array "
            f"shaped {shape_doc}, e.g. tensor.detach().cpu().numpy()",
        ) from e


def _check_distributions(arr: np.ndarray, shape_doc: str, ndim: int) -> np.ndarray:
    fix_shape = "e.g. probs[None, :] for a single item" if ndim == 2 else (
        "stack the passes on the last axis: np.stack(passes, axis=-1)")
    if arr.ndim != ndim:
        raise InvalidInput("bad_probs", f"expected a {ndim}-D array shaped {shape_doc}, "
                           f"got shape {arr.shape}; {fix_shape}")
    if arr.shape[1] < 2:
        raise InvalidInput("bad_probs", f"need at least 2 classes on axis 1 of {shape_doc}, "
                           f"got shape {arr.shape}; did you pass a [classes, batch] array? "
                           "transpose it")
    if arr.dtype not in _FLOATS:
        raise InvalidInput("bad_probs", f"probabilities must be float16/32/64, got dtype "
                           f"{arr.dtype}; pass softmax outputs, e.g. probs.astype(np.float32) "
                           "only if the values really are probabilities")
    out = arr.astype(np.float64, copy=True)
    if not np.isfinite(out).all():
        raise InvalidInput("bad_probs", "probabilities contain NaN or inf; check the model "
                           "output (a diverged model or a missing softmax) and drop the item")
    if out.size and out.min() < 0:
        raise InvalidInput("bad_probs", f"probabilities must be >= 0, got min {out.min():.3g}; "
                           "these look like logits: apply softmax first")
    sums = out.sum(axis=1)
    bad = np.abs(sums - 1.0) > SUM_TOLERANCE
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidInput("bad_probs", f"each distribution must sum to 1 within "
                           f"{SUM_TOLERANCE}; the one at {where} sums to {sums[where]:.6g}; "
                           "apply softmax to logits or divide by the sum over axis 1")
    return out


def validate_probs(probs) -> np.ndarray:
    """Check ``[batch, classes]`` probabilities and return them as float64.

    Raises ``InvalidInput("bad_probs", ...)`` for a wrong number of axes,
    fewer than 2 classes, a non-float dtype (ints, bools, objects), NaN or
    inf, negative values, or rows that do not sum to 1 within 1e-3. An
    empty batch ``[0, classes]`` is valid.

    >>> validate_probs(np.array([[0.25, 0.75]], dtype=np.float32)).dtype
    dtype('float64')
    >>> validate_probs(np.zeros((0, 3))).shape
    (0, 3)
    >>> validate_probs(np.array([[0.5, 0.6]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: each distribution must sum to 1 ...; apply softmax ...
    """
    arr = _as_array(probs, "bad_probs", "[batch, classes]")
    return _check_distributions(arr, "[batch, classes]", ndim=2)


def validate_samples(samples) -> np.ndarray:
    """Check ``[batch, classes, samples]`` probabilities; return float64.

    Same checks as :func:`validate_probs`, applied to every ``[:, :, s]``
    (one MC-dropout pass or one committee member), plus ``samples >= 1``.

    >>> validate_samples(np.full((2, 4, 5), 0.25)).shape
    (2, 4, 5)
    """
    arr = _as_array(samples, "bad_probs", "[batch, classes, samples]")
    out = _check_distributions(arr, "[batch, classes, samples]", ndim=3)
    if out.shape[2] < 1:
        raise InvalidInput("bad_probs", "need at least one sample on axis 2 of "
                           f"[batch, classes, samples], got shape {out.shape}; pass at least one "
                           "MC-dropout pass or committee member")
    return out


def validate_scores(scores) -> np.ndarray:
    """Check a ``[batch]`` array of finite real scores; return float64.

    Raises ``InvalidInput("bad_scores", ...)``.

    >>> validate_scores([0.5, 1]).tolist()
    [0.5, 1.0]
    """
    arr = _as_array(scores, "bad_scores", "[batch]")
    if arr.ndim != 1:
        raise InvalidInput("bad_scores", f"scores must be 1-D [batch], got shape {arr.shape}; "
                           "pass one score per item, e.g. selector.score(probs)")
    if arr.dtype.kind not in "iuf":
        raise InvalidInput("bad_scores", f"scores must be real numbers, got dtype {arr.dtype}; "
                           "pass the float64 output of a selector")
    out = arr.astype(np.float64, copy=True)
    if not np.isfinite(out).all():
        raise InvalidInput("bad_scores", "scores contain NaN or inf; validate the model "
                           "output before scoring (selectors reject NaN probabilities)")
    return out


def normalised_entropy(p: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy along ``axis`` divided by log(size of that axis), in [0, 1].

    ``0 * log 0`` counts as 0.

    >>> normalised_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    logs = np.log(np.where(p > 0, p, 1.0))
    h = -(p * logs).sum(axis=axis) / np.log(p.shape[axis])
    return np.clip(h, 0.0, 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0
