"""`mmfer prepare`: corpus in, feature store out; parallel, resumable, atomic."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmfer.config import FeatureConfig
from mmfer.corpora import Corpus, read_corpus
from mmfer.corpora import save as save_corpus
from mmfer.errors import MmferError
from mmfer.features.audio import AudioError
from mmfer.features.base import extractor_for, extractor_from_settings
from mmfer.features.store import (
    STORE_VERSION,
    discard_finished,
    feature_dir_name,
    finalize,
    intact,
    remove_stale_temp,
    shard_path,
    store_lock,
    write_errors,
    write_shard,
)
from mmfer.io import read_json, write_json
from mmfer.streams import stream

WORDS_BATCH = 64


@dataclass
class PrepareResult:
    store: Path
    extracted: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def corpus_digest(corpus: Corpus) -> str:
    """Changes when the utterances (ids, audio paths and segments, words) change: a new corpus gets new
    features."""
    t = corpus.table
    h = hashlib.sha1()
    for u, a, w, s, e in zip(t["utt_id"], t["audio"], t["words"], t["start"], t["end"]):
        part = f"\t{s:.3f}-{e:.3f}" if corpus.name == "manifest" and a and np.isfinite(s) and np.isfinite(e) else ""
        h.update(f"{u}\t{a}{part}\t{' '.join(w)}\n".encode())
    return h.hexdigest()[:12]


def prepare(corpus_path: str | Path, out: str | Path, corpus: str | None = None, labels: str | None = None,
            features: FeatureConfig | None = None, strict: bool = False, progress: bool = True,
            warn=print, allow_outside: bool = False, recogniser=None, language: str | None = None,
            ray: str | None = None, ray_transfer: bool = False, **overrides) -> PrepareResult:
    """Extract every stream of ``features.streams`` whose modality the corpus has, one folder each.

    ``overrides`` are ``features`` fields (``workers=2``, ``acoustic="egemaps"``, ...). ``recogniser``
    (speech.asr): build the text streams from recognised instead of typed transcripts. ``ray``: run the
    shards as Ray tasks on that cluster (mmfer.cluster); ``ray_transfer``: workers return the arrays
    instead of writing shard files (when the store is not on storage every node sees).
    """
    features = FeatureConfig.model_validate({**(features or FeatureConfig()).model_dump(), **overrides})
    out = Path(out).expanduser().resolve()
    c = read_corpus(corpus_path, corpus, labels, allow_outside=allow_outside)
    for p in c.problems:
        warn(f"warning: {p}")
    if len(c.table) == 0:
        raise MmferError(f"{corpus_path}: no utterance left after the label policy and filters")
    out.mkdir(parents=True, exist_ok=True)
    engine = Engine(features.workers or os.cpu_count() or 1, ray, ray_transfer)
    with store_lock(out):
        return _prepare(out, c, features, strict, progress, recogniser, language, warn, engine)


@dataclass
class Engine:
    """Where shards run: a local process pool of ``workers``, or Ray tasks on the cluster ``ray`` names."""

    workers: int = 1
    ray: str | None = None
    ray_transfer: bool = False


def _prepare(out: Path, c: Corpus, features: FeatureConfig, strict: bool, progress: bool, recogniser=None,
             language: str | None = None, warn=print, engine: Engine | None = None) -> PrepareResult:
    engine = engine or Engine(features.workers or os.cpu_count() or 1)
    remove_stale_temp(out)
    asr_errors: list[tuple[str, str, str]] = []
    if recogniser is not None:
        from mmfer.speech.transcribe import transcribe_corpus

        c.require(("audio",), "--transcribe")
        c, asr_errors = transcribe_corpus(c, out, recogniser, language, progress)
    save_corpus(c, out / "corpus.parquet")
    digest = corpus_digest(c)
    ids = c.table["utt_id"].tolist()
    result = PrepareResult(out)
    result.errors += asr_errors
    folders: dict[str, str] = {}
    # start/end name a segment of a long file only in manifests; IEMOCAP's are turn times in the dialog
    nan = [float("nan")] * len(ids)
    starts, ends = (c.table["start"], c.table["end"]) if c.name == "manifest" else (nan, nan)
    audio = dict(zip(ids, zip(c.table["audio"], starts, ends)))
    words = dict(zip(ids, c.table["words"]))
    for name in features.streams:
        if stream(name).derived_from or stream(name).modality not in c.modalities:
            continue
        ext = extractor_for(name, features)
        settings = {**ext.settings(), "corpus": digest}
        if getattr(ext, "bytes_per_second", None):
            warn_cost(ext, c, warn)
        gpu = bool(getattr(ext, "wants_gpu", False))
        if ext.input == "audio":
            folders[name] = _run(out, settings, ids, features.shard_size, progress, result, _audio_task,
                                 partial(_audio_args, settings, audio), engine, gpu)
        elif engine.ray:  # a Ray worker rebuilds the encoder from its settings, once per worker process
            folders[name] = _run(out, settings, ids, features.shard_size, progress, result, _words_settings_task,
                                 partial(_words_args_settings, settings, words), engine, gpu)
        else:
            folders[name] = _run(out, settings, ids, features.shard_size, progress, result,
                                 partial(_words_task, ext), partial(_words_args, words), Engine(1))
    write_errors(out / "errors.csv", result.errors)
    write_json(out / "store.json", {"store_version": STORE_VERSION, "corpus": c.meta(), "corpus_digest": digest,
                                    "features": folders})
    failed = {e[0] for e in result.errors}
    if all(u in failed for u in ids):
        raise MmferError(f"no utterance could be extracted; see {out / 'errors.csv'}")
    if strict and result.errors:
        raise MmferError(f"{len(failed)} utterance(s) failed extraction (--strict); see {out / 'errors.csv'}")
    return result


def warn_cost(ext, c: Corpus, warn) -> None:
    """Before a big extraction: how much disk it will take (frames × layers × dim × 2 bytes)."""
    import soundfile as sf

    seconds = 0.0
    for a, s, e in zip(c.table["audio"], c.table["start"], c.table["end"]):
        try:
            seconds += (e - s) if np.isfinite(s) and np.isfinite(e) and e > s else sf.info(a).duration
        except (RuntimeError, sf.LibsndfileError):
            continue
    per = ext.bytes_per_second()
    if per:
        warn(f"{ext.name}: {seconds / 3600:.2f} h of audio x {per * 3600 / 1e9:.2f} GB per hour "
             f"({ext.settings().get('stored_layers', 1)} layer(s) x {ext.settings().get('layer_dim', ext.dim)} "
             f"values x 2 bytes every {ext.hop_seconds * 1000:.0f} ms) = about {seconds * per / 1e9:.2f} GB in "
             "the store; --layers mean:A-B or --pool mean take less")


def _run(out: Path, settings: dict, ids: list[str], shard_size: int, progress: bool, result: PrepareResult,
         task: Callable, args: Callable[[list[str]], tuple], engine: Engine, gpu: bool = False) -> str:
    """Extract one feature kind into its own folder, shard by shard, skipping finished shards.

    ``task(*args(chunk))`` returns (arrays, errors) for one chunk; with several workers or Ray it runs in
    other processes, so it must be a module-level function.
    """
    n_workers = engine.workers
    name = feature_dir_name(settings)
    folder = out / name
    kind = settings["kind"]
    if (folder / "meta.json").is_file() and not intact(folder):
        discard_finished(folder)  # a damaged finished set (e.g. truncated data.npy): extract it again
    if (folder / "meta.json").is_file():
        result.reused.append(kind)
        result.extracted[kind] = read_json(folder / "meta.json")["utterances"]
        result.errors += _read_errors(folder / "errors.csv")
        return name
    chunks = [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]
    todo = [k for k in range(len(chunks)) if not shard_path(folder, k).is_file()]
    done_utts = sum(len(chunks[k]) for k in range(len(chunks)) if k not in set(todo))
    bar = tqdm(total=len(ids), initial=done_utts, desc=f"{kind} ({settings['name']})", unit="utt",
               disable=not progress)
    dtype = settings["dtype"]
    if engine.ray and todo:
        from mmfer.cluster import run_shards

        folder.joinpath("parts").mkdir(parents=True, exist_ok=True)
        for k in run_shards(engine.ray, folder, chunks, todo, task, args, dtype, engine.ray_transfer, gpu):
            bar.update(len(chunks[k]))
    elif n_workers > 1 and len(todo) > 1:
        procs = min(n_workers, len(todo))
        with ProcessPoolExecutor(procs, initializer=init_worker, initargs=(procs,)) as pool:
            futures = {pool.submit(task, *args(chunks[k])): k for k in todo}
            for fut in as_completed(futures):
                k = futures[fut]
                arrays, errors = fut.result()
                write_shard(shard_path(folder, k), chunks[k], arrays, errors, dtype)
                bar.update(len(chunks[k]))
    else:
        for k in todo:
            arrays, errors = task(*args(chunks[k]))
            write_shard(shard_path(folder, k), chunks[k], arrays, errors, dtype)
            bar.update(len(chunks[k]))
    bar.close()
    meta = finalize(folder, len(chunks), settings)
    result.extracted[kind] = meta["utterances"]
    result.errors += _read_errors(folder / "errors.csv")
    return name


_EXTRACTORS: dict[str, object] = {}


def init_worker(processes: int) -> None:
    """Each worker process: ends with its parent, and shares the cores with the other workers (torch, used
    by SSL encoders, would otherwise start one thread per core in every worker)."""
    _die_with_parent()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(processes, 1)))


def _die_with_parent() -> None:
    """Worker processes end when prepare is killed (Linux: the parent-death signal)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _audio_args(settings: dict, audio: dict[str, str], chunk: list[str]) -> tuple:
    return settings, chunk, [audio[u] for u in chunk]


