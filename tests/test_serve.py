from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mmfer.corpora import read_corpus
from mmfer.serve.app import create_app

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def row(sample_corpus):
    return read_corpus(sample_corpus).table.iloc[3]


@pytest.fixture(scope="module")
def client(trained_runs):
    return TestClient(create_app(trained_runs, max_bytes=2_000_000, max_seconds=20), base_url=LOCAL)


def _post(client, path: str, text: str, name: str | None = None, data: bytes | None = None):
    data = Path(path).read_bytes() if data is None else data
    return client.post("/api/predict", files={"audio": (name or Path(path).name, data, "audio/wav")},
                       data={"text": text})


def test_healthz_and_page(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"] == "mmmf" and h["audio_only_available"] is True
    page = client.get("/")
    assert page.status_code == 200 and 'id="result"' in page.text and "api/predict" in page.text


def test_good_input(client, row):
    r = _post(client, row["audio"], row["text"])
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["emotion"] in res["probabilities"] and res["model"] == "mmmf"
    assert [w["word"] for w in res["words"]] == list(row["words"])
    for key in ("frame_attention", "word_attention"):
        assert res["images"][key].startswith("data:image/png;base64,") and len(res["images"][key]) > 5000


def test_missing_transcript_falls_back_to_audio_model(client, row, trained_runs, tmp_path):
    r = _post(client, row["audio"], "")
    assert r.status_code == 200 and r.json()["model"] == "audio" and r.json()["gate"] is None
    only = tmp_path / "only"
    shutil.copytree(trained_runs / "mmmf", only)
    r = _post(TestClient(create_app(only), base_url=LOCAL), row["audio"], "  ")
    assert r.status_code == 422 and "needs the transcript" in r.json()["error"]


@pytest.mark.parametrize("name, data, status, message", [
    ("a.wav", b"", 400, "empty upload"),
    ("a.wav", b"RIFF\x00\x00junk that is not audio", 422, "cannot use this audio: unreadable audio"),
    ("a.mp4", b"whatever", 415, "unsupported audio type '.mp4'"),
    ("a.wav", b"0" * 2_000_001, 413, "upload larger than 2.0 MB"),
])
def test_bad_uploads(client, name, data, status, message):
    r = _post(client, "", "hello there", name=name, data=data)
    assert r.status_code == status and r.json()["error"].startswith(message)


def test_too_long_audio(trained_runs, row, tmp_path):
    r = _post(TestClient(create_app(trained_runs, max_seconds=0.5), base_url=LOCAL), row["audio"], row["text"])
    assert r.status_code == 413 and "longer than" in r.json()["error"]


def test_concurrent_requests_and_nothing_written(client, row, trained_runs):
    before = sorted(str(p) for p in trained_runs.rglob("*"))
    cwd_before = sorted(os.listdir("."))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _post(client, row["audio"], row["text"]), range(6)))
    assert all(r.status_code == 200 for r in results)
    probs = [r.json()["probabilities"] for r in results]
    assert all(p == pytest.approx(probs[0]) for p in probs)
    assert sorted(str(p) for p in trained_runs.rglob("*")) == before and sorted(os.listdir(".")) == cwd_before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # a fake microphone (a beep) and no permission prompt, for the recording path
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser_page(trained_runs):
    """Headless Debian Chromium (driven by Playwright) on the demo served on a loopback port."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian chromium is not installed (make test installs it when it can)")
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(trained_runs), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)

            def new_page():
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                return page

            yield new_page
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _assert_result_panel(page) -> None:
    page.wait_for_selector("#result", state="visible", timeout=60_000)
    assert page.inner_text("#emotion").strip().lower() in {"ang", "hap", "neu", "sad"}
    assert page.eval_on_selector("#frame-att", "img => img.complete ? img.naturalWidth : 0") > 300
    assert page.inner_text("#error") == ""


@pytest.mark.browser
def test_real_browser_upload(browser_page, row, tmp_path):
    page = browser_page()
    page.set_input_files("#file", row["audio"])
    page.fill("#text", row["text"])
    page.click("#go")
    _assert_result_panel(page)
    assert "audio" in page.inner_text("#gate")
    assert page.eval_on_selector("#word-att", "img => img.naturalWidth") > 100
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)


@pytest.mark.browser
def test_real_browser_recording(browser_page):
    page = browser_page()
    page.click("#rec")
    page.wait_for_function("document.getElementById('recstate').textContent.includes('recording')")
    page.wait_for_timeout(1500)
    page.click("#rec")
    page.wait_for_function("document.getElementById('recstate').textContent.includes('recorded')", timeout=20_000)
    page.fill("#text", "what a lovely surprise")
    page.click("#go")
    _assert_result_panel(page)  # the page's own WAV encoding was accepted by the server


@pytest.mark.browser
def test_real_browser_shows_server_errors(browser_page, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really audio")
    page = browser_page()
    page.set_input_files("#file", str(bad))
    page.fill("#text", "hello")
    page.click("#go")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "unreadable audio" in page.inner_text("#error") and not page.is_visible("#result")
