"""The feature store: computed once, read every epoch, never recomputed.

Layout of a store folder::

    store.json                 which feature sets are current, corpus bookkeeping
    corpus.parquet             the corpus table (kept utterances)
    errors.csv                 utterances skipped by extraction, with the reason
    <kind>-<name>-<hash>/      one folder per feature kind and settings (a change of settings makes a
        meta.json              new folder instead of mixing); written last: its presence = complete
        data.npy               all frames of all utterances, contiguous [total, dim] (memory-mapped)
        index.parquet          utt_id, offset, length
        errors.csv
        parts/shard-NNNNN.npz  only while extracting: finished units of work, the resume points

No pickles anywhere: .npy, .npz without objects, Parquet, JSON, CSV.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mmfer.corpora import Corpus
from mmfer.corpora import load as load_corpus
from mmfer.errors import MmferError
from mmfer.io import atomic_path, read_json, write_json

STORE_VERSION = 1


NOT_HASHED = {"source"}  # where a model lies on disk does not change what it computes (config_sha1 does)


def settings_hash(settings: dict) -> str:
    key = {k: v for k, v in settings.items() if k not in NOT_HASHED}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def feature_dir_name(settings: dict) -> str:
    return f"{settings['kind']}-{settings['name']}-{settings_hash(settings)}".replace("/", "_")


@dataclass
class FeatureSet:
    """Read side of one feature kind: O(1) access to one utterance's frames via the memory map."""

    path: Path
    meta: dict
    data: np.ndarray           # memory-mapped [total, dim]
    offsets: dict[str, tuple[int, int]]

    @classmethod
    def open(cls, path: Path) -> FeatureSet:
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise MmferError(f"{path}: feature set is incomplete (no meta.json); rerun `mmfer prepare` to finish it")
        repair = "rerun `mmfer prepare` with the same settings to repair it"
        try:
            meta = read_json(meta_file)
            index = pd.read_parquet(path / "index.parquet")
            data = np.load(path / "data.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise MmferError(f"{path}: damaged feature set ({str(err).splitlines()[0][:100]}); {repair}") from None
        expected = (meta.get("frames"), int(meta["settings"]["dim"]))
        if data.ndim != 2 or tuple(data.shape) != expected or len(index) != meta.get("utterances"):
            raise MmferError(f"{path}: data.npy is {tuple(data.shape)}, meta.json says {expected}; {repair}")
        offsets = dict(zip(index["utt_id"], zip(index["offset"].tolist(), index["length"].tolist())))
        return cls(path, meta, data, offsets)

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    @property
    def ids(self) -> list[str]:
        return list(self.offsets)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.offsets

    def length(self, utt_id: str) -> int:
        return self.offsets[utt_id][1]

    def get(self, utt_id: str) -> np.ndarray:
        """[length, dim] float32 copy of one utterance (reads only its own rows from disk)."""
        off, n = self.offsets[utt_id]
        return np.asarray(self.data[off:off + n], dtype=np.float32)


class FeatureStore:
    """A prepared store: corpus table plus one :class:`FeatureSet` per modality."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise MmferError(f"{self.path} is not a finished feature store (no store.json); "
                             "create it with: mmfer prepare CORPUS --out STORE")
        repair = "rerun `mmfer prepare` with the same corpus and --out to repair it"
        try:
            self.manifest = read_json(manifest)
            self.corpus: Corpus = load_corpus(self.path / "corpus.parquet")
        except (OSError, ValueError) as err:  # JSONDecodeError and Arrow errors are ValueErrors
            raise MmferError(f"{self.path}: damaged store ({str(err).splitlines()[0][:100]}); {repair}") from None
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("features"), dict):
            raise MmferError(f"{manifest}: not an mmfer store.json; {repair}")
        self.features = {kind: FeatureSet.open(self.path / folder)
                         for kind, folder in self.manifest["features"].items()}

    @property
    def modalities(self) -> tuple[str, ...]:
        from mmfer.streams import modalities_of

        return modalities_of(self.features)

    @cached_property
    def speaker_of(self) -> dict[str, str]:
        """utt_id -> speaker, built once per opened store (normalisation looks a speaker up per utterance)."""
        return dict(zip(self.corpus.table["utt_id"], self.corpus.table["speaker"]))

    def usable_ids(self, kinds: list[str]) -> list[str]:
        """Utterances that have every requested feature kind (extraction errors are left out)."""
        ids = self.corpus.table["utt_id"].tolist()
        return [u for u in ids if all(u in self.features[k] for k in kinds)]


# ---------------------------------------------------------------- write side

def shard_path(folder: Path, k: int) -> Path:
    return folder / "parts" / f"shard-{k:05d}.npz"


def write_shard(path: Path, ids: list[str], arrays: list[np.ndarray | None], errors: dict[str, str],
                dtype: str) -> None:
    """One finished unit of work, atomically; ``None`` entries are the failed utterances."""
    ok = [(u, a) for u, a in zip(ids, arrays) if a is not None]
    dim = next((a.shape[1] for _, a in ok), 0)
    data = np.empty((sum(len(a) for _, a in ok), dim), dtype)  # converted while copied: no float32 concatenation
    pos = 0
    for _, a in ok:
        data[pos:pos + len(a)] = a
        pos += len(a)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, data=data, lengths=np.array([len(a) for _, a in ok], np.int64),
                 ids=np.array([u for u, _ in ok], dtype=str),
                 err_ids=np.array(list(errors), dtype=str), err_reasons=np.array(list(errors.values()), dtype=str))


COPY_BYTES = 16 << 20  # what the merge holds in memory at a time


def finalize(folder: Path, n_shards: int, settings: dict) -> dict:
    """Merge the shards into one contiguous array + index, then write meta.json (the completion mark).

    One shard at a time, its frames copied as bytes in COPY_BYTES pieces, so memory stays flat whatever the
    stream's size (holding every shard at once took the whole stream: the Whisper frames are 1.3 GB per hour
    of audio, about 9 GB for IEMOCAP)."""
    parts = [_shard_index(shard_path(folder, k)) for k in range(n_shards)]
    total = int(sum(p["lengths"].sum() for p in parts))
    dim, dtype = int(settings["dim"]), np.dtype(settings["dtype"])
    rows, pos = [], 0
    with atomic_path(folder / "data.npy") as tmp, tmp.open("wb") as out:
        np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                    "fortran_order": False, "shape": (total, dim)})
        for k, p in enumerate(parts):
            n = int(p["lengths"].sum())
            _copy_frames(shard_path(folder, k), out, n, dim, dtype)
            offs = pos + np.concatenate([[0], np.cumsum(p["lengths"])[:-1]]) if len(p["lengths"]) else []
            rows += list(zip(p["ids"].tolist(), np.asarray(offs, np.int64).tolist(), p["lengths"].tolist()))
            pos += n
    index = pd.DataFrame(rows, columns=["utt_id", "offset", "length"])
    with atomic_path(folder / "index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    errors = [(u, r) for p in parts for u, r in zip(p["err_ids"].tolist(), p["err_reasons"].tolist())]
    write_errors(folder / "errors.csv", [(u, settings["kind"], r) for u, r in errors])
    meta = {"settings": settings, "hash": settings_hash(settings), "utterances": len(index),
            "frames": total, "errors": len(errors), "complete": True, "store_version": STORE_VERSION}
    write_json(folder / "meta.json", meta)
    for k in range(n_shards):
        shard_path(folder, k).unlink()
    (folder / "parts").rmdir()
    return meta


def _shard_index(path: Path) -> dict[str, np.ndarray]:
    """A shard's small members (ids, lengths, errors): an .npz reads each member only when asked for."""
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in ("ids", "lengths", "err_ids", "err_reasons")}


