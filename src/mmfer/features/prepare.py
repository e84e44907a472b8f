"""`mmfer prepare`: corpus in, feature store out; parallel, resumable, atomic.

The work is cut into *shards* (``features.shard_size`` utterances) of one *pass*: one extractor over the
shard's utterances, filling every stream that extractor computes in one go (the Whisper encoder's frames
and their statistics). The shards of every pass are handed to an executor (``mmfer.engine``: this process,
a local process pool, or Ray) in one go where they ask for the same resources, written as files into each
stream's folder as they finish, and merged once their pass is done (in a background thread, while the
other passes extract), so an interrupted prepare resumes at the next unfinished shard, or at the merge.
"""

from __future__ import annotations

import csv
import hashlib
import time
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
WORD_SHARDS_PER_JOB = 32  # shards of a word pass per unit of work (see _run)
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
    plans = []
    for ext, pass_streams in _passes(c, features, digest):
        if ext.input == "audio" and getattr(ext, "bytes_per_second", None):
            warn_cost(ext, c, warn)
        gpu = bool(getattr(ext, "wants_gpu", False)) and executor.has_gpus()
        plans.append(_plan(out, pass_streams, ids, _inputs(c, ext), features.shard_size, gpu, ext.input == "words"))
    # a pass's shards are merged into its streams' data.npy in this thread while the other passes extract:
    # the merge is mostly disk (the Whisper frames: 1.3 GB per hour of audio), the extraction the cores
    with ThreadPoolExecutor(1, thread_name_prefix="mmfer-merge") as merger:
        merges = {}
        for group in _groups(plans):
            _run(group, executor, progress, lambda p: merges.__setitem__(p, merger.submit(p.merge)))
        for p in plans:
            result.reused += [kind for kind, *_ in p.reused]
            merged = merges[p].result() if p in merges else []
            for kind, utterances, errs in p.reused + merged:
                result.extracted[kind] = utterances
                result.errors += errs
    write_errors(out / "errors.csv", result.errors)
    write_json(out / "store.json", {"store_version": STORE_VERSION, "corpus": c.meta(), "corpus_digest": digest,
                                    "features": {k: v for p in plans for k, v in p.folders.items()}})
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


@dataclass(eq=False)  # hashed and compared by identity: a key of the prepare's bookkeeping
class _Pass:
    """One pass's share of a prepare: its streams' folders, the streams already finished, and the shards
    still to extract (``todo``: shard numbers; ``jobs``: :func:`extract_shard`'s arguments for each)."""

    folders: dict[str, str]
    reused: list[tuple[str, int, list]]
    streams: list[tuple[str, dict, Path]]  # (stream, settings, folder) of the streams to extract
    chunks: list[list[str]]
    todo: list[int]
    jobs: list[tuple]
    gpu: bool
    words: bool

    def finish(self, j: int, got) -> None:
        """Shard ``todo[j]`` came back: write its files if the worker sent the arrays, check they exist."""
        k = self.todo[j]
        if got is not None:  # the worker sent the arrays back: this process writes the shard files
            arrays, errors = got
            for kind, settings, f in self.streams:
                write_shard(shard_path(f, k), self.chunks[k], arrays[kind], errors, settings["dtype"])
        for *_, f in self.streams:
            if not shard_path(f, k).is_file():
                raise MmferError(f"{shard_path(f, k)}: a worker wrote this shard where this machine cannot see it; "
                                 "put the store on storage every node sees, or pass --ray-transfer")

    def merge(self) -> list[tuple[str, int, list]]:
        """Every shard into each extracted stream's data.npy: [(stream, utterances, errors)]."""
        return [(kind, finalize(f, len(self.chunks), s)["utterances"], _read_errors(f / "errors.csv"))
                for kind, s, f in self.streams]


