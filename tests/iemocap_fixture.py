"""Writes a tiny IEMOCAP_full_release tree with the release's quirks (made-up text, sine-wave audio).

Quirks covered: CRLF line endings, macOS ``._*`` resource forks, per-evaluator subfolders, votes with
several categories and comments, ``XX`` ids and ``M: [LAUGHTER]`` lines in transcriptions, noise-only
and laughter-only turns, ``WORD(2)`` variants, ``<sil>`` and ``++LAUGHTER++`` in .wdseg, a missing
.wdseg, a male speaker inside an F-named dialog, a malformed evaluation line, a malformed .wdseg row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"

# utt_id, start, end, label, VAD, votes lines, transcript
S1 = "Ses01F_impro01"
S2 = "Ses02M_script01_1"
TURNS = {
    S1: [
        ("Ses01F_impro01_F000", 1.0, 3.0, "neu", (2.5, 2.0, 2.5),
         ["C-E2:\tNeutral;\t()", "C-E3:\tNeutral; Frustration;\t(calm)"], "Well, I just don't know."),
        ("Ses01F_impro01_M000", 3.5, 5.5, "ang", (1.5, 4.0, 4.0),
         ["C-E1:\tAnger;\t()", "C-E2:\tAnger; Frustration;\t()"], "Get out of my office [BREATHING]."),
        ("Ses01F_impro01_F001", 6.0, 8.0, "exc", (4.5, 4.0, 3.0), ["C-E1:\tExcited;\t()"],
         "We won, we actually won!"),
        ("Ses01F_impro01_M001", 8.5, 9.5, "xxx", (3.0, 3.0, 3.0),
         ["C-E1:\tAnger;\t()", "C-E2:\tSadness;\t()"], "Whatever you say."),
        ("Ses01F_impro01_F002", 10.0, 10.8, "sad", (2.0, 2.0, 2.0), ["C-E1:\tSadness;\t()"], "[BREATHING]"),
        ("Ses01F_impro01_M002", 11.0, 12.0, "hap", (4.0, 3.5, 3.0), ["C-E1:\tHappiness;\t()"], "[LAUGHTER]"),
        ("Ses01F_impro01_F003", 12.5, 14.0, "fru", (2.0, 3.5, 3.0), ["C-E1:\tFrustration;\t()"],
         "This again? [GARBAGE]"),
    ],
    S2: [
        ("Ses02M_script01_1_F000", 0.5, 2.5, "sad", (1.5, 1.5, 2.0),
         ["C-E1:\tSadness;\t(tired)", "C-F1:\tSadness; Neutral;\t()"], "I miss her so much."),
        ("Ses02M_script01_1_M000", 3.0, 4.5, "neu", (3.0, 2.5, 3.0), ["C-E2:\tNeutral;\t()"],
         "The train leaves at noon."),
    ],
}
WDSEG = {
    "Ses01F_impro01_F000": [(0, 9, "<s>"), (10, 30, "WELL"), (31, 40, "<sil>"), (41, 50, "I"),
                            (51, 80, "JUST(2)"), (81, 110, "DON'T"), (111, 150, "KNOW"), (151, 160, "</s>")],
    "Ses01F_impro01_M000": [(0, 5, "<s>"), (6, 30, "GET"), (31, 50, "OUT"), (51, 60, "OF"),
                            (61, 80, "MY"), (81, 120, "OFFICE"), (121, 140, "++BREATHING++"),
                            (141, 150, "</s>")],
    "Ses01F_impro01_M002": [(0, 5, "<s>"), (6, 60, "++LAUGHTER++"), (61, 70, "</s>")],
    "Ses02M_script01_1_F000": [(0, 5, "<s>"), (6, 20, "I"), (21, 50, "MISS"), (51, 70, "HER"),
                               (71, 90, "SO"), (91, 130, "MUCH"), (131, 140, "</s>")],
}
# F001 has no .wdseg (as a few in the release); M000 of session 2 has a malformed one.
BROKEN_WDSEG = "Ses02M_script01_1_M000"


def _eval_block(utt, s, e, label, vad, votes) -> str:
    lines = [f"[{s:.4f} - {e:.4f}]\t{utt}\t{label}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"]
    lines += votes
    lines += [f"A-E1:\tval {vad[0]:.0f}; act {vad[1]:.0f}; dom  {vad[2]:.0f};\t()"]
    return "\n".join(lines) + "\n\n"


def _wdseg(rows) -> str:
    out = [" SFrm  EFrm    SegAScr Word"]
    out += [f"{s:5d} {e:5d} {-1000 * (e - s + 1):10d} {w}" for s, e, w in rows]
    out.append(f" Total score:     {-123456}")
    return "\n".join(out) + "\n"


def write_iemocap(root: Path, with_audio: bool = True, malformed_eval_line: bool = True) -> Path:
    """Write the tree under ``root/IEMOCAP_full_release`` and return that folder."""
    base = root / "IEMOCAP_full_release"
    for dialog, turns in TURNS.items():
        sess = base / f"Session{int(dialog[3:5])}"
        ev = sess / "dialog" / "EmoEvaluation"
        tr = sess / "dialog" / "transcriptions"
        for d in (ev / "Categorical", ev / "Attribute", ev / "Self-evaluation", tr):
            d.mkdir(parents=True, exist_ok=True)
        text = HEADER + "".join(_eval_block(u, s, e, lab, vad, votes) for u, s, e, lab, vad, votes, _ in turns)
        if dialog == S2 and malformed_eval_line:
            text += "[5.0000 - 6.0000]\tSes02M_script01_1_M001\tneu\t[3.0000, 2.5000]\n\n"  # VAD incomplete
        (ev / f"{dialog}.txt").write_bytes(text.replace("\n", "\r\n").encode())
        (ev / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \xff\xfe")
        (ev / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{turns[0][0]} :Neutral; ()\n")
        tlines = [f"{u} [{s:08.4f}-{e:08.4f}]: {t}" for u, s, e, _, _, _, t in turns]
        tlines.insert(1, f"{dialog}_MXX0 [002.9000-003.2000]: Mm.")
        tlines.append("M: [LAUGHTER]")
        (tr / f"{dialog}.txt").write_bytes(("\r\n".join(tlines) + "\r\n").encode())
        for u, s, e, *_ in turns:
            fa = sess / "sentences" / "ForcedAlignment" / dialog
            fa.mkdir(parents=True, exist_ok=True)
            if u in WDSEG:
                (fa / f"{u}.wdseg").write_text(_wdseg(WDSEG[u]))
            elif u == BROKEN_WDSEG:
                (fa / f"{u}.wdseg").write_text(" SFrm  EFrm    SegAScr Word\n    0    10 oops THE\n")
            (fa / f"{u}.phseg").write_text("ignored\n")
            if with_audio:
                wav = sess / "sentences" / "wav" / dialog / f"{u}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                sr = 16000
                t = np.arange(int((e - s) * sr)) / sr
                f0 = 120 + 80 * (u[-4] == "F")
                sig = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
                sf.write(wav, sig.astype(np.float32), sr, subtype="PCM_16")
    return base
