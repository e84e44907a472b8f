from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmfer.cli import app
from mmfer.corpora import read_corpus
from mmfer.corpora.labels import parse_policy
from mmfer.errors import CorpusError, MmferError


def _write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_manifest_aliases_relative_audio_and_bad_rows(tmp_path: Path):
    p = _write(tmp_path, (
        "Utterance,Path,Transcript,Emotion,Speaker,Sex\n"
        "u1,wav/u1.wav,I am so angry,angry,s1,female\n"
        "u2,wav/u2.wav,What a lovely day,happy,s2,M\n"
        "u3,wav/u3.wav,,happy,s2,M\n"                      # empty text -> bad row, line 4
        "u1,wav/u1b.wav,dup,angry,s1,F\n"                  # duplicate id, line 5
        "u4,wav/u4.wav,[BREATHING],calm,s3,F\n"            # noise only
        "u5,wav/u5.wav,fine then,calm,s3,F,extra\n"        # too many fields, line 7
        "u6,wav/u6.wav,see you,calm,s3,F\n"
    ))
    c = read_corpus(p)
    assert c.name == "manifest" and c.modalities == ("audio", "text")
    assert c.policy == "all"  # labels are not IEMOCAP codes
    t = c.table.set_index("utt_id")
    assert list(t.index) == ["u1", "u2", "u6"]
    assert t.loc["u1", "audio"] == str((tmp_path / "wav" / "u1.wav").resolve())
    assert t.loc["u1", "gender"] == "F" and t.loc["u2", "gender"] == "M"
    assert list(t.loc["u2", "words"]) == ["what", "a", "lovely", "day"]
    assert t.loc["u2", "session"] == ""
    assert dict(c.dropped) == {"bad_row": 3, "noise_only": 1}
    assert c.parsed == 7
    lines = [pr.split("m.csv:")[1] for pr in c.problems]
    assert lines == ["4: empty text", "5: duplicate id 'u1'", "7: 7 fields where the header has 6"]


def test_manifest_text_only_and_audio_only(tmp_path: Path):
    text_only = read_corpus(_write(tmp_path, "id,text,label,speaker\na,hello there,neu,s1\n", "t.csv"))
    assert text_only.modalities == ("text",) and text_only.policy == "4class"
    audio_only = read_corpus(_write(tmp_path, "id,audio,label,speaker\na,a.wav,ang,s1\n", "a.csv"))
    assert audio_only.modalities == ("audio",)
    assert audio_only.table.loc[0, "words"].tolist() == []
    with pytest.raises(MmferError, match="needs the text modality.*has only audio"):
        audio_only.require(("audio", "text"), "model 'mmmf'")


def test_manifest_header_errors(tmp_path: Path):
    with pytest.raises(CorpusError, match=r"h\.csv:1: manifest header lacks required column\(s\) \['speaker'\]"):
        read_corpus(_write(tmp_path, "id,text,label\n", "h.csv"))
    with pytest.raises(CorpusError, match="needs an 'audio' or a 'text' column"):
        read_corpus(_write(tmp_path, "id,label,speaker\n", "n.csv"))


def test_custom_mapping_policy_counts_drops(tmp_path: Path):
    p = _write(tmp_path, "id,text,label,speaker\na,x y,angry,s1\nb,x y,happy,s1\nc,x y,bored,s2\n")
    c = read_corpus(p, labels="angry=ang,happy=hap")
    assert sorted(c.table["label"]) == ["ang", "hap"] and dict(c.dropped) == {"label:bored": 1}
    mapping = tmp_path / "map.yaml"
    mapping.write_text("angry: neg\nbored: neg\n")
    c2 = read_corpus(p, labels=str(mapping))
    assert sorted(c2.table["label"]) == ["neg", "neg"] and c2.policy == "map"


def test_policy_errors():
    with pytest.raises(MmferError, match="unknown label policy 'five'"):
        parse_policy("five")
    with pytest.raises(MmferError, match="bad label mapping entry 'angry'"):
        parse_policy("angry,happy=hap")


def test_inspect_manifest_json(tmp_path: Path):
    p = _write(tmp_path, "id,text,label,speaker,session\na,x,ang,s1,A\nb,y,xxx,s1,A\nc,z,sad,s2,B\n")
    res = CliRunner().invoke(app, ["corpus", "inspect", str(p), "--json"])
    out = json.loads(res.stdout)
    assert out["corpus"] == "manifest" and out["kept"] == 2 and out["sessions"] == {"A": 1, "B": 1}
    assert out["dropped"] == {"label:xxx": 1} and out["missing_alignment"] == 2
