"""`mmfer cv`: speaker-independent cross-validation of one model over a feature store, resumable."""

from __future__ import annotations

from dataclasses import replace
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
    table_ = store.corpus.table
    protocol = resolve_protocol(table_, cfg.train.protocol)
    folds = make_folds(table_, cfg.train.val_speakers, cfg.train.folds, protocol, cfg.train.folds_file, warn=echo)
    if group is None or group.leader:
        _write_folds(out, folds, protocol)
    if only:
        unknown = sorted(set(only) - {f.name for f in folds})
        if unknown:
            raise MmferError(f"--fold {', '.join(unknown)}: no such fold; this protocol's folds are "
                             f"{', '.join(f.name for f in folds)}")
        folds = [f for f in folds if f.name in only]
    units = seed_units(folds, cfg)
    if executor is not None:
        fold_metrics = _folds_on(executor, store.path, units, model, classes, out, echo)
    else:
        fold_metrics = [_fold(store, fold, model, c, classes, out, progress, echo, group) for fold, c in units]
    summary = summarize(model, classes, fold_metrics, protocol)
    tested = pooled_predictions(out, [f for f, _ in units])
    summary["intervals"] = pooled_intervals(tested, classes, store, cfg)
    if "seeds" in summary and len(summary["seeds"]["seeds"]) > 1:
        summary["seeds"]["ensemble"] = seed_ensemble(tested, classes)
    if group is None or group.leader:
        runs.write_summary(out, summary)
    return summary