def _copy_frames(path: Path, out, n: int, dim: int, dtype: np.dtype) -> None:
    """Append a shard's [n, dim] frames to ``out`` as bytes, straight from the .npz member (np.savez stores
    it uncompressed; the zip's CRC is checked at its end). A member in another layout is converted."""
    with zipfile.ZipFile(path) as zf, zf.open("data.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, stored = read_header(member)
        if n == 0:
            return
        if shape == (n, dim) and stored == dtype and not fortran:
            start = out.tell()
            shutil.copyfileobj(member, out, COPY_BYTES)
            if out.tell() - start != n * dim * dtype.itemsize:
                raise MmferError(f"{path}: a shard shorter than its index; delete it and rerun `mmfer prepare`")
            return
    with np.load(path, allow_pickle=False) as z:
        data = z["data"]
    if data.shape != (n, dim):
        raise MmferError(f"{path}: frames {data.shape}, index says {(n, dim)}; delete it and rerun `mmfer prepare`")
    out.write(np.ascontiguousarray(data, dtype).tobytes())


def write_errors(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["utt_id", "stage", "reason"])
        w.writerows(rows)


# ---------------------------------------------------------------- safety of the write side

LOCK = ".mmfer-prepare.lock"


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """One ``prepare`` per store at a time."""
    with pid_lock(Path(store) / LOCK, f"{store} is being written by another mmfer prepare"):
        yield


@contextlib.contextmanager
def pid_lock(path: Path, busy: str) -> Iterator[None]:
    """A lock file holding the writer's pid; ``busy`` says who holds it. A lock left by a process that no
    longer runs (killed) is taken over."""
    path = Path(path)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise MmferError(f"{busy} (pid {pid}); wait for it to finish (or remove {path} if that process is "
                                 "gone)") from None
            path.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        except OSError as err:
            raise MmferError(f"{path.parent}: cannot write there ({err.strerror}); choose a writable folder") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp(store: Path) -> list[Path]:
    """Hidden ``.NAME.*.tmp`` files of atomic writes that a killed run left (only ours: the pattern
    io.atomic_path uses), in the store and its feature folders. Call with the store lock held."""
    gone = []
    for folder in [store, *[p for p in store.iterdir() if p.is_dir()]]:
        for f in list(folder.glob(".*.tmp")) + list(folder.glob("parts/.*.tmp")):
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def intact(folder: Path) -> bool:
    """A finished feature set whose files still match its meta.json (sizes and shapes)."""
    try:
        FeatureSet.open(folder)
    except MmferError:
        return False
    return True


def discard_finished(folder: Path) -> None:
    """Forget a damaged finished set so it is extracted again: only the files mmfer wrote there."""
    for name in ("meta.json", "data.npy", "index.parquet", "errors.csv"):
        (folder / name).unlink(missing_ok=True)
