"""`mmfer prepare`: corpus in, feature store out; parallel, resumable, atomic.

The work is cut into *shards* (``features.shard_size`` utterances) of one *pass*: one extractor over the
shard's utterances, filling every stream that extractor computes in one go (the Whisper encoder's frames
and their statistics). Shards are handed to an executor (``mmfer.engine``: this process, a local process
pool, or Ray), written as files into each stream's folder as they finish, and merged once the pass is done
(in a background thread, while the next pass extracts), so an interrupted prepare resumes at the next
unfinished shard, or at the merge.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmfer.config import FeatureConfig
from mmfer.corpora import Corpus, read_corpus
from mmfer.corpora import save as save_corpus
from mmfer.engine import Executor, Local
from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, AudioError, load_audio
from mmfer.features.extractors import cached_extractor, extractor_for, pass_key, run_pass, run_pass_many
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
HOLD_SECONDS = 600.0  # audio a batching encoder holds at a time (a shard is read in such slices)


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


def open_corpus(corpus_path: str | Path, corpus: str | None = None, labels: str | None = None,
                allow_outside: bool = False, warn=print) -> Corpus:
    """Read the corpus a store is made of; its problems are warned about, an empty one refused."""
    c = read_corpus(corpus_path, corpus, labels, allow_outside=allow_outside)
    for p in c.problems:
        warn(f"warning: {p}")
    if len(c.table) == 0:
        raise MmferError(f"{corpus_path}: no utterance left after the label policy and filters")
    return c


def prepare(corpus_path: str | Path, out: str | Path, corpus: str | None = None, labels: str | None = None,
            features: FeatureConfig | None = None, strict: bool = False, progress: bool = True,
            warn=print, allow_outside: bool = False, executor: Executor | None = None,
            **overrides) -> PrepareResult:
    """Extract every stream of ``features.streams`` whose modality the corpus has, one folder each.

    ``overrides`` are ``features`` fields (``workers=2``, ``acoustic="egemaps"``, ...). ``executor``
    (mmfer.engine): where the shards run; default a local pool of ``features.workers`` processes.
    """
    features = FeatureConfig.model_validate({**(features or FeatureConfig()).model_dump(), **overrides})
    out = Path(out).expanduser().resolve()
    c = open_corpus(corpus_path, corpus, labels, allow_outside, warn)
    out.mkdir(parents=True, exist_ok=True)
    with store_lock(out):
        return prepare_corpus(c, out, features, strict, progress, warn, executor)


def prepare_corpus(c: Corpus, out: Path, features: FeatureConfig, strict: bool = False, progress: bool = True,
                   warn=print, executor: Executor | None = None,
                   errors: list[tuple[str, str, str]] | None = None) -> PrepareResult:
    """The store of an already read corpus; the caller holds the store's lock (features.store.store_lock).
    ``errors``: (utt_id, stage, reason) of utterances an earlier corpus-side step lost (recognition)."""
    executor = executor or Local(features.workers)
    remove_stale_temp(out)
    save_corpus(c, out / "corpus.parquet")
    digest = corpus_digest(c)
    ids = c.table["utt_id"].tolist()
    result = PrepareResult(out, errors=list(errors or []))
    folders: dict[str, str] = {}
    done: list = []  # per pass: its reused streams, then the merge of its extracted ones (a future)
    # a pass's shards are merged into its streams' data.npy in this thread while the next pass extracts: the
    # merge is mostly disk (the Whisper frames: 1.3 GB per hour of audio), the extraction the cores
    with ThreadPoolExecutor(1, thread_name_prefix="mmfer-merge") as merger:
        for ext, pass_streams in _passes(c, features, digest):
            if ext.input == "audio" and getattr(ext, "bytes_per_second", None):
                warn_cost(ext, c, warn)
            gpu = bool(getattr(ext, "wants_gpu", False)) and executor.has_gpus()
            got, reused, merge = _run(out, pass_streams, ids, _inputs(c, ext), features.shard_size, progress,
                                      executor, gpu)
            folders.update(got)
            done.append((reused, merger.submit(merge) if merge is not None else None))
        for reused, merged in done:
            result.reused += [kind for kind, *_ in reused]
            for kind, utterances, errs in reused + (merged.result() if merged is not None else []):
                result.extracted[kind] = utterances
                result.errors += errs
    write_errors(out / "errors.csv", result.errors)
    write_json(out / "store.json", {"store_version": STORE_VERSION, "corpus": c.meta(), "corpus_digest": digest,
                                    "features": folders})
    failed = {e[0] for e in result.errors}
    if all(u in failed for u in ids):
        raise MmferError(f"no utterance could be extracted; see {out / 'errors.csv'}")
    if strict and result.errors:
        raise MmferError(f"{len(failed)} utterance(s) failed extraction (--strict); see {out / 'errors.csv'}")
    return result


def _passes(c: Corpus, features: FeatureConfig, digest: str) -> list[tuple[object, list[tuple[str, dict]]]]:
    """The streams to extract grouped by pass, in the config's order: (extractor, [(stream, settings)])."""
    groups: dict[str, tuple[object, list[tuple[str, dict]]]] = {}
    for name in features.streams:
        if stream(name).derived_from or stream(name).modality not in c.modalities:
            continue
        ext = extractor_for(name, features)
        settings = {**ext.settings(), "corpus": digest}
        groups.setdefault(pass_key(settings), (ext, []))[1].append((name, settings))
    return list(groups.values())


