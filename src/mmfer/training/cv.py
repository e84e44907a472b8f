"""`mmfer cv`: speaker-independent cross-validation of one model over a feature store, resumable."""

from __future__ import annotations

from pathlib import Path

import yaml

from mmfer.config import MmferConfig
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.io import read_json, write_json, write_text
from mmfer.models import kinds_of
from mmfer.models.nets import MODALITY
from mmfer.training.folds import make_folds
from mmfer.training.metrics import mean_std


def run_cv(store_path: str | Path, model: str, cfg: MmferConfig, out: str | Path, progress: bool = True,
           echo=print) -> dict:
    store = FeatureStore(store_path)
    kinds = kinds_of(model)
    store.corpus.require([MODALITY[k] for k in kinds], f"model '{model}'")
    missing = [k for k in kinds if k not in store.features]
    if missing:
        raise MmferError(f"{store.path} has no {', '.join(missing)} features; rerun mmfer prepare")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump({"model_name": model, "store": str(store.path),
                               **cfg.model_dump(include={"model", "train"})}, sort_keys=False)
    cfg_file = out / "config.yaml"
    if cfg_file.is_file() and cfg_file.read_text() != resolved:
        raise MmferError(f"{out} holds a run with another model or config; resume it with the same settings "
                         f"(see {cfg_file}) or choose a new --out")
    write_text(cfg_file, resolved)
    classes = list(store.corpus.labels)
    folds = make_folds(store.corpus.table, cfg.train.val_speakers, cfg.train.folds)
    from mmfer.training.trainer import train_fold  # torch import only when training

    fold_metrics = []
    for fold in folds:
        fold_dir = out / f"fold-{fold.index + 1}"
        done = fold_dir / "metrics.json"
        if done.is_file():
            m = read_json(done)
            echo(f"{model} fold {fold.name}: done earlier (UA {m['ua']:.3f}), skipped")
        else:
            m = train_fold(store, fold, model, cfg, classes, fold_dir, progress).metrics
            echo(f"{model} fold {fold.name}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
                 f"(best epoch {m['best_epoch']})")
        fold_metrics.append(m)
    summary = summarize(model, classes, fold_metrics)
    write_json(out / "summary.json", summary)
    return summary


def summarize(model: str, classes: list[str], fold_metrics: list[dict]) -> dict:
    import numpy as np

    pooled = np.sum([np.asarray(m["confusion"]) for m in fold_metrics], axis=0)
    return {
        "model": model,
        "classes": classes,
        "folds": [{"fold": m["fold"], "test": m["test"], "wa": m["wa"], "ua": m["ua"], "f1": m["f1"],
                   "n_test": m["n_test"], "best_epoch": m["best_epoch"]} for m in fold_metrics],
        "wa": mean_std([m["wa"] for m in fold_metrics]),
        "ua": mean_std([m["ua"] for m in fold_metrics]),
        "f1": mean_std([m["f1"] for m in fold_metrics]),
        "confusion": pooled.tolist(),
    }


def table(summaries: list[dict]) -> str:
    """The comparison table printed after cv/quickstart."""
    lines = [f"{'model':<8} {'WA':>13} {'UA':>13} {'macro-F1':>13}", "-" * 50]
    for s in summaries:
        cells = [f"{100 * s[k]['mean']:5.1f} ± {100 * s[k]['std']:4.1f}" for k in ("wa", "ua", "f1")]
        lines.append(f"{s['model']:<8} " + " ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)
