"""What a model trained with per-speaker statistics does with a voice it has no statistics of.

A fold that normalises each speaker by their own statistics (``features.normalise`` speaker, or auto's
choice) learned on inputs from which the voice was removed. Predicting one utterance of an unknown voice
(``mmfer predict`` of one file, the demo, a batch speaker with fewer recordings than
``speaker_min_utterances``) has only the training statistics, and the network then reads inputs unlike any
it was trained on: on the sample corpus (`audio`) its UA fell from 0.84-0.93 to 0.65-0.77 per fold, where
the fallback below scores 0.82-0.88 (``benchmarks/single_utterance.py``).

The closed-form experts are cheap to fit in the other view, so each such fold also gets a *fallback*: the
experts of its speaker-normalised streams fitted on training-statistics inputs ('auto' fitted them already
to choose the view), with the model's own experts of its other streams (the text's sentence and context
scores), weighed on validation like the model's start (``closed_form.combine``, per modality, then across).
The validation speakers, normalised by the training statistics as such a prediction would be, then decide
between the network and the fallback; the checkpoint keeps the fallback and the choice
(``single_utterance``), and the Predictor uses it wherever a voice's own statistics are missing.

The linear baselines on a speaker-normalised stream (``audio-svm``, ``audio-whisper-linear``) have the same
problem and the same remedy, one expert deep: their twin fitted on training statistics, kept where the
validation speakers prefer it (``linear_fallback``).
"""

from __future__ import annotations

import numpy as np
import torch

from mmfer.config import MmferConfig
from mmfer.data import StreamNorm, UtteranceSet, fit_normalizers
from mmfer.features.store import FeatureStore
from mmfer.models.inference import infer
from mmfer.streams import stream
from mmfer.training.closed_form import ExpertFit, combine, fit_expert
from mmfer.training.fold_data import FoldData, balanced_loss, stream_vectors
from mmfer.training.metrics import scores


def single_utterance_fallback(model, data: FoldData, store: FeatureStore, cfg: MmferConfig, classes: list[str],
                              device) -> dict | None:
    """For a fold trained with per-speaker statistics: the fallback experts and which of network and
    fallback scored higher on the validation speakers with training statistics (what the checkpoint's
    ``single_utterance`` holds; its scores go to metrics.json). None where the fold used training statistics
    anyway or the model has no closed-form expert on a speaker-normalised stream."""
    experts = model.prefit_encoders() if hasattr(model, "prefit_encoders") else {}
    own = [k for k in experts if stream(k).speaker_normalised]
    if data.normalise != "speaker" or not own or not len(data.val_ids):
        return None
    objective, y_val, n_classes = cfg.train.objective, data.sets["val"].labels, len(classes)
    fits = corpus_fits(own, data, store, cfg, n_classes)
    coefs = {k: (f.coef, f.icpt) for k, f in fits.items()}
    val_logits = {k: f.val_logits for k, f in fits.items()}
    with torch.no_grad():
        for k, enc in experts.items():
            if k not in fits:  # not normalised per speaker: the model's own expert, same inputs either way
                w, b = enc.linear.weight.cpu().double().numpy(), enc.linear.bias.cpu().double().numpy()
                x = np.concatenate(data.sets["val"].arrays[k]).astype(np.float64)
                coefs[k], val_logits[k] = (w, b), x @ w.T + b
    weights = _weigh(val_logits, y_val, n_classes, objective)
    fallback_val = sum(weights[k] * val_logits[k] for k in weights)
    experts_score = scores(y_val, fallback_val.argmax(1), n_classes)[objective]
    network_score = _network_score(model, data, store, cfg, classes, device)
    uses = "experts" if experts_score > network_score else "network"
    return {"uses": uses, "network_val": float(network_score), "experts_val": float(experts_score),
            "experts": {k: {"coef": torch.tensor(coefs[k][0], dtype=torch.float32),
                            "icpt": torch.tensor(coefs[k][1], dtype=torch.float32), "weight": float(weights[k])}
                        for k in weights}}


