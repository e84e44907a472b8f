"""The strong simple baselines as first-class models: ``audio-svm``, ``audio-whisper-linear`` and
``text-tfidf``.

Each is a multinomial logistic regression (``training.closed_form``) on one vector per utterance, with the
inverse regularisation ``C`` chosen on the fold's validation speakers and trained on the training speakers
only, exactly the data the neural models get. They are saved as an ordinary checkpoint (a
``models.linear.LinearModel`` whose one layer holds the coefficients), so ``predict``, ``export``, ``serve``
and the report treat them like any other model.

* ``audio-svm``: the ``functionals`` stream (ComParE 6,373 values), normalised like the neural audio
  model. High-dimensional, few utterances: a strongly regularised linear model is hard to beat there.
* ``audio-whisper-linear``: the ``pooled`` stream (the Whisper encoder's frame mean and std per layer).
* ``text-tfidf``: TF-IDF of word 1-2-grams (vocabulary and IDF fitted on the training part, sublinear tf),
  the ``ngrams`` stream.

A fold of the two audio baselines on per-speaker statistics also keeps a twin fitted on training statistics
for voices without statistics of their own (``training.single.linear_fallback``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mmfer.config import MmferConfig
from mmfer.features.store import FeatureStore
from mmfer.models.linear import LinearModel, TfidfNgrams
from mmfer.models.registry import get_model
from mmfer.training.closed_form import fit_expert
from mmfer.training.fold_data import balanced_loss, fold_data
from mmfer.training.fold_output import FoldResult, finish_fold
from mmfer.training.folds import Fold
from mmfer.training.single import linear_fallback, recorded


def train_linear_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
                      run_dir: Path, progress: bool = True) -> FoldResult:
    started = time.perf_counter()
    spec = get_model(model_name)
    (kind,) = spec.streams
    extra: dict = {}
    if kind == "ngrams":
        data = fold_data(store, fold, model_name, cfg, classes, kinds=[])
        words = dict(zip(store.corpus.table["utt_id"], store.corpus.table["words"]))
        parts = [[list(words[u]) for u in ids] for ids in (data.train_ids, data.val_ids, data.test_ids)]
        tfidf = TfidfNgrams.fit(parts[0])
        xs = [tfidf.transform(p) for p in parts]
        extra = {"ngrams": tfidf.to_checkpoint()}
        data.dims = {"ngrams": len(tfidf.vocabulary)}
    else:
        data = fold_data(store, fold, model_name, cfg, classes)
        xs = [np.concatenate(data.sets[p].arrays[kind]) for p in ("train", "val", "test")]
    ys = [data.sets[p].labels for p in ("train", "val", "test")]
    fit = data.experts.get(kind) or fit_expert(xs[0], ys[0], xs[1], ys[1], len(classes), balanced_loss(cfg),
                                               cfg.train.objective)
    model = LinearModel(model_name, data.dims, len(classes))
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(fit.coef))
        model.linear.bias.copy_(torch.from_numpy(fit.icpt))
    logits = fit.logits(xs[2])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    test = {"probs": probs, "attention": {}, "gate": np.full(len(probs), np.nan, np.float32)}
    single = linear_fallback(fit, kind, data, store, cfg, classes) if kind != "ngrams" else None
    if single:
        extra["single_utterance"] = single
    return finish_fold(store, fold, model.eval(), cfg, classes, run_dir, data, test, started,
                       {"best_epoch": 0, "objective": cfg.train.objective, "val_score": fit.val_score, "C": fit.C,
                        "search": fit.search, **recorded(single)},
                       extra or None)
