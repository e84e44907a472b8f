"""The field's metrics: WA (accuracy), UA (mean per-class recall), macro-F1, confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def scores(y_true, y_pred, n_classes: int) -> dict:
    """WA, UA, macro-F1 and support-weighted F1 (MELD's headline) as scikit-learn computes them."""
    m = confusion(y_true, y_pred, n_classes)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    tp = np.diag(m).astype(float)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    labels_used = present | (predicted > 0)
    return {
        "wa": float(tp.sum() / max(m.sum(), 1)),
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[labels_used].mean()) if labels_used.any() else 0.0,
        "wf1": float((f1 * support).sum() / max(support.sum(), 1)),
        "recall": recall.tolist(),
        "confusion": m.tolist(),
    }


def mean_std(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=0))}
