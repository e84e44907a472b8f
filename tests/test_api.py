"""The Python API: the README's example runs as written; the CLI's single-file path is the API's."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import TRAINED_FOLDS

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text()
    block = text.split("<!-- python example (tests/test_api.py runs this block as it is) -->")[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_readme_python_example_runs_as_written(trained_runs, sample_corpus, tmp_path, capsys):
    quick = tmp_path / "mmfer-quickstart"
    quick.mkdir()
    (quick / "runs").symlink_to(trained_runs)
    (quick / "corpus").symlink_to(sample_corpus)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(_example(), str(README), "exec"), {})
    finally:
        os.chdir(here)
    out = capsys.readouterr().out.splitlines()
    emotion, normalisation = out[0].split()[0], out[0].split(maxsplit=2)[2]
    assert emotion in ("ang", "hap", "neu", "sad") and normalisation.startswith("training statistics")
    share = out[1].removeprefix("acoustic share: ")
    if f"experts in {len(TRAINED_FOLDS)} of {len(TRAINED_FOLDS)}" in normalisation:  # no fold's network decided
        assert share == "None"
    else:
        assert 0 < float(share) < 1  # mmmf: a gate
    assert out[2].startswith("most attended: ") and len(out) >= 4


def test_prediction_from_a_path_an_array_and_a_resampled_array(trained_runs, sample_corpus):
    import soundfile as sf
    from scipy.signal import resample_poly

    import mmfer
    from mmfer.corpora import read_corpus

    model = mmfer.load(trained_runs / "audio", asr="none")
    row = read_corpus(sample_corpus).table.iloc[0]
    p = model.predict(row["audio"])
    x, sr = sf.read(row["audio"], dtype="float32")
    assert model.predict(x, sample_rate=sr).probabilities == pytest.approx(p.probabilities, abs=1e-5)
    stereo = np.stack([resample_poly(x, 3, 1)] * 2, axis=1)  # 48 kHz, two channels
    q = model.predict(stereo, sample_rate=3 * sr)
    assert q.emotion in model.classes and abs(sum(q.probabilities.values()) - 1) < 1e-5
    assert p.frames["seconds_per_step"] == pytest.approx(0.16) and p.gate is None and p.transcript_source is None
    with pytest.raises(mmfer.MmferError, match="needs its sample_rate"):
        model.predict(x)
    with pytest.raises(mmfer.MmferError, match="silent"):
        model.predict(np.zeros(16000, np.float32), sample_rate=16000)


def test_summary_is_typed(trained_runs):
    import mmfer

    s = mmfer.Summary.read(trained_runs / "mmmf")
    assert s.model == "mmmf" and [f["fold"] for f in s.folds] == ["Ses01", "Ses02"]
    assert 0 <= s.ua["mean"] <= 1 and "mmmf" in s.table()