def _words_args(words: dict, chunk: list[str]) -> tuple:
    return chunk, [list(words[u]) for u in chunk]


def cached_extractor(settings: dict):
    """The extractor these settings name, built once per (worker) process."""
    key = json.dumps(settings, sort_keys=True)
    return _EXTRACTORS.get(key) or _EXTRACTORS.setdefault(key, extractor_from_settings(settings))


def _audio_task(settings: dict, ids: list[str], paths: list[tuple[str, float, float]]):
    """One chunk of an audio extractor; rebuilt from its settings once per (worker) process."""
    ext = cached_extractor(settings)
    if hasattr(ext, "extract_many"):
        return _batched_audio_task(ext, ids, paths)
    arrays: list[np.ndarray | None] = []
    errors: dict[str, str] = {}
    for u, p in zip(ids, paths):
        try:
            a = ext(*p)
            if len(a) == 0:
                raise AudioError("no frames extracted")
            arrays.append(a)
        except AudioError as err:
            arrays.append(None)
            errors[u] = err.reason
    return arrays, errors


def _batched_audio_task(ext, ids: list[str], paths: list[tuple[str, float, float]]):
    """An extractor that batches (an SSL encoder): the chunk's audio is read first, then encoded together."""
    from mmfer.features.audio import load_audio

    signals, errors = {}, {}
    for u, (path, start, end) in zip(ids, paths):
        try:
            signals[u] = load_audio(path, start=start, end=end)
        except AudioError as err:
            errors[u] = err.reason
    done = dict(zip(signals, ext.extract_many(list(signals.values()))))
    for u, a in done.items():
        if len(a) == 0:
            errors[u] = "no frames extracted"
    return [done.get(u) if u not in errors else None for u in ids], errors


def _words_args_settings(settings: dict, words: dict, chunk: list[str]) -> tuple:
    return settings, chunk, [list(words[u]) for u in chunk]


def _words_settings_task(settings: dict, ids: list[str], words: list[list[str]]):
    """One chunk of a word encoder rebuilt from its settings once per (Ray worker) process."""
    return _words_task(cached_extractor(settings), ids, words)


def _words_task(enc, ids: list[str], words: list[list[str]]):
    """Encode in batches of similar length (less padding), results back in the shard's order."""
    order = sorted(range(len(ids)), key=lambda i: len(words[i]))
    arrays: list[np.ndarray | None] = [None] * len(ids)
    for k in range(0, len(order), WORDS_BATCH):
        chunk = order[k:k + WORDS_BATCH]
        for i, vecs in zip(chunk, enc.encode([words[i] for i in chunk])):
            arrays[i] = vecs
    return arrays, {}


def _read_errors(path: Path) -> list[tuple[str, str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [(r["utt_id"], r["stage"], r["reason"]) for r in csv.DictReader(fh)]
