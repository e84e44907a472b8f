"""Closed-form experts: the training rows' span, weighing experts, and normalisation chosen by validation."""

from __future__ import annotations

import numpy as np
import pytest

from mmfer.training.closed_form import Basis, combine, cross_fitted, fit_expert


def _data(n=120, d=600, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[np.arange(n), y] += 5.0
    return x, y


def test_regression_on_the_rows_span_is_the_full_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = _data()
    x = x.astype(np.float64)
    basis = Basis(x[:80])
    assert basis.v is not None and basis.v.shape == (600, 80)
    full = LogisticRegression(C=0.1, max_iter=2000, tol=1e-10).fit(x[:80], y[:80])
    small = LogisticRegression(C=0.1, max_iter=2000, tol=1e-10).fit(basis(x[:80]), y[:80])
    assert np.allclose(basis.lift(small.coef_), full.coef_, atol=1e-4)
    assert np.allclose(small.intercept_, full.intercept_, atol=1e-4)
    assert Basis(x[:, :50]).v is None  # narrow: nothing to reduce


def test_fit_expert_chooses_c_on_validation_and_cross_fits():
    x, y = _data(seed=1)
    fit = fit_expert(x[:80], y[:80], x[80:], y[80:], 4, balanced=True)
    assert fit.coef.shape == (4, 600) and len(fit.search) == 7
    assert fit.val_score == max(s["val_ua"] for s in fit.search) and fit.val_score > 0.8
    assert np.allclose(fit.logits(x[80:]), fit.val_logits, atol=1e-3)
    speakers = np.repeat(np.arange(8), 10)
    oof = cross_fitted(fit, x[:80], y[:80], speakers, 4, balanced=True)
    assert oof.shape == (80, 4) and (oof.argmax(1) == y[:80]).mean() > 0.7


def test_fits_side_by_side_are_the_fits_one_after_another(monkeypatch):
    """Cross-fits (and the two views' experts) run one thread per core with one BLAS thread each: the
    same out-of-fold scores as one inner fit after another, run to run identical."""
    import os

    x, y = _data(n=160, d=700, seed=2)
    speakers = np.repeat(np.arange(16), 10)
    fit = fit_expert(x[:120], y[:120], x[120:], y[120:], 4, balanced=True)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    calls = []
    from mmfer.training import closed_form

    real = closed_form.side_by_side
    monkeypatch.setattr(closed_form, "side_by_side", lambda fn, args: (calls.append(len(args)), real(fn, args))[1])
    side = cross_fitted(fit, x[:120], y[:120], speakers[:120], 4, balanced=True)
    again = cross_fitted(fit, x[:120], y[:120], speakers[:120], 4, balanced=True)
    assert calls == [5, 5] and np.array_equal(side, again)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    alone = cross_fitted(fit, x[:120], y[:120], speakers[:120], 4, balanced=True)
    assert np.allclose(side, alone, atol=1e-4) and (side.argmax(1) == alone.argmax(1)).all()


def test_combine_weighs_experts_on_validation():
    rng = np.random.default_rng(0)
    y = np.arange(100) % 4
    good = np.eye(4)[y] * 3 + rng.normal(0, 0.5, (100, 4))
    noise = rng.normal(0, 1, (100, 4))
    w, (score, _) = combine([noise, good], y, 4)
    assert w[1] >= 0.8 and score == 1.0
    assert combine([good], y, 4)[0] == [1.0]


@pytest.mark.parametrize("one_emotion,label_mix_max", [(True, 0.5), (True, 1.0), (False, 0.5)])
def test_auto_normalisation_follows_the_validation_speakers(tmp_path, one_emotion, label_mix_max):
    """Speakers who each show one emotion: per-speaker statistics erase it, so 'auto' takes the training
    statistics, straight from the training labels by default (no validation vote) and by validation when the
    label check is off; speakers who show every emotion keep their own statistics."""
    from mmfer.config import load_config
    from mmfer.features.store import FeatureStore
    from mmfer.training.fold_data import fold_data
    from mmfer.training.folds import make_folds
    from synthetic_store import make_store

    store = FeatureStore(make_store(tmp_path / "s", sessions=4, per_speaker=24, one_emotion=one_emotion))
    cfg = load_config(None, {"features": {"normalise": "auto", "label_mix_max": label_mix_max}})
    fold = make_folds(store.corpus.table, 2, 4, "loso-session")[0]
    data = fold_data(store, fold, "audio-svm", cfg, ["ang", "hap", "neu", "sad"])
    voted = not one_emotion or label_mix_max == 1.0
    assert set(data.views) == ({"speaker", "corpus"} if voted else {"corpus"})
    assert (data.label_mix > 0.5) == one_emotion, data.label_mix
    assert data.normalise == ("corpus" if one_emotion else "speaker"), data.views
    assert set(data.experts) == {"functionals"}


def test_label_mix_distance():
    from mmfer.training.fold_data import label_mix_distance

    same = label_mix_distance(["a"] * 4 + ["b"] * 4, np.array([0, 1, 2, 3] * 2), 4)
    assert same == 0.0
    one_each = label_mix_distance(["a", "a", "b", "b", "c", "c", "d", "d"], np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)
    assert one_each == pytest.approx(0.75)  # each speaker's one class holds a quarter of the whole part
    half = label_mix_distance(["a"] * 4 + ["b"] * 4, np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)
    assert half == pytest.approx(0.5) and label_mix_distance([], np.array([], int), 4) == 0.0


@pytest.mark.parametrize("normalise", ["speaker", "corpus"])
def test_a_per_speaker_fold_keeps_experts_for_voices_without_statistics(tmp_path, normalise):
    """A fold trained on per-speaker statistics keeps the training-statistics view's experts, and its
    validation speakers with training statistics decide between them and the network; the stored experts
    reproduce their validation score. A fold on training statistics needs none."""
    import torch

    from mmfer.config import load_config
    from mmfer.data import fit_normalizers
    from mmfer.features.store import FeatureStore
    from mmfer.models.checkpoint import read_checkpoint
    from mmfer.training.cv import run_cv
    from mmfer.training.metrics import scores
    from synthetic_store import CLASSES, make_store

    path = make_store(tmp_path / "s", sessions=4, per_speaker=24, one_emotion=False)
    cfg = load_config(None, {"model": {"hidden": 8, "attention_dim": 8}, "train": {"max_epochs": 2, "threads": 1},
                             "features": {"normalise": normalise}})
    run = tmp_path / "run"
    run_cv(path, "audio", cfg, run, progress=False, echo=lambda s: None, only=["Ses01"])
    import json

    metrics = json.loads((run / "fold-1" / "metrics.json").read_text())
    ckpt = read_checkpoint(run / "fold-1" / "model.pt")
    if normalise == "corpus":
        assert metrics["normalise"] == "corpus" and "single_utterance" not in metrics
        assert "single_utterance" not in ckpt
        return
    single, stored = metrics["single_utterance"], ckpt["single_utterance"]
    assert metrics["normalise"] == "speaker" and single["uses"] == stored["uses"]
    assert single["uses"] == ("experts" if single["experts_val"] > single["network_val"] else "network")
    experts = stored["experts"]
    assert set(experts) == {"functionals", "pooled"}
    assert sum(e["weight"] for e in experts.values()) == pytest.approx(1.0)
    store = FeatureStore(path)
    folds = json.loads((run / "folds.json").read_text())["folds"][0]
    label = dict(zip(store.corpus.table["utt_id"], store.corpus.table["label"]))
    norms = fit_normalizers(store, folds["train"], list(experts), "corpus")
    logits = sum(e["weight"] * (torch.from_numpy(np.stack([norms[k].train(store.features[k].get(u))[0]
                                                          for u in folds["val"]])) @ e["coef"].T + e["icpt"])
                 for k, e in experts.items())
    y = np.array([CLASSES.index(label[u]) for u in folds["val"]])
    assert scores(y, logits.argmax(1).numpy(), 4)["ua"] == pytest.approx(single["experts_val"], abs=1e-9)


@pytest.mark.parametrize("model", ["audio-svm", "audio-whisper-linear"])
def test_a_linear_baseline_on_per_speaker_statistics_keeps_a_twin_for_voices_without_them(tmp_path, model):
    """A linear baseline trained on per-speaker statistics keeps its twin fitted on training statistics, and
    the validation speakers with training statistics decide which answers a voice without statistics; both
    validation scores are reproduced from the stored coefficients."""
    import json

    from mmfer.config import load_config
    from mmfer.data import fit_normalizers
    from mmfer.features.store import FeatureStore
    from mmfer.models.checkpoint import read_checkpoint
    from mmfer.training.cv import run_cv
    from mmfer.training.metrics import scores
    from synthetic_store import CLASSES, make_store

    path = make_store(tmp_path / "s", sessions=4, per_speaker=24, one_emotion=False)
    cfg = load_config(None, {"train": {"threads": 1}, "features": {"normalise": "speaker"}})
    run = tmp_path / "run"
    run_cv(path, model, cfg, run, progress=False, echo=lambda s: None, only=["Ses01"])
    metrics = json.loads((run / "fold-1" / "metrics.json").read_text())
    ckpt = read_checkpoint(run / "fold-1" / "model.pt")
    single, stored = metrics["single_utterance"], ckpt["single_utterance"]
    assert single["uses"] == stored["uses"] == ("experts" if single["experts_val"] > single["network_val"]
                                                else "network")
    (kind,) = stored["experts"]
    twin = stored["experts"][kind]
    assert kind == {"audio-svm": "functionals", "audio-whisper-linear": "pooled"}[model] and twin["weight"] == 1.0
    store = FeatureStore(path)
    folds = json.loads((run / "folds.json").read_text())["folds"][0]
    label = dict(zip(store.corpus.table["utt_id"], store.corpus.table["label"]))
    norm = fit_normalizers(store, folds["train"], [kind], "corpus")[kind]
    x = np.stack([norm.train(store.features[kind].get(u))[0] for u in folds["val"]]).astype(np.float64)
    y = np.array([CLASSES.index(label[u]) for u in folds["val"]])
    own = ckpt["state_dict"]["linear.weight"].double().numpy(), ckpt["state_dict"]["linear.bias"].double().numpy()
    for (w, b), key in (((twin["coef"].double().numpy(), twin["icpt"].double().numpy()), "experts_val"),
                        (own, "network_val")):
        assert scores(y, (x @ w.T + b).argmax(1), 4)["ua"] == pytest.approx(single[key], abs=1e-9)
    assert not np.allclose(own[0], twin["coef"].double().numpy())  # two fits, not one stored twice
