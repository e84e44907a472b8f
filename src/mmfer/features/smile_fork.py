"""openSMILE without rebuilding its component graph for every utterance.

``opensmile.Smile.process_signal`` builds openSMILE's component graph, runs it and frees it for every signal.
For ComParE_2016 the build alone (naming 6,373 features) is about 25 ms of an 85 ms functionals call on a
RAVDESS utterance, and ``reset`` costs as much as a new build. So a small server process
(``smile_server.py``, standard library only) builds the graph once and ``fork``s a fresh copy of itself per
signal: about 1 ms instead of 25, and the features are bit-identical to ``process_signal``'s (the child
starts from exactly the state a fresh initialisation makes; tests/test_features.py compares them).
The audinterface/pandas wrapping of ``process_signal`` (3-5 ms a call) goes too.

Used wherever ``fork`` exists (Linux, macOS); elsewhere, or if the server cannot start or stops, the
extractor falls back to ``process_signal`` for that signal and says nothing: the numbers are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np

from mmfer.features.smile_server import HEAD, read_exact, write_all

SERVER = Path(__file__).with_name("smile_server.py")


def available() -> bool:
    return hasattr(os, "fork")


def smile_options(smile, sample_rate: int) -> dict:
    """The options ``opensmile.Smile`` (2.x) gives openSMILE for a signal: external audio in, one sink level
    out (``Smile._options`` plus what ``_extract`` adds), built from the package's public names."""
    from opensmile.core.config import config

    root = smile.default_config_root
    level = getattr(smile.feature_level, "value", smile.feature_level)
    return {"sink": os.path.join(root, config.EXTERNAL_OUTPUT_SINGLE_CONFIG), "sinkLevel": level,
            "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": os.path.join(root, "shared/FrameModeFunctionals.conf.inc"),
            "source": os.path.join(root, config.EXTERNAL_INPUT_CONFIG), "sampleRate": sample_rate, "nBits": 16}


def pcm16(x: np.ndarray) -> bytes:
    """The 16-bit samples ``Smile`` hands openSMILE (float32 scaled by 32768, truncated), as bytes."""
    return (np.asarray(x, np.float32).reshape(-1) * np.float32(32768)).astype(np.int16).tobytes()


class ForkedSmile:
    """One openSMILE server per instance (started on first use, ended with the instance or the process);
    ``process(x)`` -> [rows, features] float32 as openSMILE wrote them (NaN included), or None when the
    server is not available or the signal failed there (the caller then uses ``process_signal``, which
    gives the same values or openSMILE's own error). Thread-safe: calls are serialised."""

    def __init__(self, smile, sample_rate: int):
        from opensmile.core import lib

        self.args = [str(lib.smileapi_path), str(smile.config_path), json.dumps(smile_options(smile, sample_rate))]
        self._proc: subprocess.Popen | None = None
        self._pid = os.getpid()  # the process whose server ``_proc`` is
        self._failed = not available()
        self._lock = threading.Lock()

    def _forked_since(self) -> None:
        """In a process forked from the one that started the server (a worker pool after the parent predicted):
        the server and the lock are the parent's; this process starts a server of its own. The pipes are
        unbuffered, so dropping the parent's only closes this process's copies of them: nothing half-written
        by a thread of the parent is flushed into the parent's server from here."""
        if self._pid != os.getpid():
            self._pid, self._proc, self._lock = os.getpid(), None, threading.Lock()

    def _start(self) -> subprocess.Popen | None:
        from opensmile.core.config import config

        cmd = [sys.executable, "-I", "-S", str(SERVER), *self.args, config.EXTERNAL_SOURCE_COMPONENT,
               config.EXTERNAL_OUTPUT_COMPONENT]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    bufsize=0)
        except OSError:
            return None
        if self._answer(proc) is None:
            _stop(proc)
            return None
        weakref.finalize(self, _stop, proc)
        return proc

    @staticmethod
    def _answer(proc: subprocess.Popen) -> np.ndarray | None:
        head = read_exact(proc.stdout, HEAD.size)
        if len(head) < HEAD.size:
            return None
        status, rows, cols = HEAD.unpack(head)
        body = read_exact(proc.stdout, rows * cols * 4 if status == 0 else rows)
        if status != 0:
            return None
        return np.frombuffer(body, np.float32).reshape(rows, cols)

    def process(self, x: np.ndarray) -> np.ndarray | None:
        self._forked_since()
        with self._lock:
            if self._failed:
                return None
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
                if self._proc is None:
                    self._failed = True
                    return None
            pcm = pcm16(x)
            try:
                write_all(self._proc.stdin, struct.pack("<Q", len(pcm)) + pcm)
                return self._answer(self._proc)
            except (BrokenPipeError, OSError, ValueError):
                _stop(self._proc)
                self._proc = None
                return None


def _stop(proc: subprocess.Popen) -> None:
    """End a server: closing its input ends its loop."""
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()
