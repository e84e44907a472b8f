from __future__ import annotations

import builtins
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmfer.corpora import read_corpus
from mmfer.corpora.sample import generate
from mmfer.errors import MmferError

PER_SPEAKER = 8  # 5 main + 1 exc + 1 fru + 1 xxx per speaker (the conftest sample_corpus)


@pytest.fixture()
def sample(sample_corpus) -> Path:
    return sample_corpus


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_roundtrips_through_iemocap_reader(sample: Path):
    c = read_corpus(sample)
    assert c.name == "iemocap" and c.parsed == 10 * PER_SPEAKER + 10  # + one breathing turn per dialog
    assert c.dropped["noise_only"] == 10 and c.dropped["label:xxx"] == 10 and c.dropped["label:fru"] == 10
    t = c.table
    assert len(t) == 10 * (PER_SPEAKER - 2)
    assert set(t["label"]) == {"ang", "hap", "neu", "sad"}
    assert (t["label_raw"] == "exc").sum() == 10
    assert sorted(t["speaker"].unique()) == [f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"]
    assert t.groupby("speaker").size().eq(PER_SPEAKER - 2).all()
    assert c.missing_alignment == 0
    # male speakers appear inside F-named dialogs and vice versa, as in the release
    assert ((t["speaker"].str[-1] == "M") & (t["dialog"].str[5] == "F")).any()
    assert all(Path(a).is_file() for a in t["audio"])


def test_word_times_inside_audio_and_ordered(sample: Path):
    t = read_corpus(sample).table
    for _, row in t.iterrows():
        info = sf.info(row["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        starts, ends = np.asarray(row["word_start"]), np.asarray(row["word_end"])
        assert list(row["words"]) == [w for w in row["words"] if w]  # non-empty words
        assert len(starts) == len(row["words"]) == len(row["text"].rstrip(".").replace(",", "").split())
        assert (starts < ends).all() and (np.diff(starts) > 0).all() and (starts[1:] >= ends[:-1] - 1e-9).all()
        assert starts[0] >= 0 and ends[-1] <= info.duration + 0.011


def test_prosody_differs_by_emotion(sample: Path):
    import opensmile

    t = read_corpus(sample).table
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    f0, loud = {}, {}
    for lab in ("ang", "hap", "sad", "neu"):
        # compare within the voice-cued utterances of one gender so speaker pitch does not dominate
        rows = t[(t["label"] == lab) & (t["gender"] == "F")]
        feats = [smile.process_file(a).iloc[0] for a in rows["audio"]]
        f0[lab] = np.mean([f["F0semitoneFrom27.5Hz_sma3nz_amean"] for f in feats])
        loud[lab] = np.mean([f["loudness_sma3_amean"] for f in feats])
    assert f0["ang"] > f0["sad"] and f0["hap"] > f0["sad"]
    assert loud["ang"] > loud["sad"]


def test_same_seed_is_byte_identical(tmp_path: Path, sample: Path):
    again = generate(tmp_path / "again", per_speaker=PER_SPEAKER, seed=3, progress=False, workers=1)
    assert _digest(again) == _digest(sample)
    other = generate(tmp_path / "other", per_speaker=PER_SPEAKER, seed=4, progress=False)
    assert _digest(other) != _digest(sample)


def test_existing_folder_reused_or_refused(tmp_path: Path, sample: Path):
    before = _digest(sample)
    assert generate(sample, per_speaker=PER_SPEAKER, seed=3, progress=False) == sample  # no-op
    assert _digest(sample) == before
    with pytest.raises(MmferError, match="pass --force"):
        generate(sample, per_speaker=PER_SPEAKER, seed=9, progress=False)


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch):
    from mmfer.corpora.sample.espeak import Espeak

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "espeakng_loader":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(Espeak, "_instance", None)
    with pytest.raises(MmferError, match=r"pip install 'mmfer\[sample\]'"):
        generate(tmp_path / "x", per_speaker=PER_SPEAKER, progress=False)
    assert not (tmp_path / "x").exists()


def test_inspect_shows_expected_counts(sample: Path):
    import json

    from typer.testing import CliRunner

    from mmfer.cli import app

    out = json.loads(CliRunner().invoke(app, ["corpus", "inspect", str(sample), "--json"]).stdout)
    # per speaker: 5 main labels cycling ang, hap, neu, sad, ang + one exc (-> hap), fru, xxx
    assert out["labels"] == {"ang": 20, "hap": 20, "neu": 10, "sad": 10}
    assert out["sessions"] == {f"Ses0{s}": 12 for s in range(1, 6)}
    assert out["speakers"] == {f"Ses0{s}{g}": 6 for s in range(1, 6) for g in "FM"}
    assert out["dropped"] == {"label:fru": 10, "label:xxx": 10, "noise_only": 10}
    assert out["utterances"] == 90 and out["kept"] == 60 and out["missing_alignment"] == 0
