"""Hostile but fair input: each test here failed before the hardening it guards."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from mmfer.corpora import read_corpus
from mmfer.features.audio import AudioError, load_audio
from mmfer.serve.app import create_app

LOCAL = "http://127.0.0.1:8000"


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfer", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _wav_claiming(path: Path, rate: int, payload: int = 82_000) -> Path:
    """A PCM WAV whose header claims ``rate`` Hz (a 1 Hz header made predict grow to 21 GB)."""
    data = (np.random.default_rng(0).normal(0, 3000, payload // 2)).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


@pytest.fixture(scope="module")
def row(sample_corpus):
    return read_corpus(sample_corpus).table.iloc[2]


@pytest.fixture(scope="module")
def client(trained_runs):
    return TestClient(create_app(trained_runs, max_bytes=2_000_000, max_seconds=20), base_url=LOCAL)


def test_header_is_checked_before_decoding(tmp_path):
    with pytest.raises(AudioError, match="implausible sample rate 1 Hz"):
        load_audio(_wav_claiming(tmp_path / "one-hz.wav", 1))
    long = tmp_path / "silence.flac"  # 30 minutes of silence: tiny file, 900 MB once decoded
    with sf.SoundFile(long, "w", 16000, 1, format="FLAC") as f:
        block = np.zeros(16000 * 60, np.float32)
        for _ in range(30):
            f.write(block)
    assert long.stat().st_size < 2_000_000
    t = time.perf_counter()
    with pytest.raises(AudioError, match="longer than 600 s"):
        load_audio(long)
    assert time.perf_counter() - t < 2


def test_predict_refuses_hostile_audio_in_one_line(trained_runs, row, tmp_path):
    proc = _cli("predict", trained_runs, _wav_claiming(tmp_path / "x.wav", 1), "--text", "hello")
    assert proc.returncode == 2 and "implausible sample rate" in proc.stderr and "Traceback" not in proc.stderr
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    proc = _cli("predict", trained_runs, tmp_path / "quiet.wav", "--text", "hello there")
    assert proc.returncode == 2 and "no speech found" in proc.stderr
    proc = _cli("predict", trained_runs / "audio", row["audio"], "--text", "ignored words")
    assert proc.returncode == 0 and "transcript is not used" in proc.stderr


def test_demo_limits_and_json_errors(client, row, tmp_path):
    data = Path(row["audio"]).read_bytes()
    r = client.post("/api/predict", files={"audio": ("a.wav", _wav_claiming(tmp_path / "h.wav", 1).read_bytes())},
                    data={"text": "hi"})
    assert r.status_code == 422 and "implausible sample rate" in r.json()["error"] and "/tmp" not in r.text
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    r = client.post("/api/predict", files={"audio": ("q.wav", (tmp_path / "quiet.wav").read_bytes())},
                    data={"text": "hello"})
    assert r.status_code == 422 and "no speech found" in r.json()["error"]
    r = client.post("/api/predict", files={"audio": ("a.wav", data)}, data={"text": "word " * 5000})
    assert r.status_code == 422 and "too long" in r.json()["error"]
    r = client.post("/api/predict", content=b"x", headers={"content-length": "300000000",
                                                           "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"].startswith("upload larger")
    for method, path, status in (("get", "/nope", 404), ("put", "/api/predict", 405), ("get", "/docs", 404)):
        r = getattr(client, method)(path)
        assert r.status_code == status and set(r.json()) == {"error"}
    r = client.post("/api/predict", files={"wrong": ("a.wav", data)})
    assert r.status_code == 422 and "audio" in r.json()["error"]
    assert client.head("/").status_code == 200 and client.options("/api/predict").status_code == 204
    evil = TestClient(client.app, base_url="http://attacker.example")
    assert evil.get("/healthz").status_code == 421


def test_page_shows_data_as_text_only():
    from importlib import resources

    page = resources.files("mmfer.serve").joinpath("static/index.html").read_text()
    assert "innerHTML" not in page and "textContent" in page


def test_healthz_reports_a_broken_model(trained_runs, tmp_path):
    import shutil

    import torch

    broken = tmp_path / "broken"
    shutil.copytree(trained_runs / "audio", broken)
    for f in broken.glob("fold-*/model.pt"):
        ck = torch.load(f, weights_only=True)
        ck["features"]["acoustic"] = {**ck["features"]["acoustic"], "layers": "last"}  # 512 values, not 7 x 512
        torch.save(ck, f)
    h = TestClient(create_app(broken), base_url=LOCAL).get("/healthz")
    assert h.status_code == 503 and h.json()["status"] == "error" and "audio" in h.json()["problems"]
    ok = TestClient(create_app(trained_runs / "audio"), base_url=LOCAL).get("/healthz")
    assert ok.status_code == 200 and json.loads(ok.text)["status"] == "ok"


def test_serve_port_out_of_range(trained_runs):
    proc = _cli("serve", trained_runs, "--port", "70000")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--port 70000" in proc.stderr


def test_latin1_manifest_and_paths_outside_the_folder(tmp_path):
    from mmfer.errors import CorpusError

    bad = tmp_path / "latin.csv"
    bad.write_bytes("id,text,label,speaker\na,hello,neu,s1\nb,caf\xe9 ol\xe9,hap,s2\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin.csv:3: byte 0xe9 is not UTF-8"):
        read_corpus(bad)
    proc = _cli("corpus", "inspect", bad)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "latin.csv:3" in proc.stderr
    sub = tmp_path / "corpus"
    sub.mkdir()
    m = sub / "m.csv"
    m.write_text("id,audio,label,speaker\na,a.wav,neu,s1\nb,../../x.wav,hap,s2\nc,/etc/passwd,sad,s3\n")
    c = read_corpus(m)
    assert list(c.table["utt_id"]) == ["a", "c"] and c.dropped["bad_row"] == 1
    assert any("leaves the manifest's folder" in p and ":3:" in p for p in c.problems)
    assert any("outside the manifest's folder" in p and "'c'" in p for p in c.problems)
    assert list(read_corpus(m, allow_outside=True).table["utt_id"]) == ["a", "b", "c"]


def test_broken_checkpoints_and_configs_are_one_line_errors(trained_runs, row, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "audio", run)
    f = run / "fold-1" / "model.pt"
    f.write_bytes(f.read_bytes()[:1000])
    proc = _cli("predict", run, row["audio"])
    assert proc.returncode == 2 and "not a readable mmfer checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    f.write_text("not a model")
    assert "not a readable mmfer checkpoint" in _cli("predict", run, row["audio"]).stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden: [1, 2\ntrain: {}\n")
    proc = _cli("cv", tmp_path, "--config", cfg, "--out", tmp_path / "r")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "c.yaml:" in proc.stderr


def test_damaged_store_is_named_and_repaired_by_prepare(few_utterances, tmp_path):
    from mmfer.errors import MmferError
    from mmfer.features.prepare import prepare
    from mmfer.features.store import FeatureStore

    store = tmp_path / "store"
    kw = {"progress": False, "warn": lambda m: None, "workers": 1, "streams": ["acoustic"], "allow_outside": True}
    prepare(few_utterances, store, **kw)
    folder = next(store.glob("acoustic-*"))
    good = (folder / "data.npy").read_bytes()
    (folder / "data.npy").write_bytes(good[: len(good) // 2])
    (folder / ".data.npy.abc.tmp").write_bytes(b"x" * 1000)  # what a kill during the merge leaves
    with pytest.raises(MmferError, match="damaged feature set|rerun `mmfer prepare`"):
        FeatureStore(store)
    res = prepare(few_utterances, store, **kw)
    assert res.reused == [] and (folder / "data.npy").read_bytes() == good  # re-extracted, same bytes
    assert not list(folder.glob(".*.tmp"))
    (store / "store.json").write_text("{broken")
    with pytest.raises(MmferError, match="damaged store"):
        FeatureStore(store)
    (store / "corpus.parquet").unlink()
    proc = _cli("cv", store, "--model", "audio-frames", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_second_prepare_of_the_same_store_is_refused(few_utterances, tmp_path):
    import os

    from mmfer.errors import MmferError
    from mmfer.features.prepare import prepare

    store = tmp_path / "store"
    store.mkdir()
    (store / ".mmfer-prepare.lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(MmferError, match="being written by another mmfer prepare"):
        prepare(few_utterances, store, progress=False, warn=lambda m: None, streams=["acoustic"], allow_outside=True)
    (store / ".mmfer-prepare.lock").write_text("999999999")  # its writer is gone: taken over
    prepare(few_utterances, store, progress=False, warn=lambda m: None, streams=["acoustic"], workers=1,
            allow_outside=True)
    assert not (store / ".mmfer-prepare.lock").exists() and (store / "store.json").is_file()



def test_prepare_whisper_options_reach_the_store(few_utterances, tmp_path):
    """--whisper-pad and --whisper-precision are prepare options: they land in the store's settings; a
    precision mmfer does not know is refused with what to choose (an MmferError: one line, exit 2)."""
    import json

    from typer.testing import CliRunner

    from mmfer.cli import app
    from mmfer.errors import MmferError

    args = ["prepare", str(few_utterances), "--out", str(tmp_path / "store"), "--streams", "pooled",
            "--workers", "1", "--allow-outside"]
    bad = CliRunner().invoke(app, [*args, "--whisper-precision", "int4"])
    assert isinstance(bad.exception, MmferError) and "whisper_precision" in str(bad.exception)
    assert "'float32'" in str(bad.exception) and not (tmp_path / "store").exists()
    res = CliRunner().invoke(app, [*args, "--whisper-precision", "float32", "--whisper-pad", "4"])
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "store").glob("pooled-*")
    settings = json.loads((folder / "meta.json").read_text())["settings"]
    assert settings["precision"] == "float32" and settings["pad_seconds"] == 4.0

def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def test_prepare_workers_die_with_a_killed_parent(sample_corpus, tmp_path):
    import os
    import signal

    code = ("from mmfer.features.prepare import prepare; import sys; "
            "prepare(sys.argv[1], sys.argv[2], progress=False, warn=lambda m: None, workers=2, shard_size=2, "
            "streams=['functionals'])")
    parent = subprocess.Popen([sys.executable, "-c", code, str(sample_corpus), str(tmp_path / "s")])
    children: list[int] = []
    for _ in range(200):  # until the worker processes exist
        time.sleep(0.1)
        out = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
        children = [int(x) for x in out]
        if len(children) >= 2:
            break
    assert len(children) >= 2, "workers did not start"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        alive = [c for c in children if _running(c)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"orphaned workers {alive}"


def test_model_folder_cannot_choose_the_encoder_code(trained_runs, row, tmp_path):
    import shutil

    import torch

    from mmfer.errors import MmferError
    from mmfer.features.lexical import minilm_path
    from mmfer.serve.predictor import Predictor

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "mmmf", run)
    evil = tmp_path / "evil"
    evil.mkdir()
    for f in run.glob("fold-*/model.pt"):
        ck = torch.load(f, weights_only=True)
        for s in ck["features"].values():
            lex = s.get("lexical", s)
            if lex.get("extractor") == "transformer":
                lex.update(name="evil", source=str(evil))
        torch.save(ck, f)
    signal = load_audio(row["audio"])
    with pytest.raises(MmferError, match="pass it yourself with --lexical"):
        Predictor(run).predict(signal, row["text"])
    vouched = Predictor(run, lexical=minilm_path()).predict(signal, row["text"])
    original = Predictor(trained_runs / "mmmf").predict(signal, row["text"])
    assert vouched["probabilities"] == pytest.approx(original["probabilities"], abs=1e-5)
    import mmfer.features.lexical as lexical_module

    assert "trust_remote_code=False" in Path(lexical_module.__file__).read_text()


def test_server_stops_promptly_on_sigterm(trained_runs):
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mmfer", "serve", str(trained_runs / "audio"), "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert json.loads(r.read())["status"] == "ok"
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not start")
        t = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        assert time.perf_counter() - t < 10
    finally:
        if server.poll() is None:
            server.kill()