def _inputs(c: Corpus, ext) -> dict:
    """Per utterance what an extractor reads: (audio path, start, end), or the word list."""
    ids = c.table["utt_id"].tolist()
    if ext.input == "words":
        return dict(zip(ids, (list(w) for w in c.table["words"])))
    # start/end name a segment of a long file only in manifests; IEMOCAP's are turn times in the dialog
    nan = [float("nan")] * len(ids)
    starts, ends = (c.table["start"], c.table["end"]) if c.name == "manifest" else (nan, nan)
    return dict(zip(ids, zip(c.table["audio"], starts, ends)))


def warn_cost(ext, c: Corpus, warn) -> None:
    """Before a big extraction: how much disk it will take (frames × layers × dim × 2 bytes)."""
    import soundfile as sf

    per = ext.bytes_per_second()
    if not per:
        return
    seconds = 0.0
    for a, s, e in zip(c.table["audio"], c.table["start"], c.table["end"]):
        try:
            seconds += (e - s) if np.isfinite(s) and np.isfinite(e) and e > s else sf.info(a).duration
        except (RuntimeError, sf.LibsndfileError):
            continue
    settings = ext.settings()
    warn(f"{ext.name}: {seconds / 3600:.2f} h of audio x {per * 3600 / 1e9:.2f} GB per hour "
         f"({settings.get('stored_layers', 1)} layer(s) x {settings.get('layer_dim', ext.dim)} "
         f"values x 2 bytes every {ext.hop_seconds * 1000:.0f} ms) = about {seconds * per / 1e9:.2f} GB in "
         "the store; --layers takes less")


def _run(out: Path, streams: list[tuple[str, dict]], ids: list[str], inputs: dict, shard_size: int,
         progress: bool, executor: Executor, gpu: bool):
    """One pass into its streams' folders, shard by shard, skipping finished streams and shards. Returns
    ({stream: folder name}, [(stream, utterances, errors)] of the streams already finished, and a function
    that merges the new shards and returns the same for the extracted streams, or None)."""
    folders, todo_streams, reused = {}, [], []
    for kind, settings in streams:
        folder = out / feature_dir_name(settings)
        folders[kind] = folder.name
        if (folder / "meta.json").is_file() and not intact(folder):
            discard_finished(folder)  # a damaged finished set (e.g. truncated data.npy): extract it again
        if (folder / "meta.json").is_file():
            reused.append((kind, read_json(folder / "meta.json")["utterances"], _read_errors(folder / "errors.csv")))
        else:
            todo_streams.append((kind, settings, folder))
    if not todo_streams:
        return folders, reused, None
    chunks = [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]
    todo = [k for k in range(len(chunks)) if not all(shard_path(f, k).is_file() for *_, f in todo_streams)]
    settings = {kind: s for kind, s, _ in todo_streams}
    first = next(iter(settings.values()))
    done_utts = len(ids) - sum(len(chunks[k]) for k in todo)
    bar = tqdm(total=len(ids), initial=done_utts, desc=f"{'+'.join(settings)} ({first['name']})", unit="utt",
               disable=not progress)
    for *_, f in todo_streams:
        f.joinpath("parts").mkdir(parents=True, exist_ok=True)
    write_here = executor.shared_storage
    jobs = [(settings, chunks[k], [inputs[u] for u in chunks[k]],
             {kind: str(shard_path(f, k)) for kind, _, f in todo_streams} if write_here else None) for k in todo]
    for i, got in executor.map(extract_shard, jobs, cpus=1, gpus=1 if gpu else 0):
        k = todo[i]
        if got is not None:  # the worker sent the arrays back: this process writes the shard files
            arrays, errors = got
            for kind, _, f in todo_streams:
                write_shard(shard_path(f, k), chunks[k], arrays[kind], errors, settings[kind]["dtype"])
        for *_, f in todo_streams:
            if not shard_path(f, k).is_file():
                raise MmferError(f"{shard_path(f, k)}: a worker wrote this shard where this machine cannot see it; "
                                 "put the store on storage every node sees, or pass --ray-transfer")
        bar.update(len(chunks[k]))
    bar.close()

    def merge() -> list[tuple[str, int, list]]:
        return [(kind, finalize(f, len(chunks), s)["utterances"], _read_errors(f / "errors.csv"))
                for kind, s, f in todo_streams]

    return folders, reused, merge


