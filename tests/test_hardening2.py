"""Hardening, round 2 (issue 24): outputs that must not destroy what they point at, files that must not
crash or mislead, and the demo under hostile requests. Each test reproduces a report; the numbers in the
names are the report's items."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmfer.errors import CorpusError, MmferError
from mmfer.serve.inputs import Item
from mmfer.serve.rows import check_plot_target, read_rows, resume, write_rows

ROW = {"key": "", "file": "a.wav", "speaker": "", "start": 0.0, "end": 1.0, "transcript": "hi",
       "transcript_source": "typed", "language": None, "emotion": "neu", "p_ang": 0.1, "p_neu": 0.9,
       "gate_audio": None, "normalisation": "training statistics", "error": None}


def test_1_plot_never_overwrites_what_it_should_not(tmp_path):
    wav, out = tmp_path / "in.flac", tmp_path / "r.csv"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    out.write_text("rows")
    for target, why in ((wav, "ending in .png"), (tmp_path / "in.png.wav", "ending in .png"),
                        (out, "ending in .png"), (tmp_path / "dir.png", "not a regular file"),
                        (tmp_path / "notes.png", "not an earlier plot"), (tmp_path / "no" / "t.png", "does not exist")):
        if target.name == "dir.png":
            target.mkdir()
        if target.name == "notes.png":
            target.write_text("my notes")
        with pytest.raises(MmferError, match=why):
            check_plot_target(target, [wav], out)
    assert wav.read_bytes()[:4] == b"fLaC" and out.read_text() == "rows" and (tmp_path / "notes.png").read_text()
    (tmp_path / "old.png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    check_plot_target(tmp_path / "old.png", [wav], out)  # an earlier plot may be replaced
    check_plot_target(tmp_path / "new.png", [wav], out)
    if os.path.exists("/dev/null"):
        with pytest.raises(MmferError, match="ending in .png|not a regular file"):
            check_plot_target(Path("/dev/null"), [wav], out)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_3_numeric_keys_resume_as_text(tmp_path, suffix):
    out = tmp_path / f"rows{suffix}"
    write_rows([{**ROW, "key": k} for k in ("1", "2", "3")], out, ["ang", "neu"])
    assert [r["key"] for r in read_rows(out)] == ["1", "2", "3"]
    _, todo = resume([Item("a.wav", k) for k in ("1", "2", "3", "4")], out, echo=lambda m: None)
    assert [it.key for it in todo] == ["4"]  # three done, not re-predicted and written twice


def test_6_a_users_csv_with_a_key_column_is_not_taken_for_output(tmp_path):
    mine = tmp_path / "keyed.csv"
    mine.write_text("key,value\na,1\n")
    with pytest.raises(MmferError, match="not an mmfer prediction output"):
        resume([Item("a.wav", "x")], mine, echo=lambda m: None)
    assert mine.read_text() == "key,value\na,1\n"


def test_6_every_output_has_the_same_columns(tmp_path):
    out = tmp_path / "errors.csv"
    write_rows([{"key": "a", "file": "a.wav", "start": None, "end": None, "error": "cannot read"}], out, ["ang", "neu"])
    import pandas as pd

    assert list(pd.read_csv(out).columns) == list(pd.DataFrame([ROW]).columns)


def test_19_csv_cells_are_never_formulas(tmp_path):
    rows = [{**ROW, "key": "=HYPERLINK(1)", "transcript": "+1 well", "speaker": "@me"}]
    write_rows(rows, tmp_path / "r.csv", ["ang", "neu"])
    text = (tmp_path / "r.csv").read_text()
    assert "'=HYPERLINK(1)" in text and "'+1 well" in text and "'@me" in text
    back = read_rows(tmp_path / "r.csv")[0]
    assert back["key"] == "=HYPERLINK(1)" and back["transcript"] == "+1 well"  # resuming sees the real values
    write_rows(rows, tmp_path / "r.parquet", ["ang", "neu"])
    assert read_rows(tmp_path / "r.parquet")[0]["transcript"] == "+1 well"  # not a spreadsheet format: as is


def test_9_a_huge_manifest_cell_is_a_file_line_error(tmp_path):
    from mmfer.corpora import read_corpus
    from mmfer.serve.inputs import expand_inputs

    m = tmp_path / "m.csv"
    m.write_text("id,audio,text,label,speaker\nok,a.wav,hello,neu,s1\nbig,a.wav," + "x" * 200_000 + ",neu,s1\n")
    with pytest.raises(CorpusError, match=r"m\.csv:3: not a readable CSV row"):
        read_corpus(m)
    with pytest.raises(MmferError, match=r"m\.csv:3: not a readable CSV row"):
        expand_inputs([m])


def test_18_float_samples_far_outside_one_are_refused(tmp_path):
    from mmfer.features.audio import AudioError, load_audio

    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    sf.write(tmp_path / "ok.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "scaled.wav", x * 1e6, 16000, subtype="FLOAT")
    assert len(load_audio(tmp_path / "ok.wav")) == 16000
    with pytest.raises(AudioError, match="far outside"):
        load_audio(tmp_path / "scaled.wav")


def test_17_ray_local_is_private(monkeypatch):
    import sys
    import types

    from mmfer import cluster

    calls = {}
    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: calls.update(kw))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    cluster.connect("local")
    assert calls["address"] == "local" and "RAY_ADDRESS" not in os.environ
    assert calls["_temp_dir"].startswith("/tmp/mmfer-ray-") and not calls["include_dashboard"]


@pytest.fixture(scope="module")
def client(trained_runs):
    from fastapi.testclient import TestClient

    from mmfer.serve.app import create_app

    return TestClient(create_app(trained_runs / "audio", asr="none"), base_url="http://127.0.0.1:8000")


def test_20_demo_refuses_other_origins_and_sends_security_headers(client, sample_corpus):
    from mmfer.corpora import read_corpus

    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    wav = Path(read_corpus(sample_corpus).table.iloc[0]["audio"]).read_bytes()
    evil = client.post("/api/predict", files={"audio": ("a.wav", wav)}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["error"]
    same = client.post("/api/predict", files={"audio": ("a.wav", wav)}, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200 and same.json()["emotion"]


def test_11_a_length_and_chunked_together_are_refused(client):
    r = client.post("/api/predict", content=b"x" * 1000,
                    headers={"Content-Length": "10", "Transfer-Encoding": "chunked",
                             "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code in (400, 411) and "Transfer-Encoding" in r.json()["error"]


def test_13_a_model_folder_never_chooses_a_vectors_file(trained_runs, tmp_path, sample_corpus):
    import shutil

    import torch

    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio
    from mmfer.serve.predictor import Predictor

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "mmmf", run)
    for f in run.glob("fold-*/model.pt"):
        ck = torch.load(f, weights_only=True)
        ck["features"]["lexical"] = {"kind": "lexical", "extractor": "static-vectors", "name": "passwd",
                                     "source": "/etc/passwd", "dim": 384, "dtype": "float16"}
        torch.save(ck, f)
    row = read_corpus(sample_corpus).table.iloc[0]
    with pytest.raises(MmferError, match="pass it yourself with --lexical"):
        Predictor(run).predict(load_audio(row["audio"]), row["text"])


def test_2_manifest_rows_are_keyed_by_row_and_duplicate_ids_refused(tmp_path):
    from mmfer.serve.inputs import expand_inputs

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    m = tmp_path / "m.csv"
    m.write_text("audio,text\na.wav,one\na.wav,two\na.wav,three\n")
    keys = [it.key for it in expand_inputs([m])]
    assert len(set(keys)) == 3 and keys[0] == "m.csv:2"  # one file, three inputs
    m.write_text("id,audio,text\nx,a.wav,one\nx,a.wav,two\n")
    with pytest.raises(MmferError, match=r"m\.csv:3: duplicate id 'x'"):
        expand_inputs([m])


def test_4_8_an_output_is_locked_and_checked_before_any_work(tmp_path):
    from mmfer.serve.rows import output_lock

    out = tmp_path / "r.csv"
    with output_lock(out):
        assert (tmp_path / "r.csv.lock").read_text() == str(os.getpid())
        with pytest.raises(MmferError, match="being written by another mmfer predict"), output_lock(out):
            pass
    assert not (tmp_path / "r.csv.lock").exists()
    with pytest.raises(MmferError, match="does not exist"):
        resume([Item("a.wav", "a")], tmp_path / "nodir" / "sub" / "r.csv", echo=lambda m: None)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root may write anywhere: the check then has nothing to refuse
            with pytest.raises(MmferError, match="not writable"):
                resume([Item("a.wav", "a")], ro / "r.csv", echo=lambda m: None)
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("start, end", [("2", "1"), ("-5", "1"), ("inf", "3"), ("1", "1e308"), ("1", "1")])
def test_16_manifest_times_are_validated(tmp_path, start, end):
    from mmfer.serve.inputs import expand_inputs

    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    m = tmp_path / "m.csv"
    m.write_text(f"audio,start,end\na.wav,0,1\na.wav,{start},{end}\n")
    with pytest.raises(MmferError, match=r"m\.csv:3: start .* need 0 <= start < end"):
        expand_inputs([m])


def test_5_export_force_removes_only_what_mmfer_wrote(trained_runs, tmp_path):
    import shutil

    from mmfer.runs import export

    ex = export(trained_runs / "audio", tmp_path / "ex1")
    export(trained_runs / "audio", ex, force=True)  # an earlier export alone: replaced
    (ex / "README-mine.txt").write_text("mine")
    (ex / "my-results").mkdir()
    (ex / "my-results" / "r.csv").write_text("rows")
    with pytest.raises(MmferError, match="files mmfer did not write"):
        export(trained_runs / "audio", ex, force=True)
    assert (ex / "README-mine.txt").read_text() == "mine" and (ex / "my-results" / "r.csv").is_file()
    inner = ex / "inner-run"
    shutil.copytree(trained_runs / "audio", inner)
    with pytest.raises(MmferError, match="holds the run"):
        export(inner, ex, force=True)
    assert (inner / "fold-1" / "model.pt").is_file()


def test_10_compressed_audio_decodes_in_blocks_within_the_result_size(tmp_path):
    """A file's header may claim 8 channels at 192 kHz: decoding is bounded by the 16 kHz mono result plus
    one block, not by the claim (a whole-file read of this one takes 8 x 12 = 96 times the result)."""
    import tracemalloc

    from mmfer.features import audio

    path = tmp_path / "wide.flac"
    rate, seconds, channels = 192000, 20, 8
    with sf.SoundFile(path, "w", rate, channels, format="FLAC") as f:
        for _ in range(seconds):
            f.write(np.zeros((rate, channels), np.float32) + np.sin(np.arange(rate) / 40)[:, None] * 0.1)
    tracemalloc.start()
    x = audio.load_audio(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result = seconds * audio.SAMPLE_RATE * 4
    assert len(x) == seconds * audio.SAMPLE_RATE
    assert peak < 3 * result + 4 * audio.BLOCK_SAMPLES * 4, peak  # whole-file decoding: > 60 MB here
    assert peak < seconds * rate * channels * 4 / 4


def test_10_blockwise_resampling_equals_whole_signal_resampling(tmp_path, monkeypatch):
    from mmfer.features import audio

    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 2 ** 14)  # many blocks
    rng = np.random.default_rng(0)
    for rate, channels in ((44100, 2), (48000, 3), (8000, 1), (22050, 1)):
        x = rng.normal(0, 0.1, (int(rate * 3.3), channels)).astype(np.float32)
        sf.write(tmp_path / "a.wav", x, rate, subtype="FLOAT")
        whole = audio._mono(x, rate)
        assert np.allclose(audio.load_audio(tmp_path / "a.wav"), whole, atol=1e-6)
        part = audio.load_audio(tmp_path / "a.wav", start=0.7, end=1.9)
        assert abs(len(part) - 1.2 * audio.SAMPLE_RATE) <= 1


def test_10_the_demo_caps_concurrent_decodes(trained_runs, sample_corpus):
    from fastapi.testclient import TestClient

    from mmfer.corpora import read_corpus
    from mmfer.serve.app import create_app

    app = create_app(trained_runs / "audio", asr="none", max_decodes=1, decode_wait=0.3)
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    wav = Path(read_corpus(sample_corpus).table.iloc[0]["audio"]).read_bytes()
    from starlette.datastructures import UploadFile

    reads = []
    real_read = UploadFile.read

    async def counted_read(self, size: int = -1) -> bytes:
        reads.append(size)
        return await real_read(self, size)

    assert app.state.decodes.acquire(blocking=False)  # one upload being analysed
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(UploadFile, "read", counted_read)
        busy = client.post("/api/predict", files={"audio": ("a.wav", wav)})
    assert busy.status_code == 503 and "try again" in busy.json()["error"]
    assert reads == []  # the waiting upload was never read into memory
    app.state.decodes.release()
    assert client.post("/api/predict", files={"audio": ("a.wav", wav)}).status_code == 200


def _serve(protocol, port: int):
    import threading

    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error",
                                           lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    return server


def test_12_demo_connections_must_send_headers_and_body_in_time():
    import socket
    import time

    from mmfer.serve.timeouts import TimedH11Protocol

    fast = type("Fast", (TimedH11Protocol,), {"header_seconds": 0.6, "body_seconds": 0.8})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _serve(fast, port)
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)

    def closed_after(sends: list[bytes], pause: float) -> float:
        c = socket.create_connection(("127.0.0.1", port))
        c.settimeout(5)
        t = time.perf_counter()
        try:
            for b in sends:
                c.sendall(b)
                time.sleep(pause)
            data = c.recv(1024)
            while data and b"ok" not in data:
                data = c.recv(1024)
            return -1.0 if data else time.perf_counter() - t
        except (ConnectionResetError, BrokenPipeError):
            return time.perf_counter() - t
        finally:
            c.close()

    try:
        assert 0.4 < closed_after([], 0) < 3  # idle: closed after the header deadline
        trickle = [bytes([b]) for b in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
        assert 0.4 < closed_after(trickle, 0.1) < 3  # headers one byte at a time
        slow_body = [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"] + [b"x"] * 20
        assert 0.5 < closed_after(slow_body, 0.1) < 3  # body one byte at a time
        assert closed_after([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], 0) == -1.0  # a normal request is answered
        assert closed_after([b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n", b"abcd"], 0.3) == -1.0
    finally:
        server.should_exit = True


def test_12_serve_runs_with_the_deadlines(monkeypatch, tmp_path):
    import uvicorn
    from typer.testing import CliRunner

    import mmfer.serve.app as app_mod
    from mmfer.cli import app
    from mmfer.serve.timeouts import TimedH11Protocol

    seen = {}
    monkeypatch.setattr(app_mod, "create_app", lambda *a, **k: "app")
    monkeypatch.setattr(uvicorn, "run", lambda app_, **k: seen.update(k))
    assert CliRunner().invoke(app, ["serve", str(tmp_path)]).exit_code == 0
    assert seen["http"] is TimedH11Protocol and seen["timeout_keep_alive"] <= 5


def test_small_healthz_says_when_the_model_folder_is_gone(trained_runs, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from mmfer.serve.app import create_app

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "audio", run)
    client = TestClient(create_app(run, asr="none"), base_url="http://127.0.0.1:8000")
    assert client.get("/healthz").status_code == 200
    shutil.rmtree(run)
    r = client.get("/healthz")
    assert r.status_code == 503 and "gone" in str(r.json()["problems"]) and str(tmp_path) not in r.text


def test_small_serve_on_a_tampered_checkpoint_gives_the_reason(trained_runs, tmp_path):
    import shutil

    from mmfer.serve.app import create_app

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "audio", run)
    for f in run.glob("fold-*/model.pt"):
        f.write_bytes(b"not a checkpoint")
    with pytest.raises(MmferError) as err:
        create_app(run, asr="none")
    assert "no trained model" not in str(err.value) and "model.pt" in str(err.value)


def test_7_a_file_name_that_is_not_utf8_is_written_escaped_and_resumes(trained_runs, sample_corpus, tmp_path):
    import shutil

    import mmfer
    from mmfer.corpora import read_corpus

    src = read_corpus(sample_corpus).table.iloc[0]["audio"]
    folder = tmp_path / "in"
    folder.mkdir()
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/\xff\xfex.wav")  # undecodable bytes: surrogates in Python
    shutil.copy(src, odd)
    shutil.copy(src, folder / "plain.wav")
    model = mmfer.load(trained_runs / "audio", asr="none")
    notes: list[str] = []
    out = tmp_path / "rows.csv"
    rows = model.predict_files([folder], out=out, progress=False, echo=notes.append)
    assert len(rows) == 2 and not rows["error"].notna().any()
    text = out.read_text(encoding="utf-8")
    assert "\\xff\\xfex.wav" in text and any("not valid UTF-8" in n for n in notes)
    again = model.predict_files([folder], out=out, progress=False, echo=notes.append)
    assert len(again) == 2 and len(out.read_text(encoding="utf-8").splitlines()) == 3  # resumed: no duplicates
    for fmt in ("rows.jsonl", "rows.parquet"):
        assert len(model.predict_files([folder], out=tmp_path / fmt, progress=False, echo=notes.append)) == 2


def test_8_unwritable_outputs_are_refused_before_any_work(tmp_path, trained_runs):
    from mmfer import runs
    from mmfer.serve.rows import writable

    with pytest.raises(MmferError, match="does not exist; create it first"):
        writable(tmp_path / "nodir" / "sub" / "r.csv", "--out")
    if Path("/proc/self").is_dir():
        with pytest.raises(MmferError, match="cannot write in /proc"):
            writable(Path("/proc/r.csv"), "--out")
        with pytest.raises(MmferError, match="cannot write in /proc"):
            check_plot_target(Path("/proc/t.png"), [], None)
        with pytest.raises(MmferError, match="--out /proc/ex"):
            runs.export(trained_runs / "audio", Path("/proc/ex"))
        with pytest.raises(MmferError, match="cannot create"):
            runs.export(trained_runs / "audio", Path("/proc/no/ex"))
    writable(tmp_path / "fine.csv", "--out")
    assert not list(tmp_path.glob(".mmfer-probe-*"))  # the probe is removed


def test_16_a_long_manifest_segment_is_cut_like_a_long_file(tmp_path, sample_corpus):
    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio
    from mmfer.serve.inputs import expand_inputs, units_of

    table = read_corpus(sample_corpus).table
    gap = np.zeros(16000, np.float32)
    speech = [load_audio(a) for a in table["audio"].iloc[:12]]
    x = np.concatenate([gap] + [s for u in speech for s in (u, gap)])
    sf.write(tmp_path / "long.wav", x, 16000)
    m = tmp_path / "m.csv"
    m.write_text("audio,start,end,text\nlong.wav,2.0,%.2f,whole segment\n" % (len(x) / 16000 - 1))
    (item,) = expand_inputs([m])
    assert item.end - item.start > 20
    units = list(units_of(item, 20.0, 1.0, 15.0))
    assert len(units) >= 3 and all(item.start <= u.start < u.end <= item.end + 0.01 for u in units)
    assert all(u.end - u.start <= 15.01 for u in units) and all(u.text is None for u in units)


def test_small_a_damaged_mp3_does_not_flood_stderr(tmp_path):
    import subprocess
    import sys

    x = (np.sin(np.arange(16000 * 20) / 10) * 0.3).astype(np.float32)
    sf.write(tmp_path / "good.mp3", x, 16000, format="MP3")
    good, rng, b = (tmp_path / "good.mp3").read_bytes(), np.random.default_rng(0), bytearray()
    for i in range(0, len(good), 1500):  # junk between the frames: the decoder resyncs, and says so, each time
        b += good[i:i + 1500] + bytes(rng.integers(0, 256, 40, dtype=np.uint8))
    (tmp_path / "junk.mp3").write_bytes(bytes(b))
    code = ("from mmfer.features.audio import load_audio, AudioError\n"
            f"try: load_audio({str(tmp_path / 'junk.mp3')!r})\nexcept AudioError as e: print(e.reason)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr.count("\n") <= 1, out.stderr[:300]
    unmuted = subprocess.run([sys.executable, "-c", "import soundfile as sf\ntry: sf.read(" +
                              repr(str(tmp_path / "junk.mp3")) + ")\nexcept Exception: pass"],
                             capture_output=True, text=True, timeout=120)
    assert unmuted.stderr.count("\n") > 20  # what libmpg123 prints when nobody mutes it


@pytest.mark.parametrize("engine", ["local", "executor"])
def test_15_a_resumed_batch_predicts_what_an_uninterrupted_one_does(trained_runs, sample_corpus, tmp_path, engine):
    """Dialogue context (and speaker statistics) come from all inputs, also when rows were done before the
    interruption; through an executor (Ray's path) as well as locally."""
    import json

    import pandas as pd

    import mmfer
    from mmfer.corpora import read_corpus
    from mmfer.engine import Serial
    from mmfer.serve.inputs import expand_inputs
    from mmfer.serve.remote import PredictorSpec, run_on

    t = read_corpus(sample_corpus).table.iloc[:16]
    m = tmp_path / "m.csv"
    pd.DataFrame({"id": t["utt_id"], "audio": t["audio"], "text": t["text"], "speaker": t["speaker"],
                  "dialogue": [f"d{i % 2}" for i in range(len(t))]}).to_csv(m, index=False)
    model = mmfer.load(trained_runs / "mmmf", asr="none")
    items = expand_inputs([m])

    def predict(out: Path) -> list[dict]:
        if engine == "local":
            return model.batch.run(items, out, progress=False, echo=lambda s: None)
        spec = PredictorSpec(str(model.predictor.path), **model.spec)
        return run_on(Serial(), model.batch, spec, items, out, echo=lambda s: None, progress=False)

    whole = predict(tmp_path / "whole.jsonl")
    cut = tmp_path / "cut.jsonl"
    with open(cut.with_name(cut.name + ".partial.jsonl"), "w") as fh:  # killed after 6 inputs
        for r in whole[:6]:
            fh.write(json.dumps(r) + "\n")
    resumed = predict(cut)
    assert [r["key"] for r in resumed] == [r["key"] for r in whole]
    for a, b in zip(whole, resumed):
        assert a["emotion"] == b["emotion"]
        assert max(abs(a[k] - b[k]) for k in a if k.startswith("p_")) < 1e-5
