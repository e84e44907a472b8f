"""Ray, mmfer's one distributed engine: prepare's shards, cv's folds and batch prediction's inputs as
Ray tasks (``--ray ADDRESS|auto|local``). Without ``--ray`` this module, and Ray, are never imported.

The tasks are the units the single-machine code already has, so a run via Ray computes the same thing:

* prepare: one task per shard, rebuilding its extractor from the settings once per worker process
  (``features.prepare.cached_extractor``); the worker writes its shard file into the store folder
  (storage every node sees), or with ``transfer`` returns the arrays and the driver writes them; the
  driver merges the shards as a local prepare does, so the store is byte-identical.
* cv: one task per fold (``train.threads`` CPUs, a GPU when the cluster has them), writing the fold's
  files into the run folder; finished folds are skipped, so a run resumes per fold.
* predict: one task per group of inputs (a conversation never split, so its dialogue context is the same);
  the driver journals each group's rows and writes the output in input order.

On one machine (``local``, or a cluster started on 127.0.0.1) every Ray process must have
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in its environment, else Ray binds the machine's network
address; mmfer sets it for the processes it starts. See README "Running on a cluster".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mmfer.errors import MmferError

INSTALL_HINT = "--ray needs Ray: pip install 'mmfer[cluster]' (or pip install 'ray>=2.60,<3')"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _on_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return address == "local" or host.startswith("127.") or host == "localhost"


def connect(address: str):
    """The ``ray`` module, connected: ``local`` starts a one-machine Ray on loopback; ``auto`` joins the
    cluster this machine is part of; ``host:port`` joins that cluster's head."""
    if _on_loopback(address):
        os.environ.update(LOOPBACK_ENV)
    try:
        import ray
    except ImportError:
        raise MmferError(INSTALL_HINT) from None
    if ray.is_initialized():
        return ray
    kwargs = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, runtime_env={"env_vars": dict(LOOPBACK_ENV)}, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise MmferError(f"--ray {address}: cannot connect ({str(err).splitlines()[0][:160]}); start Ray first "
                         "(ray start --head on one node, ray start --address HEAD:PORT on the others) or use "
                         "--ray local") from None
    return ray


def _has_gpus(ray) -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def _finish(ray, refs: dict) -> Iterator[tuple[object, object]]:
    """(key, result) of each task as it finishes; a failed task raises its error in the driver."""
    pending = dict(refs)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(done[0])
        yield key, ray.get(done[0])


# ---------------------------------------------------------------- prepare

def _shard(task: Callable, args: tuple, path: str | None, ids: list[str], dtype: str):
    """In a worker: one shard's features; written to ``path`` (shared storage) or returned."""
    from mmfer.features.store import write_shard

    arrays, errors = task(*args)
    if path is None:
        return arrays, errors
    write_shard(Path(path), ids, arrays, errors, dtype)
    return None


def run_shards(address: str, folder: Path, chunks: list[list[str]], todo: list[int], task: Callable,
               args: Callable[[list[str]], tuple], dtype: str, transfer: bool, gpu: bool) -> Iterator[int]:
    """Each shard in ``todo`` as a Ray task; yields shard numbers as their files are in place."""
    from mmfer.features.store import shard_path, write_shard

    ray = connect(address)
    remote = ray.remote(_shard).options(num_cpus=1, num_gpus=1 if gpu and _has_gpus(ray) else 0, max_retries=2)
    refs = {remote.remote(task, args(chunks[k]), None if transfer else str(shard_path(folder, k)), chunks[k], dtype): k
            for k in todo}
    for k, result in _finish(ray, refs):
        if transfer:
            arrays, errors = result
            write_shard(shard_path(folder, k), chunks[k], arrays, errors, dtype)
        elif not shard_path(folder, k).is_file():
            raise MmferError(f"{shard_path(folder, k)}: a Ray worker wrote this shard where the driver cannot see it; "
                             "put the store on storage every node sees, or pass --ray-transfer")
        yield k


# ---------------------------------------------------------------- cv

def _fold(store_path: str, fold, model: str, cfg, classes: list[str], out: str) -> dict:
    from mmfer.features.store import FeatureStore
    from mmfer.training.trainer import train_fold

    return train_fold(FeatureStore(store_path), fold, model, cfg, classes, Path(out), progress=False).metrics


