"""A small openSMILE server: builds openSMILE's component graph once, then answers each signal from a fresh
copy of it made by ``fork``. Run as a script (``python -I -S smile_server.py ...``) by
``mmfer.features.smile_fork``; it imports nothing but the standard library, so the process it forks stays
small.

Why: building ComParE_2016's graph (6,373 feature names) takes about 25 ms per utterance, a third of a
functionals call, and openSMILE's ``reset`` costs as much. A ``fork`` of this process (about 20 MB) costs
about 1 ms and hands the child exactly the state a fresh initialisation would make, so every feature is
bit-identical to a fresh ``opensmile.Smile`` call (tests/test_features.py).

Protocol on stdin/stdout, little-endian:

* after start-up the server writes one answer with no rows (status 0), or status 1 and why it failed;
* request: ``<Q`` byte count, then 16-bit PCM at the configured rate (mono);
* answer: ``<iQQ`` status, rows, columns, then rows x columns float32 (status 0), or status 1 and a UTF-8
  message in place of the values (rows = message length, columns = 0).

The child that runs a signal writes its answer to a pipe of its own; the server forwards it once the child
has exited cleanly, so a child that crashes yields a status-1 answer, never a torn one. End of stdin ends
the server.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

HEAD = struct.Struct("<iQQ")
SINK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_long, ctypes.c_long,
                        ctypes.c_void_p, ctypes.c_void_p)


def _library(path: str):
    lib = ctypes.CDLL(path)
    lib.smile_new.argtypes = []
    lib.smile_new.restype = ctypes.c_void_p
    lib.smile_initialize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                     ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    lib.smile_initialize.restype = ctypes.c_int
    lib.smile_run.argtypes = [ctypes.c_void_p]
    lib.smile_run.restype = ctypes.c_int
    lib.smile_extaudiosource_write_data.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.smile_extaudiosource_write_data.restype = ctypes.c_int
    lib.smile_extaudiosource_set_external_eoi.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.smile_extaudiosource_set_external_eoi.restype = ctypes.c_int
    lib.smile_extsink_set_data_callback_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, SINK, ctypes.c_void_p]
    lib.smile_extsink_set_data_callback_ex.restype = ctypes.c_int
    lib.smile_error_msg.argtypes = [ctypes.c_void_p]
    lib.smile_error_msg.restype = ctypes.c_char_p
    return lib


def failure(message: str) -> bytes:
    raw = message.encode("utf-8", "replace")
    return HEAD.pack(1, len(raw), 0) + raw


def read_exact(fh, n: int) -> bytes:
    """``n`` bytes from ``fh``, fewer only at its end."""
    parts, got = [], 0
    while got < n:
        chunk = fh.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def write_all(fh, data: bytes) -> None:
    """All of ``data`` into an unbuffered file (whose ``write`` may take part of it)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]


def _drain(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _check(lib, smile, rc: int, what: str) -> None:
    if rc != 0:
        message = lib.smile_error_msg(smile)
        raise RuntimeError(f"openSMILE {what} failed (code {rc})" + (f": {message.decode('utf-8', 'replace')}"
                                                                     if message else ""))


def _run(lib, smile, source: bytes, sink: bytes, pcm: bytes) -> bytes:
    """In the forked child: one signal through the initialised graph -> an answer."""
    rows: list[bytes] = []
    width = [0]

    def collect(data, nt, n, meta, param):
        rows.append(ctypes.string_at(data, nt * n * 4))
        width[0] = n
        return 1

    callback = SINK(collect)
    _check(lib, smile, lib.smile_extsink_set_data_callback_ex(smile, sink, callback, None), "sink callback")
    _check(lib, smile, lib.smile_extaudiosource_write_data(smile, source, pcm, len(pcm)), "audio input")
    _check(lib, smile, lib.smile_extaudiosource_set_external_eoi(smile, source), "end of input")
    _check(lib, smile, lib.smile_run(smile), "run")
    values = b"".join(rows)
    n_rows = len(values) // (4 * width[0]) if width[0] else 0
    return HEAD.pack(0, n_rows, width[0]) + values


def serve(lib_path: str, config_file: str, options: dict, source: str, sink: str, stdin, stdout) -> None:
    lib = _library(lib_path)
    smile = lib.smile_new()
    flat = [str(v).encode("ascii") for kv in options.items() for v in kv]
    try:
        if not smile:
            raise RuntimeError("openSMILE could not create an instance")
        _check(lib, smile, lib.smile_initialize(smile, config_file.encode("ascii"), len(options),
                                                (ctypes.c_char_p * len(flat))(*flat), 2, 0, 0, None),
               "initialisation")
    except RuntimeError as err:
        stdout.write(failure(str(err)))
        stdout.flush()
        return
    stdout.write(HEAD.pack(0, 0, 0))
    stdout.flush()
    source_b, sink_b = source.encode("ascii"), sink.encode("ascii")
    while True:
        head = read_exact(stdin, 8)
        if len(head) < 8:
            return
        pcm = read_exact(stdin, struct.unpack("<Q", head)[0])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a fresh copy of the initialised graph, used once, never back in this loop
            try:
                os.close(r)
                try:
                    answer = _run(lib, smile, source_b, sink_b, pcm)
                except BaseException as err:  # noqa: BLE001 - any failure becomes an answer
                    answer = failure(str(err) or type(err).__name__)
                with os.fdopen(w, "wb", buffering=0) as fh:
                    write_all(fh, answer)
            finally:
                os._exit(0)
        os.close(w)
        answer = _drain(r)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or len(answer) < HEAD.size:
            answer = failure(f"openSMILE stopped on this signal (wait status {status})")
        stdout.write(answer)
        stdout.flush()


def main() -> None:
    lib_path, config_file, options, source, sink = sys.argv[1:6]
    serve(lib_path, config_file, json.loads(options), source, sink, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
