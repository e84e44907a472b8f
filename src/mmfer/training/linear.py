"""The strong simple baselines as first-class models: ``audio-svm`` and ``text-tfidf``.

Both are multinomial logistic regressions (scikit-learn) on one vector per utterance, with the inverse
regularisation ``C`` chosen on the fold's validation speakers (UA) and trained on the training speakers
only, exactly the data the neural models get. They are saved as an ordinary checkpoint (a
``models.linear.LinearModel`` whose one layer holds the coefficients), so ``predict``, ``export``, ``serve`` and the
report treat them like any other model.

* ``audio-svm``: the ``functionals`` stream (ComParE 6,373 values), normalised like the neural audio
  model (per speaker by default). High-dimensional, few utterances: a max-margin-like, strongly
  regularised linear model is hard to beat there.
* ``text-tfidf``: TF-IDF of word 1-2-grams (vocabulary and IDF fitted on the training part, sublinear tf),
  the ``ngrams`` stream.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from mmfer.config import MmferConfig
from mmfer.features.store import FeatureStore
from mmfer.models.linear import LinearModel, TfidfNgrams
from mmfer.models.registry import get_model
from mmfer.training.folds import Fold
from mmfer.training.metrics import scores

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))  # 1e-4 .. 1e2, one step per decade


def _fit(x: np.ndarray, y: np.ndarray, c: float, balanced: bool):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=300, class_weight="balanced" if balanced else None).fit(x, y)


def _full_probs(clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    p = np.zeros((x.shape[0], n_classes), np.float32)
    p[:, clf.classes_] = clf.predict_proba(x)
    return p


def select_linear(xs: list[np.ndarray], ys: list[np.ndarray], n_classes: int, balanced: bool,
                  objective: str = "ua"):
    """Fit on the training part for each C of the grid; keep the best validation score (``objective``:
    ua or wf1; ties: smaller C). Returns (score, C, (coef [n_classes, D], intercept [n_classes]), search)."""
    search, best = [], None
    for c in C_GRID:
        clf = _fit(xs[0], ys[0], c, balanced)
        ua = scores(ys[1], _full_probs(clf, xs[1], n_classes).argmax(1), n_classes)[objective] \
            if xs[1].shape[0] else 0.0
        search.append({"C": c, f"val_{objective}": ua})
        if best is None or ua > best[0]:
            best = (ua, c, clf)
    ua, c, clf = best
    return ua, c, _weights(clf, n_classes), search


def fit_scores(x: np.ndarray, y: np.ndarray, speakers: np.ndarray, c: float, n_classes: int, balanced: bool,
               k: int = 5) -> np.ndarray:
    """Out-of-fold class scores (logits) for every row: each speaker group scored by a model fitted on
    the other groups, so no score comes from a model that saw its utterance or its speaker."""
    groups = np.array_split(np.unique(speakers), min(k, len(np.unique(speakers))))
    out = np.zeros((x.shape[0], n_classes), np.float32)
    for g in groups:
        held = np.isin(speakers, g)
        if held.all() or len(np.unique(y[~held])) < 2:
            continue
        coef, icpt = _weights(_fit(x[~held], y[~held], c, balanced), n_classes)
        out[held] = np.asarray(x[held] @ coef.T) + icpt
    return out


def _weights(clf, n: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as a full [n_classes, D] layer (classes absent from training: -30)."""
    coef = np.zeros((n, clf.coef_.shape[1]), np.float32)
    icpt = np.full(n, -30.0, np.float32)
    if len(clf.classes_) == 2:  # one row for two classes: logits (-w, +w) / 2 give the same softmax
        coef[clf.classes_[1]], coef[clf.classes_[0]] = clf.coef_[0] / 2, -clf.coef_[0] / 2
        icpt[clf.classes_[1]], icpt[clf.classes_[0]] = clf.intercept_[0] / 2, -clf.intercept_[0] / 2
    else:
        coef[clf.classes_], icpt[clf.classes_] = clf.coef_, clf.intercept_
    return coef, icpt


def train_linear_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
                      run_dir, started: float):
    from mmfer.training.trainer import finish_fold, fold_data

    spec = get_model(model_name)
    n = len(classes)
    extra: dict = {}
    if spec.streams == ("ngrams",):
        data = fold_data(store, fold, model_name, cfg, classes, kinds=[])
        words = dict(zip(store.corpus.table["utt_id"], store.corpus.table["words"]))
        parts = [[list(words[u]) for u in ids] for ids in (data.train_ids, data.val_ids, data.test_ids)]
        tfidf = TfidfNgrams.fit(parts[0])
        xs = [tfidf.transform(p) for p in parts]
        extra = {"ngrams": tfidf.to_checkpoint()}
        data.dims = {"ngrams": len(tfidf.vocabulary)}
    else:
        data = fold_data(store, fold, model_name, cfg, classes)
        xs = [np.concatenate(data.sets[p].arrays[spec.streams[0]]) for p in ("train", "val", "test")]
    ys = [data.sets[p].labels for p in ("train", "val", "test")]
    balanced = cfg.train.class_weighted and cfg.train.objective == "ua"
    ua, c, (coef, icpt), search = select_linear(xs, ys, n, balanced, cfg.train.objective)
    model = LinearModel(model_name, data.dims, n)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(coef))
        model.linear.bias.copy_(torch.from_numpy(icpt))
    logits = np.asarray(xs[2] @ coef.T) + icpt
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    test = {"probs": probs, "attention": {}, "gate": np.full(len(probs), np.nan, np.float32)}
    return finish_fold(store, fold, model.eval(), cfg, classes, run_dir, data, test, started,
                       {"best_epoch": 0, "objective": cfg.train.objective, "val_score": ua, "C": c,
                        "search": search}, extra)
