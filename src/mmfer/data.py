"""From the feature store to padded, length-bucketed mini-batches.

Features are read from the store once per fold, normalised with statistics of the *training* part only,
reduced in time (acoustic frames) and kept in memory as float32 arrays; an epoch only slices and pads.
Batches are padded, never packed: packing makes the LSTM backward pass ~10x slower on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mmfer.features.store import FeatureStore
from mmfer.streams import stream


@dataclass
class Normalizer:
    """Per-dimension z-score statistics of one feature kind."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, arrays: list[np.ndarray]) -> Normalizer:
        """Streaming mean/variance over all frames (float64), without concatenating the corpus."""
        n, s, ss = 0, 0.0, 0.0
        for a in arrays:
            a = a.astype(np.float64)
            n += len(a)
            s = s + a.sum(axis=0)
            ss = ss + (a * a).sum(axis=0)
        mean = s / max(n, 1)
        std = np.sqrt(np.maximum(ss / max(n, 1) - mean**2, 0.0))
        return cls(mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return (a - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


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

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids, self.labels.to(device), {k: v.to(device) for k, v in self.inputs.items()},
                     {k: v.to(device) for k, v in self.lengths.items()})


def fit_normalizers(store: FeatureStore, ids: list[str], kinds: list[str]) -> dict[str, Normalizer]:
    return {k: Normalizer.fit([store.features[k].get(u) for u in ids]) for k in kinds}


class UtteranceSet:
    """Normalised, time-reduced features of a fixed list of utterances, held in memory."""

    def __init__(self, ids: list[str], labels: list[int] | None, arrays: dict[str, list[np.ndarray]]):
        """``labels`` None (prediction): every label is -1 and no loss is computed."""
        self.ids = ids
        self.labels = np.asarray(labels if labels is not None else [-1] * len(ids), np.int64)
        self.arrays = arrays
        first = next(iter(arrays))
        self.sizes = np.array([len(a) for a in arrays[first]])

    @classmethod
    def from_store(cls, store: FeatureStore, ids: list[str], classes: list[str], kinds: list[str],
                   norms: dict[str, Normalizer], frame_reduction: int = 1) -> UtteranceSet:
        label_of = dict(zip(store.corpus.table["utt_id"], store.corpus.table["label"]))
        index = {c: i for i, c in enumerate(classes)}
        arrays: dict[str, list[np.ndarray]] = {}
        for k in kinds:
            fs, norm = store.features[k], norms[k]
            arrays[k] = [prepare_stream(k, fs.get(u), norm, frame_reduction) for u in ids]
        return cls(ids, [index[label_of[u]] for u in ids], arrays)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Batch]:
        """Length-bucketed batches: utterances of similar length together, so padding stays small.

        With ``shuffle``, lengths get a little noise and the batch order is random (seeded), so batch
        composition varies from epoch to epoch while each batch stays homogeneous in length.
        """
        rng = np.random.default_rng(seed)
        sizes = self.sizes.astype(np.float64)
        if shuffle:
            sizes = sizes * rng.uniform(0.9, 1.1, len(sizes))
        order = np.argsort(sizes, kind="stable")
        groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if shuffle:
            rng.shuffle(groups)
        for g in groups:
            yield self.collate(g)

    def collate(self, idx) -> Batch:
        inputs, lengths = {}, {}
        for k, arrs in self.arrays.items():
            sel = [arrs[i] for i in idx]
            inputs[k], lengths[k] = pad(sel)
        return Batch([self.ids[i] for i in idx], torch.from_numpy(self.labels[idx]), inputs, lengths)


def prepare_stream(name: str, a: np.ndarray, norm: Normalizer, frame_reduction: int) -> np.ndarray:
    """Normalise one utterance's rows of stream ``name``, and average frames where the stream allows it."""
    a = reduce_frames(norm(a).astype(np.float32), frame_reduction if stream(name).reducible else 1)
    if len(a) == 0:  # e.g. a transcript with no words: one zero step keeps every model well defined
        a = np.zeros((1, a.shape[1]), np.float32)
    return a


def pad(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    out = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.from_numpy(a)
    return out, lengths