def seed_units(folds: list, cfg: MmferConfig) -> list[tuple]:
    """(fold, config) pairs to train: each fold once, or once per seed of ``train.seeds`` (then the fold
    carries its seed, which names its folder fold-N-seed-S)."""
    if not cfg.train.seeds:
        return [(f, cfg) for f in folds]
    return [(replace(f, seed=s), cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": s})}))
            for f in folds for s in cfg.train.seeds]


def _write_folds(out: Path, folds: list, protocol: str) -> None:
    """folds.json: the partition of this run; a resumed run must have the same one."""
    from mmfer.io import read_json
    from mmfer.training.fold_files import write_folds

    path = out / runs.FOLDS
    if path.is_file():
        old = read_json(path)
        parts = [(f["name"], sorted(f["train"]), sorted(f["val"]), sorted(f["test"])) for f in old.get("folds", [])]
        if parts != [(f.name, sorted(f.train), sorted(f.val), sorted(f.test)) for f in folds]:
            raise MmferError(f"{out} was run on other folds (see {path}); resume it with the same partition or "
                             "choose a new --out")
        return
    write_folds(path, folds, protocol)


def pooled_predictions(out: Path, folds: list):
    """Every fold's (and seed's) test predictions in one table, with ``seed`` and ``fold_index`` columns."""
    import pandas as pd

    return pd.concat([runs.fold_predictions(out, f.index, f.seed).assign(seed=f.seed, fold_index=f.index)
                      for f in folds], ignore_index=True)


def pooled_intervals(p, classes: list[str], store: FeatureStore, cfg: MmferConfig) -> dict:
    """Bootstrap intervals of the metrics of the test predictions ``p`` (pooled_predictions) pooled (each seed
    a prediction vector of its own), resampling test speakers, then their utterances."""
    from mmfer.uncertainty import by_seed, intervals

    speaker = dict(zip(store.corpus.table["utt_id"], store.corpus.table["speaker"].astype(str)))
    y, preds, ids = by_seed(p, classes)
    return intervals(y, preds, [speaker.get(u, "?") for u in ids], len(classes), cfg.train.bootstrap,
                     seed=cfg.train.seed)


def seed_ensemble(p, classes: list[str]) -> dict:
    """Each fold's seeds as one model (their mean probabilities per test utterance of ``p``, pooled_predictions:
    what `predict` of the run does), scored per fold: mean ± std over folds, as the main table, and the
    pooled scores. The seeds' own mean says what one seed can be expected to give; this says what the run
    gives."""
    import numpy as np

    from mmfer.training.metrics import scores

    index = {c: i for i, c in enumerate(classes)}
    per_fold, ys, preds = [], [], []
    for _, part in p.groupby("fold_index", sort=True):
        utts = list(part.groupby("utt_id", sort=False))
        probs = np.stack([np.mean(np.stack(u["probs"].to_numpy()), axis=0) for _, u in utts])
        y = np.array([index[u["true"].iloc[0]] for _, u in utts])
        per_fold.append(scores(y, probs.argmax(1), len(classes)))
        ys.append(y)
        preds.append(probs.argmax(1))
    pooled = scores(np.concatenate(ys), np.concatenate(preds), len(classes))
    keys = ("wa", "ua", "f1", "wf1")
    return {**{k: mean_std([f[k] for f in per_fold]) for k in keys}, "pooled": {k: pooled[k] for k in keys}}


def _fold(store: FeatureStore, fold, model: str, cfg: MmferConfig, classes: list[str], out: Path, progress: bool,
          echo, group=None) -> dict:
    """One fold: its metrics from an earlier run, else trained now (by every process of a DDP group)."""
    from mmfer.training.fold import trainer_of  # torch import only when training

    m = runs.fold_done(out, fold.index, fold.seed)
    if m is not None:
        echo(f"{model} fold {_label(fold)}: done earlier (UA {m['ua']:.3f}), skipped")
        return m
    trainer = trainer_of(model)
    if group is None or group.leader or trainer.distributed:
        trainer.train(store, fold, model, cfg, classes, out, progress)
    if group is not None:
        from mmfer.training.distributed import barrier

        barrier()  # rank 0 has written the fold
    m = runs.fold_done(out, fold.index, fold.seed)
    echo(f"{model} fold {_label(fold)}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
         f"(best epoch {m['best_epoch']})")
    return m


def fold_job(store_path: str, fold, model: str, cfg: MmferConfig, classes: list[str], out: str) -> dict:
    """One fold in any process (an executor's unit of work): trains it and writes its folder."""
    from mmfer.training.fold import train_fold

    return train_fold(FeatureStore(store_path), fold, model, cfg, classes, Path(out), progress=False).metrics


def _label(fold) -> str:
    return fold.name if fold.seed is None else f"{fold.name} seed {fold.seed}"


def _folds_on(executor, store_path: Path, units: list, model: str, classes: list[str], out: Path,
              echo=print) -> list[dict]:
    """Every (fold, seed)'s metrics, in order; unfinished ones trained side by side on the executor
    (``train.threads`` CPUs each, a GPU each when it has them); finished ones skipped."""
    cfg = units[0][1]
    threads = cfg.train.threads or 1
    gpus = 1 if cfg.train.device != "cpu" and executor.has_gpus() else 0
    metrics: dict[int, dict] = {}
    todo = []
    for i, (fold, c) in enumerate(units):
        m = runs.fold_done(out, fold.index, fold.seed)
        if m is not None:
            echo(f"{model} fold {_label(fold)}: done earlier (UA {m['ua']:.3f}), skipped")
            metrics[i] = m
        else:
            todo.append((i, fold, c.model_copy(update={"train": c.train.model_copy(update={"threads": threads})})))
    if todo:
        echo(f"{model}: {len(todo)} fold(s) submitted to {getattr(executor, 'name', 'workers')} "
             f"({threads} CPU{'s' if threads > 1 else ''}"
             f"{' and a GPU' if gpus else ''} each)")
    jobs = [(str(store_path), fold, model, c, classes, str(out)) for _, fold, c in todo]
    for j, m in executor.map(fold_job, jobs, cpus=threads, gpus=gpus):
        i, fold, _ = todo[j]
        echo(f"{model} fold {_label(fold)}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
             f"(best epoch {m['best_epoch']})")
        metrics[i] = m
    return [metrics[i] for i in range(len(units))]


def summarize(model: str, classes: list[str], fold_metrics: list[dict], protocol: str = "") -> dict:
    """Mean ± std over folds (a fold's score: the mean over its seeds), and, with several seeds, mean ± std
    over seeds (a seed's score: its mean over folds); the confusion matrix pooled over folds and seeds."""
    import numpy as np

    pooled = np.sum([np.asarray(m["confusion"]) for m in fold_metrics], axis=0)
    keys = ("wa", "ua", "f1", "wf1")
    folds = list(dict.fromkeys(m["fold"] for m in fold_metrics))
    seeds = list(dict.fromkeys(m["seed"] for m in fold_metrics if "seed" in m))

    def per(group: str, names: list, k: str) -> list[float]:
        return [float(np.mean([m.get(k, float("nan")) for m in fold_metrics if m.get(group) == n])) for n in names]

    out = {
        "model": model,
        "protocol": protocol,
        "classes": classes,
        "folds": [{"fold": m["fold"], "test": m["test"], **({"seed": m["seed"]} if "seed" in m else {}),
                   "wa": m["wa"], "ua": m["ua"], "f1": m["f1"], "wf1": m.get("wf1"), "n_test": m["n_test"],
                   "best_epoch": m["best_epoch"]} for m in fold_metrics],
        **{k: mean_std(per("fold", folds, k)) for k in keys},
        "seconds_per_fold": mean_std([m.get("seconds", float("nan")) for m in fold_metrics]),
        "confusion": pooled.tolist(),
    }
    if seeds:
        out["seeds"] = {"seeds": seeds, **{k: mean_std(per("seed", seeds, k)) for k in keys}}
    return out


def table(summaries: list[dict]) -> str:
    """The comparison table printed after cv/quickstart (%, mean ± std over folds; wall seconds per fold),
    then each run's pooled scores with their bootstrap intervals, and its spread over seeds where it has
    several."""
    keys = ("wa", "ua", "f1", "wf1")
    w = max([11, *(len(s["model"]) for s in summaries)])
    lines = [f"{'model':<{w}} {'WA':>13} {'UA':>13} {'macro-F1':>13} {'weighted-F1':>13} {'s/fold':>7}",
             "-" * (w + 64)]
    for s in summaries:
        cells = [f"{100 * s[k]['mean']:5.1f} ± {100 * s[k]['std']:4.1f}" if k in s else "" for k in keys]
        sec = s.get("seconds_per_fold", {}).get("mean", float("nan"))
        lines.append(f"{s['model']:<{w}} " + " ".join(f"{c:>13}" for c in cells) + f" {sec:>7.1f}")
    with_ci = [s for s in summaries if s.get("intervals")]
    if with_ci:
        level = with_ci[0]["intervals"]["level"]
        lines += ["", f"pooled test predictions, {100 * level:.0f} % interval (bootstrap over test speakers, then "
                  "their utterances)",
                  f"{'model':<{w}} {'WA':>19} {'UA':>19} {'macro-F1':>19} {'weighted-F1':>19}", "-" * (w + 80)]
        for s in with_ci:
            iv = s["intervals"]
            cells = [f"{100 * iv[k]['value']:4.1f} [{100 * iv[k]['low']:4.1f}, {100 * iv[k]['high']:4.1f}]"
                     for k in keys]
            lines.append(f"{s['model']:<{w}} " + " ".join(f"{c:>19}" for c in cells))
    with_seeds = [s for s in summaries if s.get("seeds")]
    if with_seeds:
        lines += ["", "over seeds (each seed's mean over folds; ensemble: each fold's seeds averaged, mean over folds)",
                  f"{'model':<{w}} {'seeds':>9} " + " ".join(f"{h:>13}" for h in ("WA", "UA", "macro-F1",
                                                                                  "weighted-F1"))]
        for s in with_seeds:
            sd = s["seeds"]
            cells = [f"{100 * sd[k]['mean']:5.1f} ± {100 * sd[k]['std']:4.1f}" for k in keys]
            lines.append(f"{s['model']:<{w}} {','.join(map(str, sd['seeds'])):>9} " + " ".join(f"{c:>13}"
                                                                                              for c in cells))
            if sd.get("ensemble"):  # the seeds of each fold averaged into one model (what predict uses)
                ens = [f"{100 * sd['ensemble'][k]['mean']:5.1f} ± {100 * sd['ensemble'][k]['std']:4.1f}"
                       for k in keys]
                lines.append(f"{'':<{w}} {'ensemble':>9} " + " ".join(f"{c:>13}" for c in ens))
    return "\n".join(lines)
