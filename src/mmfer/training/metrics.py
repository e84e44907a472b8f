"""The field's metrics: WA (accuracy), UA (mean per-class recall), macro-F1, confusion matrix."""

from __future__ import annotations

import numpy as np

from mmfer.uncertainty import scores_of


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def scores(y_true, y_pred, n_classes: int) -> dict:
    """WA, UA, macro-F1 and support-weighted F1 (MELD's headline) as scikit-learn computes them; the one
    implementation is the bootstrap's (``uncertainty.scores_of``), so a fold's score and its interval's
    point agree to the last digit."""
    m = confusion(y_true, y_pred, n_classes)
    s = scores_of(m)
    return {"wa": float(s["wa"]), "ua": float(s["ua"]), "f1": float(s["f1"]), "wf1": float(s["wf1"]),
            "recall": s["recall"].tolist(), "confusion": m.tolist()}


def mean_std(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=0))}
