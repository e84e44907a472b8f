"""From the feature store to padded, length-bucketed mini-batches.

Features are read from the store once per fold, normalised, reduced in time (acoustic frames) and kept in
memory as float32 arrays; an epoch only slices and pads. A fold whose features would take more than
``train.memory_budget_gb`` is not held: each batch is read from the memory-mapped store and normalised on
the fly (:class:`StoredStream`), so memory stays flat however large the corpus (SSL layers, 100+ hours).

Normalisation (``features.normalise``) of the streams the stream table marks ``speaker_normalised``:

* ``speaker``: each speaker's own mean/std over *all* that speaker's utterances (no labels are used, so
  test speakers get theirs too, as they would from a batch of their recordings), values clipped to ±10.
  Speakers with fewer than ``speaker_min_utterances`` utterances fall back to the training statistics.
  This removes the voice (pitch range, loudness, microphone) that otherwise dominates acoustic features.
* ``corpus``: one mean/std from the *training* part of the fold.
* ``none``: raw values.

Other streams (word vectors) always use training-part statistics.
Batches are padded, never packed: packing makes the LSTM backward pass ~10x slower on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mmfer.features.store import FeatureStore
from mmfer.streams import stream


@dataclass
class Normalizer:
    """Per-dimension z-score statistics of one feature kind (and an optional clip of the z-scores)."""

    mean: np.ndarray
    std: np.ndarray
    clip: float | None = None

    @classmethod
    def fit(cls, arrays: Iterable[np.ndarray]) -> Normalizer:
        """Streaming mean/variance over all frames (float64), without concatenating the corpus."""
        stats = RunningStats()
        for a in arrays:
            stats.add(a)
        return stats.normalizer()

    def __call__(self, a: np.ndarray) -> np.ndarray:
        z = a - self.mean  # a new array (float32 for float16 features): divided and clipped in place
        z /= self.std
        return z if self.clip is None else np.clip(z, -self.clip, self.clip, out=z)

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), d.get("clip"))


class RunningStats:
    """Per-dimension sums of frames added one array at a time: mean and std without holding the arrays."""

    def __init__(self):
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, a: np.ndarray) -> None:
        a = a.astype(np.float64)
        self.n += len(a)
        self.s = self.s + a.sum(axis=0)
        self.ss = self.ss + (a * a).sum(axis=0)

    def merge(self, other: RunningStats) -> None:
        """Add another's frames (their sums): the statistics of both parts together."""
        self.n += other.n
        self.s = self.s + other.s
        self.ss = self.ss + other.ss

    def normalizer(self, clip: float | None = None) -> Normalizer:
        mean = self.s / max(self.n, 1)
        std = np.sqrt(np.maximum(self.ss / max(self.n, 1) - mean**2, 0.0))
        return Normalizer(np.asarray(mean, np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32), clip)


SPEAKER_CLIP = 10.0


@dataclass
class StreamNorm:
    """How one stream is normalised: the training statistics, and per-speaker ones in 'speaker' mode."""

    train: Normalizer
    speakers: dict[str, Normalizer]

    def for_speaker(self, speaker: str | None) -> Normalizer:
        return self.speakers.get(speaker, self.train) if speaker is not None else self.train


def reduce_frames(a: np.ndarray, k: int) -> np.ndarray:
    """Average every k consecutive frames (the last, shorter group too): T frames -> ceil(T/k)."""
    if k <= 1 or len(a) == 0:
        return a
    full = len(a) // k * k
    out = a[:full].reshape(-1, k, a.shape[1]).mean(axis=1)
    if full < len(a):
        out = np.concatenate([out, a[full:].mean(axis=0, keepdims=True)])
    return out.astype(np.float32)


@dataclass
class Batch:
    ids: list[str]
    labels: torch.Tensor                      # [B] class indices
    inputs: dict[str, torch.Tensor]           # kind -> [B, T, D] zero-padded
    lengths: dict[str, torch.Tensor]          # kind -> [B] real lengths (>= 1)
    words: list[list[str]] | None = None      # the utterances' words, for a model that fine-tunes its encoder

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids, self.labels.to(device), {k: v.to(device) for k, v in self.inputs.items()},
                     {k: v.to(device) for k, v in self.lengths.items()}, self.words)