def recorded(single: dict | None) -> dict:
    """What metrics.json keeps of a fold's fallback: the choice and both validation scores (the
    coefficients go to the checkpoint only)."""
    return {"single_utterance": {k: v for k, v in single.items() if k != "experts"}} if single else {}


def linear_fallback(fit: ExpertFit, kind: str, data: FoldData, store: FeatureStore, cfg: MmferConfig,
                    classes: list[str]) -> dict | None:
    """The same for a linear baseline (``audio-svm``, ``audio-whisper-linear``) trained on per-speaker
    statistics: its twin fitted on training statistics stands in where the validation speakers, normalised
    by the training statistics, score the twin higher than the model itself. None where the fold used
    training statistics anyway or the stream is not normalised per speaker (``text-tfidf``)."""
    if data.normalise != "speaker" or not stream(kind).speaker_normalised or not len(data.val_ids):
        return None
    objective, y_val, n_classes = cfg.train.objective, data.sets["val"].labels, len(classes)
    twin = corpus_fits([kind], data, store, cfg, n_classes)[kind]
    x_val = stream_vectors(store, kind, data.val_ids, StreamNorm(data.norms[kind].train, {}))
    own_score = scores(y_val, fit.logits(x_val).argmax(1), n_classes)[objective]
    twin_score = scores(y_val, twin.val_logits.argmax(1), n_classes)[objective]
    return {"uses": "experts" if twin_score > own_score else "network", "network_val": float(own_score),
            "experts_val": float(twin_score),
            "experts": {kind: {"coef": torch.tensor(twin.coef, dtype=torch.float32),
                               "icpt": torch.tensor(twin.icpt, dtype=torch.float32), "weight": 1.0}}}


def corpus_fits(kinds: list[str], data: FoldData, store: FeatureStore, cfg: MmferConfig, n_classes: int
                ) -> dict[str, ExpertFit]:
    """The training-statistics view's expert of each of ``kinds``: kept from 'auto''s choice of the view, or
    fitted here where normalise 'speaker' was asked for and that view was never fitted."""
    fits = {k: data.corpus_experts.get(k) for k in kinds}
    missing = [k for k, f in fits.items() if f is None]
    if missing:
        norms = fit_normalizers(store, data.train_ids, missing, "corpus")
        for k in missing:
            xs = [stream_vectors(store, k, ids, norms[k]) for ids in (data.train_ids, data.val_ids)]
            fits[k] = fit_expert(xs[0], data.sets["train"].labels, xs[1], data.sets["val"].labels, n_classes,
                                 balanced_loss(cfg), cfg.train.objective)
    return fits


def _weigh(val_logits: dict[str, np.ndarray], y_val: np.ndarray, n_classes: int, objective: str) -> dict[str, float]:
    """Each expert's weight: within a modality, then across the modalities (both on validation)."""
    by_modality: dict[str, list[str]] = {}
    for k in val_logits:
        by_modality.setdefault(stream(k).modality, []).append(k)
    inner, joined = {}, {}
    for m, ks in by_modality.items():
        w, _ = combine([val_logits[k] for k in ks], y_val, n_classes, objective)
        inner.update(zip(ks, w))
        joined[m] = sum(inner[k] * val_logits[k] for k in ks)
    outer, _ = combine(list(joined.values()), y_val, n_classes, objective)
    across = dict(zip(joined, outer))
    return {k: float(across[stream(k).modality] * inner[k]) for k in val_logits}


def _network_score(model, data: FoldData, store: FeatureStore, cfg: MmferConfig, classes: list[str],
                   device) -> float:
    """The trained network on the validation speakers normalised by the training statistics alone."""
    plain = {k: StreamNorm(n.train, {}) for k, n in data.norms.items()}
    val = data.sets["val"]
    view = UtteranceSet.from_store(store, data.val_ids, classes, list(val.arrays), plain,
                                   cfg.model.frame_reduction, val.in_memory)
    view.words = val.words
    probs = infer(model, view, device)["probs"]
    return scores(val.labels, probs.argmax(1), len(classes))[cfg.train.objective]
