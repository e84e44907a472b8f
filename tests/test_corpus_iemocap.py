from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmfer.cli import app
from mmfer.corpora import load, read_corpus, save
from mmfer.corpora.iemocap import parse_wdseg, read_iemocap, speaker_of
from mmfer.errors import CorpusError


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_reads_release_with_quirks(iemocap_root: Path):
    before = _snapshot(iemocap_root)
    c = read_iemocap(iemocap_root)
    t = c.table.set_index("utt_id")
    assert sorted(t.index) == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M000", "Ses01F_impro01_M002",
        "Ses02M_script01_1_F000", "Ses02M_script01_1_M000",
    ]
    # 9 well-formed turns parsed; the one malformed evaluation line is a problem, not an utterance
    assert c.parsed == 9
    assert dict(c.dropped) == {"label:xxx": 1, "label:fru": 1, "noise_only": 1}
    assert t.loc["Ses01F_impro01_F001", "label"] == "hap" and t.loc["Ses01F_impro01_F001", "label_raw"] == "exc"
    # laughter-only utterance kept, as a token
    assert t.loc["Ses01F_impro01_M002", "text"] == "[LAUGHTER]"
    assert list(t.loc["Ses01F_impro01_M002", "words"]) == ["[laughter]"]
    # breathing removed from cleaned text, raw kept
    assert t.loc["Ses01F_impro01_M000", "text"] == "Get out of my office ."
    assert "[BREATHING]" in t.loc["Ses01F_impro01_M000", "transcript"]
    # speaker from the utterance's own letter, not the dialog's
    assert t.loc["Ses02M_script01_1_F000", "speaker"] == "Ses02F"
    assert t.loc["Ses01F_impro01_M000", "speaker"] == "Ses01M"
    assert t.loc["Ses02M_script01_1_F000", "method"] == "script"
    assert t.loc["Ses01F_impro01_F000", "method"] == "impro"
    assert t.loc["Ses01F_impro01_M000", "session"] == "Ses01"
    # votes: several categories per evaluator line, names mapped to codes
    assert list(t.loc["Ses01F_impro01_F000", "votes"]) == ["neu", "neu", "fru"]
    assert (t.loc["Ses01F_impro01_M000", ["valence", "activation", "dominance"]].tolist()
            == [1.5, 4.0, 4.0])
    assert t.loc["Ses01F_impro01_M000", "start"] == 3.5 and t.loc["Ses01F_impro01_M000", "end"] == 5.5
    assert t.loc["Ses01F_impro01_F000", "audio"].endswith(
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert _snapshot(iemocap_root) == before  # nothing written under the corpus


def test_word_times_from_wdseg(iemocap_root: Path):
    t = read_iemocap(iemocap_root).table.set_index("utt_id")
    row = t.loc["Ses01F_impro01_F000"]
    assert list(row["words"]) == ["well", "i", "just", "don't", "know"]  # markers and (2) stripped
    assert list(row["word_start"]) == [0.10, 0.41, 0.51, 0.81, 1.11]
    assert list(row["word_end"]) == [0.31, 0.51, 0.81, 1.11, 1.51]
    # noise other than laughter is not a word
    assert list(t.loc["Ses01F_impro01_M000", "words"]) == ["get", "out", "of", "my", "office"]


def test_missing_and_broken_alignment_keep_utterance(iemocap_root: Path):
    c = read_iemocap(iemocap_root)
    t = c.table.set_index("utt_id")
    # F001: no .wdseg at all; session-2 M000: malformed .wdseg -> words from the transcript, no times
    assert t.loc["Ses01F_impro01_F001", "word_start"] is None
    assert list(t.loc["Ses01F_impro01_F001", "words"]) == ["we", "won", "we", "actually", "won", "!"]  # ! is a token
    assert t.loc["Ses02M_script01_1_M000", "word_start"] is None
    assert c.missing_alignment == 2
    wd = [p for p in c.problems if p.endswith("(utterance kept without word times)")]
    assert len(wd) == 1 and "Ses02M_script01_1_M000.wdseg:2: malformed alignment row" in wd[0]
    ev = [p for p in c.problems if "EmoEvaluation" in p]
    assert len(ev) == 1 and ev[0].split("EmoEvaluation/")[1].startswith("Ses02M_script01_1.txt:12: malformed")


def test_strict_stops_at_first_malformed_line(iemocap_root: Path):
    with pytest.raises(CorpusError) as info:
        read_iemocap(iemocap_root, strict=True)
    assert info.value.path.endswith("Ses02M_script01_1.txt") and info.value.line == 12


def test_parse_wdseg_errors_name_the_line(tmp_path: Path):
    p = tmp_path / "x.wdseg"
    p.write_text(" SFrm  EFrm    SegAScr Word\n    0     9   -100 <s>\n   20    10   -100 HI\n")
    with pytest.raises(CorpusError, match=r"x\.wdseg:3: alignment row ends \(frame 10\) before"):
        parse_wdseg(p)


def test_speaker_rule():
    assert speaker_of("Ses01F_impro01_M003") == ("Ses01M", "M")
    assert speaker_of("Ses05M_script02_2_F014") == ("Ses05F", "F")


@pytest.mark.parametrize("policy, labels, dropped", [
    ("4class", {"ang": 1, "hap": 2, "neu": 2, "sad": 1}, {"label:fru": 1, "label:xxx": 1}),
    ("6class", {"ang": 1, "exc": 1, "fru": 1, "hap": 1, "neu": 2, "sad": 1}, {"label:xxx": 1}),
    ("all", {"ang": 1, "exc": 1, "fru": 1, "hap": 1, "neu": 2, "sad": 1}, {"label:xxx": 1}),
    ("ang=negative,fru=negative,hap=positive,exc=positive",
     {"negative": 2, "positive": 2}, {"label:neu": 2, "label:sad": 1, "label:xxx": 1}),
])
def test_label_policies(iemocap_root: Path, policy, labels, dropped):
    c = read_corpus(iemocap_root, labels=policy)
    assert c.table["label"].value_counts().to_dict() == labels
    assert {k: v for k, v in c.dropped.items() if k != "noise_only"} == dropped


def test_parquet_roundtrip(iemocap_root: Path, tmp_path: Path):
    c = read_iemocap(iemocap_root)
    save(c, tmp_path / "corpus.parquet")
    back = load(tmp_path / "corpus.parquet")
    assert back.modalities == ("audio", "text") and back.dropped == c.dropped
    a = c.table.set_index("utt_id")
    b = back.table.set_index("utt_id")
    assert list(b.loc["Ses01F_impro01_F000", "word_end"]) == list(a.loc["Ses01F_impro01_F000", "word_end"])
    assert b.loc["Ses01F_impro01_F001", "word_start"] is None
    assert math.isclose(b.loc["Ses02M_script01_1_F000", "valence"], 1.5)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_inspect_json_shape(iemocap_root: Path):
    res = CliRunner().invoke(app, ["corpus", "inspect", str(iemocap_root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out == {
        "corpus": "iemocap", "utterances": 9, "kept": 6,
        "labels": {"ang": 1, "hap": 2, "neu": 2, "sad": 1},
        "sessions": {"Ses01": 4, "Ses02": 2},
        "speakers": {"Ses01F": 2, "Ses01M": 2, "Ses02F": 1, "Ses02M": 1},
        "dropped": {"label:fru": 1, "label:xxx": 1, "noise_only": 1},
        "missing_alignment": 2,
    }


def test_inspect_table_is_readable(iemocap_root: Path):
    res = CliRunner().invoke(app, ["corpus", "inspect", str(iemocap_root)])
    assert res.exit_code == 0
    assert "6 kept" in res.stdout and "Ses02F" in res.stdout and "noise_only" in res.stdout


def test_missing_folder_is_one_line_error(iemocap_root: Path, capfd):
    import shutil
    import subprocess
    import sys

    shutil.rmtree(iemocap_root / "Session2" / "dialog" / "transcriptions")
    proc = subprocess.run([sys.executable, "-m", "mmfer", "corpus", "inspect", str(iemocap_root)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "Session2/dialog/transcriptions: missing folder" in proc.stderr


def test_not_a_corpus(tmp_path: Path):
    with pytest.raises(CorpusError, match="cannot tell the corpus type"):
        read_corpus(tmp_path)