def fit_normalizers(store: FeatureStore, ids: list[str], kinds: list[str], mode: str = "corpus",
                    min_utterances: int = 10) -> dict[str, StreamNorm]:
    """Statistics per stream: training part (``ids``) always; every speaker's own in 'speaker' mode."""
    out = {}
    for k in kinds:
        fs = store.features[k]
        if mode == "none" and stream(k).speaker_normalised:
            out[k] = StreamNorm(Normalizer.identity(fs.dim), {})
            continue
        train = training_statistics(store, k, ids)
        speakers: dict[str, Normalizer] = {}
        if mode == "speaker" and stream(k).speaker_normalised:
            speakers = store_speaker_statistics(store, k, min_utterances)
        out[k] = StreamNorm(train, speakers)
    return out


def store_speaker_statistics(store: FeatureStore, kind: str, min_utterances: int) -> dict[str, Normalizer]:
    """Every speaker's statistics for one stream of the store (speakers with ``min_utterances`` or more).
    Label-free, so the same for every fold (see speaker_sums)."""
    return {spk: stats.normalizer(SPEAKER_CLIP) for spk, (ids, stats) in speaker_sums(store, kind).items()
            if len(ids) >= min_utterances}


def speaker_sums(store: FeatureStore, kind: str) -> dict:
    """Per speaker: the utterances of ``kind`` and their frames' sums. Computed once per store object in
    one pass, one utterance at a time (never the whole corpus in memory); every fold's statistics, its
    speakers' own and its training part's, are then sums of these."""
    cache = store.__dict__.setdefault("_speaker_sums", {})
    fs = store.features[kind]
    if kind not in cache or cache[kind][0] is not fs:  # a derived stream attached anew: other values
        table = store.corpus.table
        ids_of: dict[str, list[str]] = {}
        for u, spk in zip(table["utt_id"], table["speaker"]):
            if u in fs:
                ids_of.setdefault(spk, []).append(u)
        sums = {}
        for spk, ids in ids_of.items():
            stats = RunningStats()
            for u in ids:
                stats.add(fs.get(u))
            sums[spk] = (frozenset(ids), stats)
        cache[kind] = (fs, sums)
    return cache[kind][1]


def training_statistics(store: FeatureStore, kind: str, ids: list[str]) -> Normalizer:
    """The statistics of the utterances ``ids`` (a fold's training part): the cached sums of each speaker
    all of whose utterances are in it, the frames of the others read one at a time. Each fold used to
    re-read its training part, up to three times (both views of 'auto', then the model's own)."""
    fs, table = store.features[kind], store.corpus.table
    speaker_of = dict(zip(table["utt_id"], table["speaker"]))
    by_speaker: dict = {}
    for u in ids:
        by_speaker.setdefault(speaker_of[u], []).append(u)
    sums = speaker_sums(store, kind)
    total = RunningStats()
    for spk, part in by_speaker.items():
        whole = sums.get(spk)
        if whole is not None and whole[0] == frozenset(part):
            total.merge(whole[1])
        else:
            for u in part:
                total.add(fs.get(u))
    return total.normalizer()


