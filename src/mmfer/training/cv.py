"""`mmfer cv`: speaker-independent cross-validation of one model over a feature store, resumable."""

from __future__ import annotations

from pathlib import Path

from mmfer import runs
from mmfer.config import MmferConfig
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.models.registry import get_model
from mmfer.streams import extracted
from mmfer.training.folds import make_folds, resolve_protocol
from mmfer.training.metrics import mean_std


def run_cv(store_path: str | Path, model: str, cfg: MmferConfig, out: str | Path, progress: bool = True,
           echo=print, only: list[str] | None = None, executor=None, distributed: bool = False) -> dict:
    """Every fold of the protocol (``only``: those named): one after the other in this process, side by side
    on an ``executor`` (mmfer.engine; e.g. Ray tasks), or each by all processes of a torchrun group
    (``distributed``)."""
    group = None
    if distributed:
        from mmfer.training import distributed as dist

        group = dist.start(cfg.train.device)
        if not group.leader:
            echo, progress = (lambda m: None), False
    store = FeatureStore(store_path)
    spec = get_model(model)
    store.corpus.require(spec.modalities, f"model '{model}'")
    missing = [k for k in extracted(spec.streams) if k not in store.features]
    if missing:
        raise MmferError(f"{store.path} has no {', '.join(missing)} features; rerun mmfer prepare")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if group is None or group.leader:
        runs.write_config(out, cfg.model_dump(), {
            "model": model, "store": str(store.path),
            "features": {k: store.features[k].meta["settings"] for k in extracted(spec.streams)},
            "corpus": store.manifest.get("corpus"), "versions": runs.versions()})
    classes = list(store.corpus.labels)
    protocol = resolve_protocol(store.corpus.table, cfg.train.protocol)
    folds = make_folds(store.corpus.table, cfg.train.val_speakers, cfg.train.folds, protocol)
    if only:
        unknown = sorted(set(only) - {f.name for f in folds})
        if unknown:
            raise MmferError(f"--fold {', '.join(unknown)}: no such fold; this protocol's folds are "
                             f"{', '.join(f.name for f in folds)}")
        folds = [f for f in folds if f.name in only]
    if executor is not None:
        fold_metrics = _folds_on(executor, store.path, folds, model, cfg, classes, out, echo)
    else:
        fold_metrics = [_fold(store, fold, model, cfg, classes, out, progress, echo, group) for fold in folds]
    summary = summarize(model, classes, fold_metrics, protocol)
    if group is None or group.leader:
        runs.write_summary(out, summary)
    return summary


def _fold(store: FeatureStore, fold, model: str, cfg: MmferConfig, classes: list[str], out: Path, progress: bool,
          echo, group=None) -> dict:
    """One fold: its metrics from an earlier run, else trained now (by every process of a DDP group)."""
    from mmfer.training.fold import trainer_of  # torch import only when training

    m = runs.fold_done(out, fold.index)
    if m is not None:
        echo(f"{model} fold {fold.name}: done earlier (UA {m['ua']:.3f}), skipped")
        return m
    trainer = trainer_of(model)
    if group is None or group.leader or trainer.distributed:
        trainer.train(store, fold, model, cfg, classes, out, progress)
    if group is not None:
        from mmfer.training.distributed import barrier

        barrier()  # rank 0 has written the fold
    m = runs.fold_done(out, fold.index)
    echo(f"{model} fold {fold.name}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
         f"(best epoch {m['best_epoch']})")
    return m


def fold_job(store_path: str, fold, model: str, cfg: MmferConfig, classes: list[str], out: str) -> dict:
    """One fold in any process (an executor's unit of work): trains it and writes its folder."""
    from mmfer.training.fold import train_fold

    return train_fold(FeatureStore(store_path), fold, model, cfg, classes, Path(out), progress=False).metrics


def _folds_on(executor, store_path: Path, folds: list, model: str, cfg: MmferConfig, classes: list[str], out: Path,
              echo=print) -> list[dict]:
    """Every fold's metrics, in fold order; unfinished folds trained side by side on the executor
    (``train.threads`` CPUs each, a GPU each when it has them); finished ones skipped."""
    threads = cfg.train.threads or 1
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": threads})})
    gpus = 1 if cfg.train.device != "cpu" and executor.has_gpus() else 0
    metrics: dict[int, dict] = {}
    todo = []
    for fold in folds:
        m = runs.fold_done(out, fold.index)
        if m is not None:
            echo(f"{model} fold {fold.name}: done earlier (UA {m['ua']:.3f}), skipped")
            metrics[fold.index] = m
        else:
            todo.append(fold)
    if todo:
        echo(f"{model}: {len(todo)} fold(s) submitted to {getattr(executor, 'name', 'workers')} "
             f"({threads} CPU{'s' if threads > 1 else ''}"
             f"{' and a GPU' if gpus else ''} each)")
    jobs = [(str(store_path), fold, model, cfg, classes, str(out)) for fold in todo]
    for i, m in executor.map(fold_job, jobs, cpus=threads, gpus=gpus):
        fold = todo[i]
        echo(f"{model} fold {fold.name}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
             f"(best epoch {m['best_epoch']})")
        metrics[fold.index] = m
    return [metrics[f.index] for f in folds]


def summarize(model: str, classes: list[str], fold_metrics: list[dict], protocol: str = "") -> dict:
    import numpy as np

    pooled = np.sum([np.asarray(m["confusion"]) for m in fold_metrics], axis=0)
    return {
        "model": model,
        "protocol": protocol,
        "classes": classes,
        "folds": [{"fold": m["fold"], "test": m["test"], "wa": m["wa"], "ua": m["ua"], "f1": m["f1"],
                   "wf1": m.get("wf1"), "n_test": m["n_test"], "best_epoch": m["best_epoch"]}
                  for m in fold_metrics],
        "wa": mean_std([m["wa"] for m in fold_metrics]),
        "ua": mean_std([m["ua"] for m in fold_metrics]),
        "f1": mean_std([m["f1"] for m in fold_metrics]),
        "wf1": mean_std([m.get("wf1", float("nan")) for m in fold_metrics]),
        "seconds_per_fold": mean_std([m.get("seconds", float("nan")) for m in fold_metrics]),
        "confusion": pooled.tolist(),
    }


def table(summaries: list[dict]) -> str:
    """The comparison table printed after cv/quickstart (%, mean ± std over folds; wall seconds per fold)."""
    keys = ("wa", "ua", "f1", "wf1")
    w = max([11, *(len(s["model"]) for s in summaries)])
    lines = [f"{'model':<{w}} {'WA':>13} {'UA':>13} {'macro-F1':>13} {'weighted-F1':>13} {'s/fold':>7}",
             "-" * (w + 64)]
    for s in summaries:
        cells = [f"{100 * s[k]['mean']:5.1f} ± {100 * s[k]['std']:4.1f}" if k in s else "" for k in keys]
        sec = s.get("seconds_per_fold", {}).get("mean", float("nan"))
        lines.append(f"{s['model']:<{w}} " + " ".join(f"{c:>13}" for c in cells) + f" {sec:>7.1f}")
    return "\n".join(lines)