def extract_shard(settings: dict[str, dict], ids: list[str], inputs: list, paths: dict[str, str] | None):
    """One shard of one pass (any process): the extractor is rebuilt from its settings once per process.
    With ``paths`` the shard files are written here and nothing is returned; else ({stream: arrays},
    errors) go back to the caller."""
    ext = cached_extractor(next(iter(settings.values())))
    kinds = list(settings)
    if ext.input == "words":
        arrays, errors = {kinds[0]: _words(ext, inputs)}, {}
    else:
        arrays, errors = _audio(ext, settings, ids, inputs)
    if paths is None:
        return arrays, errors
    for kind in kinds:
        write_shard(Path(paths[kind]), ids, arrays[kind], errors, settings[kind]["dtype"])
    return None


def _audio(ext, settings: dict[str, dict], ids: list[str], paths: list[tuple[str, float, float]]):
    """({stream: array or None per utterance}, {utt_id: reason}) of one shard. An extractor that batches
    (an SSL or Whisper encoder) gets up to HOLD_SECONDS of the shard's audio at a time, encoded together;
    any other one utterance at a time. Each result is converted to its store dtype (``settings``) as it
    arrives, so the shard is held as stored: Whisper's float32 states of 64 utterances of 30 s take 1.4 GB,
    their float16 copies half that."""
    kinds = list(settings)
    errors: dict[str, str] = {}
    done: dict[str, dict[str, np.ndarray]] = {}
    held: dict[str, np.ndarray] = {}

    def stored(got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: as_dtype(a, settings[k]["dtype"]) for k, a in got.items()}

    def encode_held() -> None:
        done.update((u, stored(got)) for u, got in zip(held, run_pass_many(ext, kinds, list(held.values()),
                                                                            SAMPLE_RATE)))
        held.clear()

    for u, (path, start, end) in zip(ids, paths):
        try:
            x = load_audio(path, start=start, end=end)
            if not hasattr(ext, "extract_many"):
                done[u] = stored(run_pass(ext, kinds, x, SAMPLE_RATE))
                continue
        except AudioError as err:
            errors[u] = err.reason
            continue
        if held and sum(map(len, held.values())) + len(x) > HOLD_SECONDS * SAMPLE_RATE:
            encode_held()
        held[u] = x
    if held:
        encode_held()
    for u, got in done.items():
        if any(len(a) == 0 for a in got.values()):
            errors[u] = "no frames extracted"
    return {k: [done[u][k] if u in done and u not in errors else None for u in ids] for k in kinds}, errors


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` as ``dtype``; float32 -> float16 through torch, whose conversion is vectorised (about 10x
    numpy's: 0.25 against 2.5 ms for one RAVDESS utterance's Whisper frames, 4.5 % of its encoding)."""
    if np.dtype(dtype) == np.float16 and a.dtype == np.float32 and a.size:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float16).numpy()
    return np.asarray(a, dtype)


def _words(enc, words: list[list[str]]) -> list[np.ndarray]:
    """Encode in batches of similar length (less padding), results back in the shard's order."""
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    arrays: list[np.ndarray | None] = [None] * len(words)
    for k in range(0, len(order), WORDS_BATCH):
        chunk = order[k:k + WORDS_BATCH]
        for i, vecs in zip(chunk, enc.encode([words[i] for i in chunk])):
            arrays[i] = vecs
    return arrays  # type: ignore[return-value]


def _read_errors(path: Path) -> list[tuple[str, str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [(r["utt_id"], r["stage"], r["reason"]) for r in csv.DictReader(fh)]

