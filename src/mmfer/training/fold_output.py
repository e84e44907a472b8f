"""What a fold leaves in its run folder: the test part scored once, predictions, checkpoint, metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from mmfer import runs
from mmfer.config import MmferConfig
from mmfer.features.store import FeatureStore
from mmfer.streams import STREAMS
from mmfer.training.fold_data import FoldData
from mmfer.training.folds import Fold
from mmfer.training.metrics import scores


@dataclass
class FoldResult:
    metrics: dict
    predictions: pd.DataFrame


def finish_fold(store: FeatureStore, fold: Fold, model: nn.Module, cfg: MmferConfig, classes: list[str],
                run_dir: Path, data: FoldData, test: dict, started: float, extra_metrics: dict,
                extra_checkpoint: dict | None = None) -> FoldResult:
    """Score the test part once, write predictions, checkpoint and metrics (metrics last) through runs."""
    labels = data.sets["test"].labels
    pred = test["probs"].argmax(1)
    result = scores(labels, pred, len(classes))
    normalise = {"mode": data.normalise, "speaker_min_utterances": cfg.features.speaker_min_utterances}
    seed = {"seed": fold.seed} if fold.seed is not None else {}
    metrics = {"fold": fold.name, "test": fold.name, **seed, "test_speakers": fold.test_speakers,
               "val_speakers": fold.val_speakers, "n_train": len(data.train_ids), "n_val": len(data.val_ids),
               "n_test": len(data.test_ids), "normalise": data.normalise,
               **({"normalise_scores": data.views} if data.views else {}),
               **({"label_mix": data.label_mix} if data.label_mix is not None else {}), **extra_metrics,
               "classes": classes,
               **result, "seconds": round(time.perf_counter() - started, 3)}
    n = len(data.test_ids)
    speaker = dict(zip(store.corpus.table["utt_id"], store.corpus.table["speaker"].astype(str)))
    columns = {"utt_id": data.test_ids, "fold": fold.name, "speaker": [speaker[u] for u in data.test_ids],
               "true": [classes[i] for i in labels],
               "pred": [classes[i] for i in pred], "probs": [p.tolist() for p in test["probs"]]}
    for s in STREAMS.values():  # every attention column, empty where this model has no such stream
        if s.attention_column:
            att = test["attention"].get(s.name)
            columns[s.attention_column] = [a.tolist() for a in att] if att else [None] * n
    columns["gate"] = test["gate"]
    predictions = pd.DataFrame(columns)
    features = {k: store.features[k].meta["settings"] for k in data.dims if k in store.features}
    ckpt = runs.fold_dir(run_dir, fold.index, fold.seed) / runs.CHECKPOINT
    runs.save_checkpoint(ckpt, model, cfg.model, classes, data.dims,
                         {k: n.train for k, n in data.norms.items()}, features,
                         {"normalise": normalise, **(extra_checkpoint or {})})
    runs.write_fold(run_dir, fold.index, predictions, metrics, fold.seed)
    return FoldResult(metrics, predictions)
