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


def test_missing_transcript_without_recognition_falls_back_to_audio_model(row, trained_runs, tmp_path):
    plain = TestClient(create_app(trained_runs, asr="none"), base_url=LOCAL)
    assert plain.get("/healthz").json()["recognition"] is None
    r = _post(plain, row["audio"], "")
    assert r.status_code == 200 and r.json()["model"] == "audio" and r.json()["gate"] is None
    only = tmp_path / "only"
    shutil.copytree(trained_runs / "mmmf", only)
    r = _post(TestClient(create_app(only, asr="none"), base_url=LOCAL), row["audio"], "  ")
    assert r.status_code == 422 and "needs the transcript" in r.json()["error"]


@pytest.mark.asr
def test_missing_transcript_is_recognised_with_word_times(client, row):
    assert client.get("/healthz").json()["recognition"].startswith("whisper-base")
    res = _post(client, row["audio"], "").json()
    assert res["model"] == "mmmf" and res["transcript_source"] == "recognised" and res["transcript"].strip()
    assert any(w["timing"] == "recognised" for w in res["words"])
    assert len(set(res["words"][0]) & {"start", "end"}) == 2 and res["images"]["frame_attention"]
    typed = _post(client, row["audio"], row["text"]).json()
    assert typed["transcript_source"] == "typed" and [w["word"] for w in typed["words"]] == list(row["words"])


def test_long_upload_gives_a_timeline_of_segments(trained_runs, sample_corpus, tmp_path):
    import numpy as np
    import soundfile as sf

    from mmfer.features.audio import load_audio

    t = read_corpus(sample_corpus).table
    parts = []
    for k in range(6):
        parts += [load_audio(t.iloc[k * 5]["audio"]), np.zeros(int(16000 * 1.5), np.float32)]
    sf.write(tmp_path / "long.wav", np.concatenate(parts), 16000)
    assert sf.info(tmp_path / "long.wav").duration > 20  # longer than one utterance: segmented
    client = TestClient(create_app(trained_runs, max_seconds=60, asr="none"), base_url=LOCAL)  # the browser
    r = _post(client, tmp_path / "long.wav", "")  # test below covers recognised segments; this one the cutting
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["timeline"].startswith("data:image/png;base64,") and len(res["segments"]) >= 5
    ok = [s for s in res["segments"] if "error" not in s]
    assert len(ok) == len(res["segments"])
    assert all(s["emotion"] in s["probabilities"] and s["images"]["frame_attention"] for s in ok)
    assert {s["model"] for s in ok} == {"audio"} and all(s["transcript_source"] == "none" for s in ok)
    assert [s["start"] for s in res["segments"]] == sorted(s["start"] for s in res["segments"])


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
def browser_page(trained_runs, sample_corpus, tmp_path_factory):
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
            # the fake microphone plays a sample utterance (real speech for the recogniser), looped
            voice = read_corpus(sample_corpus).table.iloc[0]["audio"]
            browser = p.chromium.launch(executable_path=chromium,
                                        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={voice}"])

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
    assert page.inner_text("#norm").startswith("Acoustic normalisation: training statistics")  # a voice alone
    assert page.eval_on_selector("#word-att", "img => img.naturalWidth") > 100
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.asr
def test_real_browser_recording_is_transcribed(browser_page):
    """Record → the transcript box fills in from recognition → emotion shown; an edit re-runs."""
    expect = pytest.importorskip("playwright.sync_api").expect
    page = browser_page()
    page.click("#rec")
    expect(page.locator("#recstate")).to_contain_text("recording")  # no eval: the page's CSP forbids it
    page.wait_for_timeout(3500)
    page.click("#rec")
    expect(page.locator("#recstate")).to_contain_text("recorded", timeout=20_000)
    page.click("#go")
    _assert_result_panel(page)  # the page's own WAV encoding was accepted by the server
    heard = page.input_value("#text")
    assert len(heard.split()) >= 2 and "recognised" in page.inner_text("#textnote")
    page.evaluate("document.getElementById('result').style.display = 'none'")
    page.fill("#text", "what a lovely surprise")
    page.dispatch_event("#text", "change")  # editing the transcript runs the prediction again
    _assert_result_panel(page)
    assert page.input_value("#text") == "what a lovely surprise" and page.inner_text("#textnote") == ""


@pytest.mark.browser
@pytest.mark.asr
def test_real_browser_long_upload_shows_clickable_timeline(browser_page, sample_corpus, tmp_path):
    import numpy as np
    import soundfile as sf

    from mmfer.features.audio import load_audio

    t = read_corpus(sample_corpus).table
    parts = []
    for k in range(6):
        parts += [load_audio(t.iloc[k * 5 + 1]["audio"]), np.zeros(int(16000 * 1.5), np.float32)]
    sf.write(tmp_path / "long.wav", np.concatenate(parts), 16000)
    page = browser_page()
    page.set_input_files("#file", str(tmp_path / "long.wav"))
    page.click("#go")
    page.wait_for_selector("#timelinebox", state="visible", timeout=120_000)
    assert page.eval_on_selector("#timeline", "img => img.complete ? img.naturalWidth : 0") > 600
    buttons = page.query_selector_all("#segments button")
    assert len(buttons) >= 4
    _assert_result_panel(page)
    for k in (2, 0):  # each click shows that segment's own result
        buttons[k].click()
        assert "on" in (buttons[k].get_attribute("class") or "")
        assert f" {page.inner_text('#emotion').strip().upper()} " in buttons[k].inner_text()
    page.screenshot(path=str(tmp_path / "timeline-demo.png"), full_page=True)


@pytest.mark.browser
def test_real_browser_shows_server_errors(browser_page, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really audio")
    page = browser_page()
    page.set_input_files("#file", str(bad))
    page.fill("#text", "hello")
    page.click("#go")
    expect(page.locator("#error")).not_to_be_empty()
    assert "unreadable audio" in page.inner_text("#error") and not page.is_visible("#result")
