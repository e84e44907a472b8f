from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TRAINED_FOLDS
from mmfer.corpora import read_corpus
from mmfer.features.audio import load_audio
from mmfer.runs import export
from mmfer.serve.predictor import Predictor, top_spans


def _utt(sample_corpus: Path):
    t = read_corpus(sample_corpus).table
    return t.iloc[0]


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfer", *map(str, args)], capture_output=True, text=True)


def test_predict_json_from_runs_folder(trained_runs, sample_corpus):
    row = _utt(sample_corpus)
    proc = _cli("predict", trained_runs, row["audio"], "--text", row["text"], "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["model"] == "mmmf" and res["folds"] == len(TRAINED_FOLDS)
    assert res["emotion"] in {"ang", "hap", "neu", "sad"}
    assert sum(res["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert res["emotion"] == max(res["probabilities"], key=res["probabilities"].get)
    if "closed-form experts in 2 of 2" in res["normalisation"]:  # no fold's network set the label: no gate
        assert res["gate"] is None and res["modality_weights"] is None
    else:
        assert 0 < res["gate"] < 1 and res["modality_weights"]["text"] == pytest.approx(1 - res["gate"])
    assert [w["word"] for w in res["words"]] == list(row["words"])
    assert sum(w["attention"] for w in res["words"]) == pytest.approx(1, abs=1e-4)
    assert sum(res["frames"]["attention"]) == pytest.approx(1, abs=1e-4)
    dur = len(load_audio(row["audio"])) / 16000
    step = res["frames"]["seconds_per_step"]
    assert res["frames"]["offset_seconds"] == 0  # the default encodes every sample (features.whisper_trim 0)
    assert abs(len(res["frames"]["attention"]) * step - dur) <= step  # the last step may be part-filled
    assert len(res["top_spans"]) == 3 and all(0 <= s["start"] < s["end"] <= dur + 0.05 for s in res["top_spans"])
    # frames that start later (trimmed quiet): the spans are placed from the signal's start
    late = top_spans(np.array(res["frames"]["attention"]), step, 3, offset=0.5)
    assert [x - 0.5 for s in late for x in (s["start"], s["end"])] == pytest.approx(
        [x for s in res["top_spans"] for x in (s["start"], s["end"])], abs=1e-3)


def test_predict_without_text_uses_audio_model_or_says_why(trained_runs, sample_corpus):
    row = _utt(sample_corpus)
    proc = _cli("predict", trained_runs, row["audio"], "--asr", "none")
    assert proc.returncode == 0 and "model audio" in proc.stdout and "modality gate" not in proc.stdout
    proc = _cli("predict", trained_runs / "mmmf", row["audio"], "--asr", "none")
    assert proc.returncode == 2 and "needs the transcript" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_says_when_per_speaker_statistics_are_missing(trained_runs, sample_corpus, tmp_path):
    """One utterance, a model whose folds chose per-speaker statistics, no --speaker-audio: a note says what
    stands in; a model of training statistics, or --speaker-audio, gets none."""
    import shutil

    import torch

    row = _utt(sample_corpus)
    others = read_corpus(sample_corpus).table
    voice = others[others["speaker"] == row["speaker"]]["audio"].tolist()[1:11]
    for mode in ("speaker", "corpus"):
        run = shutil.copytree(trained_runs / "audio", tmp_path / mode)
        for f in run.glob("fold-*/*.pt"):
            ckpt = torch.load(f, weights_only=True)
            ckpt["normalise"] = {**ckpt.get("normalise", {}), "mode": mode, "speaker_min_utterances": 10}
            torch.save(ckpt, f)
        proc = _cli("predict", run, row["audio"], "--asr", "none")
        assert proc.returncode == 0, proc.stderr
        assert ("without --speaker-audio (at least 10 recordings" in proc.stderr) == (mode == "speaker")
    with_voice = _cli("predict", tmp_path / "speaker", row["audio"], "--asr", "none",
                      *[a for v in voice for a in ("--speaker-audio", v)])
    assert with_voice.returncode == 0 and "--speaker-audio" not in with_voice.stderr
    bad = _cli("predict", tmp_path / "speaker", row["audio"], "--whisper-precision", "fast")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --whisper-precision 'fast': choose auto or stored"


def test_a_voice_without_statistics_gets_the_folds_experts(trained_runs, sample_corpus, tmp_path):
    """Folds on per-speaker statistics whose validation preferred their training-statistics experts: one
    utterance of a voice without statistics gets those experts' probabilities (the attention shown is still
    the network's, no gate); with the voice's statistics, or where validation preferred the network, the
    network answers."""
    import shutil

    import numpy as np
    import torch

    row = _utt(sample_corpus)
    others = read_corpus(sample_corpus).table
    voice = [load_audio(a) for a in others[others["speaker"] == row["speaker"]]["audio"].tolist()[1:4]]
    run = shutil.copytree(trained_runs / "audio", tmp_path / "run")
    gen = torch.Generator().manual_seed(0)
    for f in sorted(run.glob("fold-*/*.pt")):
        ckpt = torch.load(f, weights_only=True)
        ckpt["normalise"] = {"mode": "speaker", "speaker_min_utterances": 3}
        experts = {k: {"coef": torch.randn(4, ckpt["dims"][k], generator=gen) * 0.05,
                       "icpt": torch.randn(4, generator=gen), "weight": w}
                   for k, w in (("functionals", 0.3), ("pooled", 0.7))}
        ckpt["single_utterance"] = {"uses": "experts", "network_val": 0.5, "experts_val": 0.6, "experts": experts}
        torch.save(ckpt, f)
    pred = Predictor(run)
    signal = load_audio(row["audio"])
    raw = pred.audio_features(signal)
    expected = []
    for ckpt in pred.ckpts:
        logits = 0
        for k, e in ckpt["single_utterance"]["experts"].items():
            n = ckpt["norms"][k]
            x = (raw[k][0] - np.asarray(n["mean"])) / np.asarray(n["std"])
            logits = logits + e["weight"] * (e["coef"].double().numpy() @ x + e["icpt"].double().numpy())
        expected.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    res = pred.predict(signal)
    assert list(res["probabilities"].values()) == pytest.approx(list(np.mean(expected, axis=0)), abs=1e-5)
    assert "frames" in res and res["gate"] is None
    assert res["normalisation"].endswith(f"(closed-form experts in {len(TRAINED_FOLDS)} of {len(TRAINED_FOLDS)} "
                                         "fold model(s): no statistics of this voice; the attention shown is "
                                         "the network's)")
    own = pred.predict(signal, speaker=pred.speaker_statistics(voice))
    assert own["normalisation"] == "speaker's own statistics" and "frames" in own
    assert own["probabilities"] != res["probabilities"]
    for f in sorted(run.glob("fold-*/*.pt"))[:1]:  # the first fold's validation preferred its network
        ckpt = torch.load(f, weights_only=True)
        ckpt["single_utterance"]["uses"] = "network"
        torch.save(ckpt, f)
    mixed = Predictor(run).predict(signal)
    assert f"experts in {len(TRAINED_FOLDS) - 1} of" in mixed["normalisation"]
    assert mixed["probabilities"] != res["probabilities"]


@pytest.mark.asr
def test_predict_without_text_recognises_it(trained_runs, sample_corpus):
    row = _utt(sample_corpus)
    proc = _cli("predict", trained_runs, row["audio"], "--language", "en", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["model"] == "mmmf" and res["transcript_source"] == "recognised" and res["transcript"].strip()
    assert res["words"] and any(w["timing"] in ("recognised", "substituted") for w in res["words"])


def test_predict_resamples_any_rate(trained_runs, sample_corpus, tmp_path):
    """A 44.1 kHz stereo copy must look like the same utterance to the model's input, and unlike another one."""
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    t = read_corpus(sample_corpus).table
    x = load_audio(t.iloc[0]["audio"])
    stereo44 = resample_poly(x, 441, 160)
    sf.write(tmp_path / "a.flac", np.stack([stereo44, stereo44], 1), 44100)
    p = Predictor(trained_runs / "audio")
    norm = p.norms[0]["acoustic"]

    def frames(signal):
        return norm(p.extractor("acoustic").extract(signal))

    a, b, other = frames(x), frames(load_audio(tmp_path / "a.flac")), frames(load_audio(t.iloc[5]["audio"]))
    assert abs(len(a) - len(b)) <= 1
    n = min(len(a), len(b), len(other))
    same, different = np.abs(a[:n] - b[:n]).mean(), np.abs(a[:n] - other[:n]).mean()
    assert same < 0.25 * different, (same, different)
    pa, pb = p.predict(x)["probabilities"], p.predict(load_audio(tmp_path / "a.flac"))["probabilities"]
    assert max(abs(pa[c] - pb[c]) for c in pa) < 0.1


def test_export_refuses_to_delete_what_it_did_not_write(trained_runs, tmp_path):
    import shutil

    from mmfer.errors import MmferError

    run = tmp_path / "run"
    shutil.copytree(trained_runs / "audio", run)
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(MmferError, match="not an mmfer export"):
        export(run, precious)
    assert (precious / "thesis.tex").read_text() == "keep me"
    with pytest.raises(MmferError, match="inside the run"):
        export(run, run)
    with pytest.raises(MmferError, match="inside the run"):
        export(run, run / "fold-1")
    assert sorted(p.name for p in run.glob("fold-*/model.pt")) and (run / "summary.json").is_file()
    sibling = tmp_path / "model.partial"
    sibling.mkdir()
    (sibling / "x").write_text("not mmfer's")
    out = export(run, tmp_path / "model")
    assert (sibling / "x").is_file()  # a look-alike temp name is never deleted
    with pytest.raises(MmferError, match="--force"):
        export(run, out)
    assert export(run, out, force=True) == out
    assert len(list((out / "models").glob("fold-*.pt"))) == len(TRAINED_FOLDS)
    proc = _cli("export", run, "--out", precious)
    assert proc.returncode == 2 and "not an mmfer export" in proc.stderr and (precious / "thesis.tex").is_file()


def test_export_is_self_contained_and_equivalent(trained_runs, sample_corpus, tmp_path):
    import shutil

    row = _utt(sample_corpus)
    run = tmp_path / "run"
    shutil.copytree(trained_runs / "mmmf", run)
    out = export(run, tmp_path / "model")
    shutil.rmtree(run)  # the export must not need the run any more
    want = [f"fold-{i}.pt" for i in range(1, len(TRAINED_FOLDS) + 1)]
    assert sorted(p.name for p in (out / "models").iterdir()) == want
    exported = Predictor(out).predict(load_audio(row["audio"]), row["text"])
    original = Predictor(trained_runs / "mmmf").predict(load_audio(row["audio"]), row["text"])
    assert exported["probabilities"] == pytest.approx(original["probabilities"])
    one = Predictor(out, fold=2)
    assert len(one.models) == 1
