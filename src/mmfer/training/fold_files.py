"""Fixed partitions from a file (``train.protocol: file``), so a published split can be reproduced, and the
``folds.json`` every cv run writes, so a run's own split can be.

Accepted files:

* **mmfer's ``folds.json``** (written into every run): ``{"format": "mmfer-folds/1", "folds": [{"name",
  "train", "val", "test", ...}]}``; read back it gives exactly the same parts.
* **a mapping** ``.json``: ``{utt_id: fold}``, or ``{utt_id: {"fold": f, "split": s}}``.
* **a table** ``.csv``: columns ``utt_id``, ``fold`` and optionally ``split``.
  Without ``split`` an utterance is *tested* in its fold and trains in every other one. With ``split``
  (``train``, ``val``/``valid``/``dev``, ``test``) each row places an utterance in one part of one fold
  (an utterance may have a row per fold); utterances a fold does not list are not used in it.
* **EmoBox's published partitions**: the corpus folder of its ``data/`` tree (``fold_1/NAME_train_fold_1.jsonl``,
  ``NAME_test_fold_1.jsonl``, optional ``NAME_valid_fold_1.jsonl``; or the ``.json`` twins, keyed by
  utterance). Its keys are ``<dataset>-<file stem>`` (``ravdess-03-01-...-11``); each is matched to the
  corpus by its full key, then without the dataset prefix, then by the audio file's stem, each only where
  the match is unique.

A fold without validation utterances gets validation speakers carved from its training speakers, the
same rule as the built-in protocols. Utterances of the file the store does not hold (refined away, e.g.
``xxx`` labels) are left out and counted; none matching at all is an error.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from mmfer.errors import MmferError
from mmfer.training.partition import Fold, carve_validation

FORMAT = "mmfer-folds/1"
PARTS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


def write_folds(path: Path, folds: list, protocol: str) -> None:
    """The run's partition as mmfer's ``folds.json`` (atomic)."""
    from mmfer.io import write_json

    write_json(Path(path), {"format": FORMAT, "protocol": protocol, "folds": [
        {"index": f.index, "name": f.name, "train": list(f.train), "val": list(f.val), "test": list(f.test),
         "val_speakers": list(f.val_speakers), "test_speakers": list(f.test_speakers)} for f in folds]})


def read_folds_file(path: str | Path, table: pd.DataFrame, val_speakers: int = 2) -> tuple[list, int]:
    """The folds a file describes, over the utterances of ``table`` (the store's corpus), and how many of
    the file's utterances the store does not hold."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MmferError(f"folds file not found: {path}")
    if path.is_dir() and (path / "folds.json").is_file():  # a run folder: the folds it used
        path = path / "folds.json"
    if path.is_dir():
        parts, where = _emobox(path), str(path)
    elif path.suffix.lower() == ".csv":
        parts, where = _csv(path), str(path)
    elif path.suffix.lower() in (".json", ".jsonl"):
        parts, where = _json(path), str(path)
    else:
        raise MmferError(f"{path}: a folds file is a .json or .csv file, or an EmoBox corpus folder (fold_1/ ...)")
    return _build(parts, table, val_speakers, where)


# ---------------------------------------------------------------- readers: {fold: {part: [keys]}}

def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MmferError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and isinstance(data.get("folds"), list):
        out = {}
        for i, f in enumerate(data["folds"]):
            if not isinstance(f, dict) or not isinstance(f.get("test"), list):
                raise MmferError(f"{path}: folds[{i}] needs a 'test' list of utterance ids")
            out[str(f.get("name", i + 1))] = {p: [str(u) for u in f.get(p) or []] for p in ("train", "val", "test")}
            if "train" not in f:
                out[str(f.get("name", i + 1))].pop("train")
        return out
    if not isinstance(data, dict) or not data:
        raise MmferError(f"{path}: expected mmfer's folds.json or a mapping of utterance id to fold")
    rows = []
    for utt, v in data.items():
        if isinstance(v, dict):
            if "fold" not in v:
                raise MmferError(f"{path}: utterance {utt!r} has no 'fold'")
            rows.append((str(utt), str(v["fold"]), v.get("split")))
        else:
            rows.append((str(utt), str(v), None))
    return _from_rows(rows, str(path))


def _csv(path: Path) -> dict:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "utt_id" not in cols or "fold" not in cols:
                raise MmferError(f"{path}:1: a folds table needs the columns utt_id and fold (and optionally split)")
            rows = []
            for n, r in enumerate(reader, start=2):
                if not (r.get("utt_id") or "").strip() or not (r.get("fold") or "").strip():
                    raise MmferError(f"{path}:{n}: empty utt_id or fold")
                rows.append((r["utt_id"].strip(), r["fold"].strip(), (r.get("split") or "").strip() or None))
    except UnicodeDecodeError:
        raise MmferError(f"{path}: not UTF-8 text; save the folds table as UTF-8") from None
    return _from_rows(rows, str(path))


def _from_rows(rows: list[tuple[str, str, str | None]], where: str) -> dict:
    with_split = {s is not None for _, _, s in rows}
    if with_split == {True, False}:
        raise MmferError(f"{where}: give a split for every row or for none")
    out: dict = defaultdict(lambda: defaultdict(list))
    if True in with_split:
        for utt, fold, split in rows:
            part = PARTS.get(str(split).lower())
            if part is None:
                raise MmferError(f"{where}: utterance {utt!r}: split {split!r} is not train, val (valid, dev) or test")
            out[fold][part].append(utt)
        return {f: dict(p) for f, p in out.items()}
    seen: dict[str, str] = {}
    for utt, fold, _ in rows:
        if utt in seen and seen[utt] != fold:
            raise MmferError(f"{where}: utterance {utt!r} is in folds {seen[utt]} and {fold}; without a split column "
                             "each utterance is tested in one fold")
        seen[utt] = fold
        out[fold]["test"].append(utt)
    return {f: {"test": p["test"]} for f, p in out.items()}  # no 'train': the other folds' test parts


def _emobox(folder: Path) -> dict:
    fold_dirs = sorted((d for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"fold_\d+", d.name)),
                       key=lambda d: int(d.name.split("_")[1]))
    if not fold_dirs:
        raise MmferError(f"{folder}: no fold_1/, fold_2/ ... folders (EmoBox's data/<corpus>/ layout)")
    out = {}
    for d in fold_dirs:
        k = d.name.split("_")[1]
        parts = {}
        for part, names in (("train", ("train",)), ("val", ("valid", "dev", "val")), ("test", ("test",))):
            for name in names:
                files = sorted(d.glob(f"*_{name}_fold_{k}.jsonl")) or sorted(d.glob(f"*_{name}_fold_{k}.json"))
                if files:
                    parts[part] = _emobox_keys(files[0])
                    break
        if "train" not in parts or "test" not in parts:
            raise MmferError(f"{d}: expected *_train_fold_{k}.jsonl and *_test_fold_{k}.jsonl")
        out[f"fold_{k}"] = parts
    return out