def cv_folds(address: str, store_path: Path, folds: list, model: str, cfg, classes: list[str], out: Path,
             echo=print) -> list[dict]:
    """Every fold's metrics, in fold order; unfinished folds trained side by side as Ray tasks."""
    from mmfer import runs

    ray = connect(address)
    threads = cfg.train.threads or 1
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": threads})})
    gpus = 1 if cfg.train.device != "cpu" and _has_gpus(ray) else 0
    remote = ray.remote(_fold).options(num_cpus=threads, num_gpus=gpus, max_retries=1)
    metrics: dict[int, dict] = {}
    refs = {}
    for fold in folds:
        m = runs.fold_done(out, fold.index)
        if m is not None:
            echo(f"{model} fold {fold.name}: done earlier (UA {m['ua']:.3f}), skipped")
            metrics[fold.index] = m
        else:
            refs[remote.remote(str(store_path), fold, model, cfg, classes, str(out))] = fold
    if refs:
        echo(f"{model}: {len(refs)} fold(s) submitted to Ray ({threads} CPU{'s' if threads > 1 else ''}"
             f"{' and a GPU' if gpus else ''} each)")
    for fold, m in _finish(ray, refs):
        echo(f"{model} fold {fold.name}: WA {m['wa']:.3f}  UA {m['ua']:.3f}  F1 {m['f1']:.3f}  "
             f"(best epoch {m['best_epoch']})")
        metrics[fold.index] = m
    return [metrics[f.index] for f in folds]


# ---------------------------------------------------------------- batch prediction

_PREDICTORS: dict[tuple, object] = {}


def _batch_predictor(recipe: tuple):
    """In a worker: the BatchPredictor a recipe names, built once per worker process."""
    if recipe not in _PREDICTORS:
        from mmfer.serve.batch import BatchPredictor
        from mmfer.serve.predictor import Predictor
        from mmfer.speech.asr import recogniser

        model_dir, fold, lexical, acoustic, asr, language, max_utterance = recipe
        pred = Predictor(Path(model_dir), fold=fold, lexical=lexical, acoustic=acoustic)
        rec = recogniser(asr, language=language) if asr and pred.needs_text else None
        _PREDICTORS[recipe] = BatchPredictor(pred, rec, language=language, max_utterance=max_utterance,
                                             read_ahead=False)
    return _PREDICTORS[recipe]


def _predict(recipe: tuple, items: list, stats: dict) -> list[dict]:
    return _batch_predictor(recipe).run(items, None, progress=False, stats=stats)


def groups_of(items: list) -> list[list[int]]:
    """Input positions grouped so that a conversation (manifest ``dialogue``) stays in one group, in order."""
    groups: list[list[int]] = []
    where: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.dialogue:
            if it.dialogue not in where:
                where[it.dialogue] = len(groups)
                groups.append([])
            groups[where[it.dialogue]].append(i)
        else:
            groups.append([i])
    return groups


def predict_items(address: str, batch, recipe: tuple, items: list, out: Path | None, echo=print) -> list[dict]:
    """BatchPredictor.run over Ray tasks: the same rows (journalled, resumable), in input order."""
    from tqdm import tqdm

    from mmfer.serve.batch import resume

    ray = connect(address)
    journal, todo = resume(items, out, echo)
    stats = batch.speaker_stats(todo)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = max(1, min(64, -(-len(todo) // (4 * cpus))))
    chunks: list[list[int]] = []
    for g in groups_of(todo):
        if not chunks or len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(g)
    remote = ray.remote(_predict).options(num_cpus=1, max_retries=1)
    recipe_ref, stats_ref = ray.put(recipe), ray.put(stats)
    refs = {remote.remote(recipe_ref, [todo[i] for i in c], stats_ref): c for c in chunks}
    rows: list[dict] = []
    bar = tqdm(total=len(todo), desc="predict (Ray)", unit="file")
    for chunk, got in _finish(ray, refs):
        if journal is not None:
            journal.add(got)
        rows += got
        bar.update(len(chunk))
    bar.close()
    order = {it.key: i for i, it in enumerate(items)}
    if journal is None:
        return sorted(rows, key=lambda r: order.get(r["key"], len(order)))
    journal.rows.sort(key=lambda r: order.get(r["key"], len(order)))
    journal.finish()
    return journal.rows
