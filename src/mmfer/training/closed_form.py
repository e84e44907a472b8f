"""Closed-form linear experts: logistic regressions on one vector per utterance, C chosen on validation.

They are the baselines (``audio-svm``, ``audio-whisper-linear``, ``text-tfidf``) and the experts whose class
scores feed the networks (functionals, pooled encoder statistics, sentence vectors). Three things keep
them cheap on thousands of dimensions:

* **The span of the training rows.** With an L2 penalty the optimal weights lie in the span of the
  training rows (any other component adds penalty and changes no score), so a regression on the
  ``n`` coordinates of the rows in an orthonormal basis of that span gives exactly the same model as on
  the ``d`` original dimensions: for 6,373 ComParE functionals of 1,000 utterances, a problem 6x
  smaller (:class:`Basis`). Inner folds of the training rows lie in the same span, so cross-fitting uses
  it too.
* **A warm-started C path.** The grid is walked from the strongest penalty up, each fit starting from the
  previous solution.
* **One fit per C**, scored on the validation part; the best C's validation logits are kept, so the
  experts of one modality can be weighed against each other without fitting again (:func:`combine`).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np

from mmfer.training.metrics import scores

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))  # 1e-4 .. 1e2, one step per decade
MAX_ITER = 300


class Basis:
    """Coordinates in an orthonormal basis of the training rows' span (identity when ``d <= n``)."""

    def __init__(self, x_train):
        self.v = None
        if hasattr(x_train, "toarray") or x_train.shape[1] <= x_train.shape[0]:
            return  # sparse (TF-IDF) or narrow: nothing to gain
        x = np.asarray(x_train, np.float64)
        gram = x @ x.T
        vals, vecs = np.linalg.eigh(gram)
        keep = vals > vals.max() * 1e-10
        s = np.sqrt(vals[keep])
        self.v = (x.T @ vecs[:, keep]) / s  # [d, r], orthonormal columns spanning the rows

    def __call__(self, x):
        return x if self.v is None else np.asarray(x, np.float64) @ self.v

    def lift(self, coef: np.ndarray) -> np.ndarray:
        """Weights on the basis's coordinates [k, r] -> on the original dimensions [k, d]."""
        return coef if self.v is None else coef @ self.v.T


def _regression(balanced: bool):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C_GRID[0], max_iter=MAX_ITER, warm_start=True,
                              class_weight="balanced" if balanced else None)


def _fit(clf, x, y, c: float):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.set_params(C=c).fit(x, y)