def _plan(out: Path, streams: list[tuple[str, dict]], ids: list[str], inputs: dict, shard_size: int, gpu: bool,
          words: bool) -> _Pass:
    """One pass's folders and shards, skipping finished streams and shards (a resumed prepare)."""
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
    chunks = [ids[i:i + shard_size] for i in range(0, len(ids), shard_size)]
    todo = [k for k in range(len(chunks)) if not all(shard_path(f, k).is_file() for *_, f in todo_streams)]
    # (no stream to extract: every shard counts as there, so nothing is to do)
    for *_, f in todo_streams:
        f.joinpath("parts").mkdir(parents=True, exist_ok=True)
    settings = {kind: s for kind, s, _ in todo_streams}
    jobs = [(settings, chunks[k], [inputs[u] for u in chunks[k]],
             {kind: str(shard_path(f, k)) for kind, _, f in todo_streams}) for k in todo]
    return _Pass(folders, reused, todo_streams, chunks, todo, jobs, gpu, words)


def _groups(plans: list[_Pass]) -> list[list[_Pass]]:
    """Consecutive passes that ask the executor for the same resources (a GPU or not) run as one group."""
    groups: list[list[_Pass]] = []
    for p in plans:
        if groups and groups[-1][0].gpu == p.gpu:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _run(group: list[_Pass], executor: Executor, progress: bool, merge) -> None:
    """The shards of a group of passes through one ``executor.map``, so that one pass's last shards share the
    workers with the next pass's first ones instead of leaving cores idle, and a local pool's workers start
    once. A word pass goes first, as few units of work (``WORD_SHARDS_PER_JOB`` shards each): its encoder
    takes seconds to load and little to run (MiniLM on the sample corpus: 3.3 s to load in a worker, 0.3 s a
    shard), so one worker loads it while the others start on the audio. ``merge(pass)`` is called as each
    pass with streams to extract has all its shards."""
    units: list[tuple[_Pass, list[int]]] = []  # (pass, positions in its todo) per unit of work
    for p in sorted(group, key=lambda p: not p.words):  # stable: the audio passes keep the config's order
        per = WORD_SHARDS_PER_JOB if p.words else 1
        units += [(p, list(range(a, min(a + per, len(p.todo))))) for a in range(0, len(p.todo), per)]
    write_here = executor.shared_storage
    jobs = [([p.jobs[j] if write_here else (*p.jobs[j][:3], None) for j in js],) for p, js in units]
    active = [p for p in group if p.streams]
    left = {p: len(p.todo) for p in active}
    first = {}  # the index of each pass's first unit
    for u, (p, _) in enumerate(units):
        first.setdefault(p, u)
    bars: dict[_Pass, tqdm] = {}
    slots, begun, finished_at = max(1, executor.cpus()), time.time(), []

    def bar(p: _Pass) -> tqdm:
        """The pass's progress bar, shown from its first finished unit on and timed from when that unit could
        start: units start in order as workers free up (unit u with the (u - workers + 1)-th finished one), so
        the rate and the time left do not count the time the pass waited for the workers."""
        if p not in bars:
            total = sum(map(len, p.chunks))
            b = tqdm(total=total, initial=total - sum(len(p.chunks[k]) for k in p.todo), unit="utt",
                     desc=f"{'+'.join(s for s, *_ in p.streams)} ({p.streams[0][1]['name']})", disable=not progress)
            u = first[p]
            b.start_t = b.last_print_t = begun if u < slots else finished_at[u - slots]
            bars[p] = b
        return bars[p]

    def finished(p: _Pass) -> None:
        if p in bars:
            bars[p].close()
        merge(p)

    for p in active:
        if not left[p]:
            finished(p)
    for i, results in executor.map(extract_shards, jobs, cpus=1, gpus=1 if group[0].gpu else 0):
        finished_at.append(time.time())
        p, js = units[i]
        for j, got in zip(js, results):
            p.finish(j, got)
        bar(p).update(sum(len(p.chunks[p.todo[j]]) for j in js))
        left[p] -= len(js)
        if not left[p]:
            finished(p)


def extract_shards(jobs: list[tuple]) -> list:
    """:func:`extract_shard` for each job of one unit of work (several shards of a word pass, or one)."""
    return [extract_shard(*job) for job in jobs]


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

