"""Errors a user can act on. The CLI prints them on one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class MmferError(Exception):
    """Bad input or setup that the user can fix (never a bug in mmfer)."""


class CorpusError(MmferError):
    """A corpus file or folder is missing or malformed; names the file and, when known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class NoSpeech(MmferError):
    """The audio holds no speech: say so instead of guessing an emotion (exit 2 / HTTP 422)."""

    SILENT = "no speech found: the recording is silent (no frame reaches -60 dBFS)"
    NONE_IN_RECORDING = "no speech found in the recording"