def _emobox_keys(path: Path) -> list[tuple[str, str, str]]:
    """(key, dataset, audio stem) of each utterance of one EmoBox part file."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            items = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        else:
            items = [(0, {"key": k, **v}) for k, v in json.loads(text).items()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise MmferError(f"{path}: not an EmoBox partition file ({err})") from None
    for n, item in items:
        if not isinstance(item, dict) or "key" not in item:
            raise MmferError(f"{path}:{n}: an EmoBox entry needs a 'key'")
        wav = str(item.get("wav") or "")
        out.append((str(item["key"]), str(item.get("dataset") or ""), Path(wav).stem if wav else ""))
    return out


# ---------------------------------------------------------------- keys -> the store's utterances -> Folds

def _matcher(table: pd.DataFrame):
    """A function from a file's key (or EmoBox triple) to the store's utterance id, or None."""
    ids = set(table["utt_id"])
    stems: dict[str, list[str]] = defaultdict(list)
    if "audio" in table:
        for u, a in zip(table["utt_id"], table["audio"].fillna("")):
            if a:
                stems[Path(str(a)).stem].append(u)

    def match(key) -> str | None:
        if isinstance(key, str):
            return key if key in ids else None
        full, dataset, stem = key
        if full in ids:
            return full
        if dataset and full.startswith(dataset + "-") and full[len(dataset) + 1:] in ids:
            return full[len(dataset) + 1:]
        if stem in ids:
            return stem
        found = stems.get(stem, [])
        return found[0] if len(found) == 1 else None
    return match


def _build(parts: dict, table: pd.DataFrame, val_speakers: int, where: str) -> tuple[list, int]:
    match = _matcher(table)
    speaker = dict(zip(table["utt_id"], table["speaker"]))
    resolved, unknown, matched = {}, set(), 0
    for name, p in parts.items():
        resolved[name] = {}
        for part, keys in p.items():
            got = []
            for key in keys:
                u = match(key)
                if u is None:
                    unknown.add(key if isinstance(key, str) else key[0])
                else:
                    got.append(u)
                    matched += 1
            resolved[name][part] = got
    if not matched:
        raise MmferError(f"{where}: none of its utterance ids is in the store (e.g. {sorted(unknown)[0]!r}); "
                         "the ids must be the store's utt_id (see the store's corpus.parquet)")
    folds = []
    names = list(resolved)
    for i, name in enumerate(names):
        p = resolved[name]
        test = list(dict.fromkeys(p["test"]))
        if "train" in p:
            train = list(dict.fromkeys(p["train"]))
        else:  # utterance -> fold files: every other fold's test part trains
            held = set(test)
            train = [u for n in names if n != name for u in resolved[n]["test"] if u not in held]
        val = list(dict.fromkeys(p.get("val", [])))
        overlap = (set(test) & set(train)) | (set(test) & set(val)) | (set(train) & set(val))
        if overlap:
            raise MmferError(f"{where}: fold {name}: utterance {sorted(overlap)[0]!r} is in two parts of the fold")
        if not test or not train:
            raise MmferError(f"{where}: fold {name} has no {'test' if not test else 'training'} utterances in this "
                             "store")
        spk = lambda ids: sorted({str(speaker[u]) for u in ids})  # noqa: E731
        if val:
            val_spk = spk(val)
        else:
            train, val, val_spk = carve_validation(train, speaker, val_speakers, i, f"fold {name}")
        folds.append(Fold(index=i, name=str(name), train=train, val=val, test=test, val_speakers=val_spk,
                          test_speakers=spk(test)))
    return folds, len(unknown)