def _weights(clf, n: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as a full [n_classes, D] layer (classes absent from training: -30)."""
    coef = np.zeros((n, clf.coef_.shape[1]), np.float64)
    icpt = np.full(n, -30.0, np.float64)
    if len(clf.classes_) == 2:  # one row for two classes: logits (-w, +w) / 2 give the same softmax
        coef[clf.classes_[1]], coef[clf.classes_[0]] = clf.coef_[0] / 2, -clf.coef_[0] / 2
        icpt[clf.classes_[1]], icpt[clf.classes_[0]] = clf.intercept_[0] / 2, -clf.intercept_[0] / 2
    else:
        coef[clf.classes_], icpt[clf.classes_] = clf.coef_, clf.intercept_
    return coef, icpt


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()) if len(y) else 0.0


def rank(score: float, logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """How candidates compare on validation: the objective's score, then the lower loss."""
    return score, -cross_entropy(logits, y)


@dataclass
class ExpertFit:
    """One closed-form expert, fitted: weights on the original dimensions, C, its validation score and
    logits, and the search over C."""

    coef: np.ndarray  # [n_classes, D] float32
    icpt: np.ndarray  # [n_classes] float32
    C: float
    val_score: float
    val_logits: np.ndarray
    search: list[dict] = field(default_factory=list)
    basis: Basis | None = None
    start: tuple | None = None  # (classes, coef, intercept) on the basis's coordinates: where inner fits begin

    def logits(self, x) -> np.ndarray:
        return np.asarray(x @ self.coef.T) + self.icpt


def fit_expert(x_train, y_train, x_val, y_val, n_classes: int, balanced: bool, objective: str = "ua") -> ExpertFit:
    """Fit on the training part for each C of the grid (warm-started, on the training rows' span); keep the
    best validation score (``objective``: ua or wf1; ties: the smaller C)."""
    basis = Basis(x_train)
    z_train, z_val = basis(x_train), basis(x_val)
    clf = _regression(balanced)
    search, best = [], None
    for c in C_GRID:
        _fit(clf, z_train, y_train, c)
        coef, icpt = _weights(clf, n_classes)
        logits = np.asarray(z_val @ coef.T) + icpt
        score = scores(y_val, logits.argmax(1), n_classes)[objective] if len(y_val) else 0.0
        search.append({"C": c, f"val_{objective}": score})
        if best is None or score > best[0]:
            best = (score, c, coef, icpt, logits, (clf.classes_.copy(), clf.coef_.copy(), clf.intercept_.copy()))
    score, c, coef, icpt, logits, start = best
    return ExpertFit(basis.lift(coef).astype(np.float32), icpt.astype(np.float32), c, score,
                     logits.astype(np.float32), search, basis, start)


def cross_fitted(fit: ExpertFit, x, y: np.ndarray, speakers: np.ndarray, n_classes: int, balanced: bool,
                 k: int = 5) -> np.ndarray:
    """Out-of-fold class scores (logits) of every training row: each speaker group scored by a model (the
    expert's C) fitted on the other groups, so no score comes from a model that saw its utterance or its
    speaker. Each inner fit starts from the expert's own solution (most of it is shared)."""
    basis = fit.basis or Basis(x)
    z = basis(x)
    groups = np.array_split(np.unique(speakers), min(k, len(np.unique(speakers))))
    out = np.zeros((z.shape[0], n_classes), np.float32)

    def inner(held: np.ndarray) -> np.ndarray | None:
        if held.all() or len(np.unique(y[~held])) < 2:
            return None
        clf = _regression(balanced)
        if fit.start is not None and np.array_equal(np.unique(y[~held]), fit.start[0]):
            clf.coef_, clf.intercept_ = fit.start[1].copy(), fit.start[2].copy()
        _fit(clf, z[~held], y[~held], fit.C)
        coef, icpt = _weights(clf, n_classes)
        return np.asarray(z[held] @ coef.T) + icpt

    helds = [np.isin(speakers, g) for g in groups]
    for held, scores_of in zip(helds, side_by_side(inner, helds)):
        if scores_of is not None:
            out[held] = scores_of
    return out


def side_by_side(fn, args: list) -> list:
    """``[fn(a) for a in args]``, one thread per core with one BLAS thread each: an L-BFGS fit on a thousand
    rows spends most of its time in single-threaded steps (the optimiser, the loss), so independent fits
    side by side use the cores better than one fit after another with a threaded BLAS. Each fit sees the
    same data in the same order as alone; the fits are independent, so the result does not depend on
    which thread runs which."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    workers = max(1, min(len(args), os.cpu_count() or 1))
    if workers == 1:
        return [fn(a) for a in args]
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, args))


def combine(val_logits: list[np.ndarray], y_val: np.ndarray, n_classes: int, objective: str = "ua"
            ) -> tuple[list[float], tuple[float, float]]:
    """Weights (summing to 1) of several experts' logits, chosen on the validation part: a grid over the
    simplex (steps of 0.1 for two experts, 0.25 for more), each expert alone among the candidates; ties:
    the more even weighting. Returns (weights, (score, -loss))."""
    n = len(val_logits)
    if n == 1:
        return [1.0], rank(scores(y_val, val_logits[0].argmax(1), n_classes)[objective], val_logits[0], y_val)
    steps = 10 if n == 2 else 4
    best = None
    for combo in itertools.product(range(steps + 1), repeat=n):
        if sum(combo) != steps:
            continue
        w = [c / steps for c in combo]
        logits = sum(wi * li for wi, li in zip(w, val_logits))
        r = rank(scores(y_val, logits.argmax(1), n_classes)[objective], logits, y_val)
        key = (r, -max(w))
        if best is None or key > best[0]:
            best = (key, w, r)
    return best[1], best[2]