class StoredStream(Sequence):
    """One stream of a fixed list of utterances, read from the (memory-mapped) store when indexed and
    normalised then: what a fold holds instead of its arrays when they would exceed the memory budget."""

    def __init__(self, name: str, features, ids: list[str], norms: list[Normalizer], frame_reduction: int):
        self.name, self.features, self.ids, self.norms = name, features, ids, norms
        self.k = frame_reduction if stream(name).reducible else 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return prepare_stream(self.name, self.features.get(self.ids[i]), self.norms[i], self.k)

    def lengths(self) -> np.ndarray:
        """Rows per utterance after frame reduction, from the store's index (no data read)."""
        offsets = getattr(self.features, "offsets", None)
        raw = [offsets[u][1] if offsets is not None else len(self.features.get(u)) for u in self.ids]
        return np.maximum(1, -(-np.asarray(raw, np.int64) // self.k))

    def nbytes(self) -> int:
        """float32 bytes the stream would take in memory."""
        return int(self.lengths().sum()) * int(self.features.dim) * 4


class UtteranceSet:
    """Normalised, time-reduced features of a fixed list of utterances: arrays in memory, or
    :class:`StoredStream` views read batch by batch from the store."""

    def __init__(self, ids: list[str], labels: list[int] | None, arrays: dict[str, Sequence[np.ndarray]],
                 words: list[list[str]] | None = None):
        """``labels`` None (prediction): every label is -1 and no loss is computed. ``words``: each
        utterance's words, carried into the batches (train.finetune_lexical)."""
        self.ids = ids
        self.words = words
        self.labels = np.asarray(labels if labels is not None else [-1] * len(ids), np.int64)
        self.arrays = arrays
        first = next(iter(arrays), None)
        if first is None:
            self.sizes = np.ones(len(ids), np.int64)
        elif isinstance(arrays[first], StoredStream):
            self.sizes = arrays[first].lengths()
        else:
            self.sizes = np.array([len(a) for a in arrays[first]])

    @property
    def in_memory(self) -> bool:
        return not any(isinstance(a, StoredStream) for a in self.arrays.values())

    @classmethod
    def from_store(cls, store: FeatureStore, ids: list[str], classes: list[str], kinds: list[str],
                   norms: dict[str, StreamNorm], frame_reduction: int = 1, in_memory: bool = True) -> UtteranceSet:
        """``in_memory`` False: keep :class:`StoredStream` views instead of reading every array now."""
        table = store.corpus.table
        label_of = dict(zip(table["utt_id"], table["label"]))
        index = {c: i for i, c in enumerate(classes)}
        arrays: dict[str, Sequence[np.ndarray]] = {}
        for k, view in stored_streams(store, ids, kinds, norms, frame_reduction).items():
            arrays[k] = list(view) if in_memory else view
        return cls(ids, [index[label_of[u]] for u in ids], arrays)


    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0,
                share: Callable[[list], list] | None = None) -> Iterator[Batch]:
        """Length-bucketed batches: utterances of similar length together, so padding stays small.

        With ``shuffle``, lengths get a little noise and the batch order is random (seeded), so batch
        composition varies from epoch to epoch while each batch stays homogeneous in length.
        ``share``: picks this process's share of the list of batches (DDP: every n-th), or None for all.
        """
        rng = np.random.default_rng(seed)
        sizes = self.sizes.astype(np.float64)
        if shuffle:
            sizes = sizes * rng.uniform(0.9, 1.1, len(sizes))
        order = np.argsort(sizes, kind="stable")
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle:
            rng.shuffle(groups)
        if share is not None:
            groups = share(groups)
        for g in groups:
            yield self.collate(g)

    def collate(self, idx) -> Batch:
        inputs, lengths = {}, {}
        for k, arrs in self.arrays.items():
            sel = [arrs[i] for i in idx]
            inputs[k], lengths[k] = pad(sel)
        words = None if self.words is None else [self.words[i] for i in idx]
        return Batch([self.ids[i] for i in idx], torch.from_numpy(self.labels[idx]), inputs, lengths, words)


def stored_streams(store: FeatureStore, ids: list[str], kinds: list[str], norms: dict[str, StreamNorm],
                   frame_reduction: int = 1) -> dict[str, StoredStream]:
    speaker_of = store.speaker_of
    return {k: StoredStream(k, store.features[k], ids, [norms[k].for_speaker(speaker_of[u]) for u in ids],
                            frame_reduction) for k in kinds}


def fold_nbytes(store: FeatureStore, ids: list[str], kinds: list[str], frame_reduction: int = 1) -> int:
    """What a fold's features (all its parts, ``ids``) would take in memory as float32, from the index alone."""
    identity = {k: StreamNorm(Normalizer.identity(store.features[k].dim), {}) for k in kinds}
    return sum(v.nbytes() for v in stored_streams(store, ids, kinds, identity, frame_reduction).values())

def prepare_stream(name: str, a: np.ndarray, norm: Normalizer, frame_reduction: int) -> np.ndarray:
    """Normalise one utterance's rows of stream ``name``, and average frames where the stream allows it."""
    a = reduce_frames(norm(a).astype(np.float32, copy=False), frame_reduction if stream(name).reducible else 1)
    if len(a) == 0:  # e.g. a transcript with no words: one zero step keeps every model well defined
        a = np.zeros((1, a.shape[1]), np.float32)
    return a


def pad(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    out = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.from_numpy(a)
    return out, lengths


# ---------------------------------------------------------------- derived streams

def sentence_vector(words: np.ndarray) -> np.ndarray:
    """One utterance's word vectors [n, dim] -> their mean [dim] (zeros for no words)."""
    return words.mean(axis=0) if len(words) else np.zeros(words.shape[1], np.float32)


def context_vector(sentences: list[np.ndarray], dim: int) -> np.ndarray:
    """[1, dim]: the mean of the context utterances' sentence vectors; zeros when there is no context."""
    if not sentences:
        return np.zeros((1, dim), np.float32)
    return np.mean(sentences, axis=0, dtype=np.float64).astype(np.float32)[None]


def dialogue_order(table) -> list[list[str]]:
    """Utterance ids per dialogue in spoken order (turn, else start time); utterances without a dialogue
    are left out (they get no context)."""
    t = table[table["dialog"].fillna("") != ""]
    key = t["turn"].where(t["turn"].notna(), t["start"]) if "turn" in t else t["start"]
    t = t.assign(_key=key.fillna(0.0)).sort_values(["dialog", "_key", "utt_id"], kind="stable")
    return [list(g["utt_id"]) for _, g in t.groupby("dialog", sort=False)]


class DerivedFeatures:
    """A stream computed in memory from a stored one (one vector per utterance). Quacks like a
    :class:`FeatureSet` (``get``, ``dim``, ``in``, ``ids``, ``meta``)."""

    def __init__(self, vectors: dict[str, np.ndarray], settings: dict):
        self.vectors = vectors
        self.meta = {"settings": settings}

    @property
    def dim(self) -> int:
        return int(self.meta["settings"]["dim"])

    @property
    def ids(self) -> list[str]:
        return list(self.vectors)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.vectors

    def get(self, utt_id: str) -> np.ndarray:
        return self.vectors[utt_id]


def sentence_features(store: FeatureStore) -> DerivedFeatures:
    """The ``sentence`` stream: each utterance's mean word vector (the encoder's view of the whole
    utterance, for a closed-form linear model beside the word-level BLSTM)."""
    lex = store.features["lexical"]
    vectors = {u: sentence_vector(lex.get(u))[None].astype(np.float32) for u in lex.ids}
    return DerivedFeatures(vectors, {"kind": "sentence", "derived_from": "lexical", "dim": lex.dim,
                                     "hop_seconds": None, "lexical": lex.meta["settings"]})


def context_features(store: FeatureStore, before: int, after: int = 0) -> DerivedFeatures:
    """The ``context`` stream: for each utterance, the mean sentence vector of the ``before`` preceding
    (and ``after`` following) utterances of its dialogue; zeros without any. Text only, never labels."""
    lex = store.features["lexical"]
    dim = lex.dim
    vectors: dict[str, np.ndarray] = {}
    for ids in dialogue_order(store.corpus.table):
        ids = [u for u in ids if u in lex]
        sent = [sentence_vector(lex.get(u)) for u in ids]
        for i, u in enumerate(ids):
            vectors[u] = context_vector(sent[max(0, i - before):i] + sent[i + 1:i + 1 + after], dim)
    for u in lex.ids:
        vectors.setdefault(u, np.zeros((1, dim), np.float32))
    return DerivedFeatures(vectors, context_settings(lex.meta["settings"], before, after, dim))


def context_settings(lexical: dict, before: int, after: int, dim: int) -> dict:
    return {"kind": "context", "derived_from": "lexical", "before": before, "after": after, "dim": dim,
            "hop_seconds": None, "lexical": lexical}


def attach_derived(store: FeatureStore, kinds: list[str], before: int, after: int) -> None:
    """Add the derived streams among ``kinds`` (computed from stored ones) to ``store.features``."""
    if "context" in kinds and "context" not in store.features:
        store.features["context"] = context_features(store, before, after)
    if "sentence" in kinds and "sentence" not in store.features:
        store.features["sentence"] = sentence_features(store)
