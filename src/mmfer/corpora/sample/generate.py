"""Synthesise mmfer's sample corpus in the exact IEMOCAP_full_release layout.

Ten synthetic speakers (one female- and one male-sounding eSpeak voice per session, all ten different)
read sentences whose emotion is carried by the *voice* (prosody), by the *words*, or by both:

====================  =========  ==========  ==============================================
cue                   share      wording     prosody
====================  =========  ==========  ==============================================
both                  40 %       emotional   emotional
audio only            30 %       neutral     emotional
text only             30 %       emotional   flat (neutral prosody)
====================  =========  ==========  ==============================================

(shares of the ang/hap/sad utterances; neu utterances are neutral in both channels). An audio-only model
cannot tell a text-only utterance from a neutral one, a text-only model cannot tell an audio-only one:
each should top out around 75-80 % while fusion can approach 100 %. A few exc, fru and xxx utterances
and one breathing-only turn per dialog exercise the label refinement and the noise filter.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

from mmfer.corpora.sample.espeak import Espeak, Prosody
from mmfer.corpora.sample.sentences import CONTENT, OPENINGS
from mmfer.corpora.text import WORD
from mmfer.errors import MmferError

SAMPLE_RATE = 16000
CUE_SHARES = {"both": 0.4, "audio": 0.3, "text": 0.3}
CLASSES = ("ang", "hap", "neu", "sad")
EXTRAS = ("exc", "fru", "xxx")
MARKER = ".mmfer-sample.json"
VERSION = 1

# Prosody relative to a speaker's base pitch; jittered per utterance so the classes overlap.
PROSODY = {
    "neu": dict(rate=165, pitch=0, range=45, volume=100, wordgap=0),
    "ang": dict(rate=205, pitch=8, range=75, volume=165, wordgap=0),
    "hap": dict(rate=185, pitch=18, range=95, volume=130, wordgap=0),
    "sad": dict(rate=120, pitch=-14, range=12, volume=70, wordgap=4),
    "fru": dict(rate=180, pitch=2, range=55, volume=135, wordgap=1),
    "exc": dict(rate=195, pitch=22, range=100, volume=140, wordgap=0),
}
JITTER = dict(rate=18, pitch=6, range=12, volume=18)
VAD = {"ang": (1.8, 4.0, 4.0), "hap": (4.2, 3.4, 3.0), "neu": (3.0, 2.4, 3.0), "sad": (1.8, 1.8, 2.0),
       "fru": (2.0, 3.4, 3.2), "exc": (4.2, 4.2, 3.4), "xxx": (3.0, 3.0, 3.0)}
CATEGORY = {"ang": "Anger", "hap": "Happiness", "neu": "Neutral", "sad": "Sadness", "fru": "Frustration",
            "exc": "Excited", "sur": "Surprise", "oth": "Other"}


@dataclass(frozen=True)
class Speaker:
    session: int
    gender: str
    voice: str
    pitch: int  # eSpeak base pitch 0-100

    @property
    def id(self) -> str:
        return f"Ses{self.session:02d}{self.gender}"


@dataclass
class Plan:
    """One utterance to synthesise (everything decided before any audio is made)."""

    utt_id: str
    dialog: str
    speaker: Speaker
    label: str
    cue: str
    text: str
    prosody: Prosody
    votes: list[list[str]]
    vad: tuple[float, float, float]


def speakers() -> list[Speaker]:
    out = []
    for s in range(1, 6):
        out.append(Speaker(s, "F", f"en-us+f{s}", 58 + 4 * (s % 3)))
        out.append(Speaker(s, "M", f"en-us+m{s}", 36 + 4 * (s % 3)))
    return out


def _labels_for(per_speaker: int, rng: random.Random) -> list[str]:
    n_extra = max(1, per_speaker // 20)
    n_main = per_speaker - n_extra * len(EXTRAS)
    if n_main < len(CLASSES):
        raise MmferError(f"--per-speaker {per_speaker} is too small: use at least {len(CLASSES) + 3 * 1}")
    labels = [CLASSES[i % len(CLASSES)] for i in range(n_main)]
    labels += [e for e in EXTRAS for _ in range(n_extra)]
    rng.shuffle(labels)
    return labels


def _cue(label: str, rng: random.Random) -> str:
    if label in ("neu", "xxx"):
        return "none"
    r = rng.random()
    return "both" if r < CUE_SHARES["both"] else "audio" if r < CUE_SHARES["both"] + CUE_SHARES["audio"] else "text"


def _prosody(base: str, speaker: Speaker, rng: random.Random) -> Prosody:
    p = PROSODY[base]
    j = {k: rng.uniform(-v, v) for k, v in JITTER.items()}
    return Prosody(
        rate=int(round(p["rate"] + j["rate"])),
        pitch=int(np.clip(round(speaker.pitch + p["pitch"] + j["pitch"]), 0, 99)),
        range=int(np.clip(round(p["range"] + j["range"]), 0, 100)),
        volume=int(np.clip(round(p["volume"] + j["volume"]), 20, 200)),
        wordgap=p["wordgap"],
    )


def _votes(label: str, rng: random.Random) -> list[list[str]]:
    """Three evaluators; mostly agreeing with the label, sometimes not (and never agreeing for xxx)."""
    others = [c for c in CATEGORY if c != label]
    if label == "xxx":
        return [[CATEGORY[c]] for c in rng.sample(["ang", "neu", "sad", "hap", "fru"], 3)]
    votes = []
    for _ in range(3):
        first = label if rng.random() < 0.85 else rng.choice(others)
        cats = [first] + ([rng.choice(others)] if rng.random() < 0.15 else [])
        votes.append([CATEGORY[c] for c in dict.fromkeys(cats)])
    return votes


def plan(per_speaker: int = 60, seed: int = 0) -> list[Plan]:
    rng = random.Random(seed)
    plans: list[Plan] = []
    for s in range(1, 6):
        f, m = [sp for sp in speakers() if sp.session == s]
        labels = {sp.gender: _labels_for(per_speaker, rng) for sp in (f, m)}
        dialogs = [f"Ses{s:02d}F_impro01", f"Ses{s:02d}M_script01_1"]
        counters = {(d, g): 0 for d in dialogs for g in "FM"}
        for i in range(per_speaker):
            for sp in (f, m):
                dialog = dialogs[i % 2]
                label = labels[sp.gender][i]
                cue = _cue(label, rng)
                words_emotional = cue in ("both", "text") or label in ("exc", "fru")
                voice_emotional = cue in ("both", "audio") or label in ("exc", "fru")
                if label == "xxx":
                    opening = rng.choice(OPENINGS[rng.choice(["ang", "sad", "neu", "hap"])])
                    pros_base = rng.choice(["neu", "ang", "sad", "hap"])
                else:
                    opening = rng.choice(OPENINGS[label if words_emotional else "neu"])
                    pros_base = label if voice_emotional else "neu"
                text = f"{opening}, {rng.choice(CONTENT)}."
                k = counters[(dialog, sp.gender)]
                counters[(dialog, sp.gender)] += 1
                vad = tuple(float(np.clip(round((v + rng.uniform(-0.5, 0.5)) * 2) / 2, 1, 5))
                            for v in VAD[label])
                plans.append(Plan(f"{dialog}_{sp.gender}{k:03d}", dialog, sp, label, cue, text,
                                  _prosody(pros_base, sp, rng), _votes(label, rng), vad))
    return plans


def _align(text: str, starts: list[tuple[int, float]], audio: np.ndarray, sr: int):
    """Word (token, start s, end s) from eSpeak's WORD events and our own tokenizer.

    Events give each word's start (text offset, time); a word ends where its own sound fades out before
    the next word starts (trailing silence trimmed with a short-time energy threshold).
    """
    tokens = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text.lower())]
    times: list[float | None] = [None] * len(tokens)
    for pos, t in starts:
        for i, (a, b, _) in enumerate(tokens):
            if a <= pos < b or (pos < a and times[i] is None and (i == 0 or times[i - 1] is not None)):
                if times[i] is None:
                    times[i] = t
                break
    total = len(audio) / sr
    known = [t for t in times if t is not None]
    if not known:
        return []
    for i, t in enumerate(times):  # interpolate any word eSpeak gave no event for
        if t is None:
            prev = next((times[j] for j in range(i - 1, -1, -1) if times[j] is not None), 0.0)
            times[i] = prev + 0.05
    hop = int(0.01 * sr)
    frames = np.abs(audio[: len(audio) // hop * hop].astype(np.float32)).reshape(-1, hop).max(axis=1)
    loud = frames > 0.02 * (frames.max() + 1e-9)
    out = []
    for i, (_, _, tok) in enumerate(tokens):
        start = times[i]
        nxt = times[i + 1] if i + 1 < len(tokens) else total
        a, b = int(start * 100), max(int(start * 100) + 1, int(nxt * 100))
        seg = np.flatnonzero(loud[a:b])
        end = (a + seg[-1] + 1) / 100 if len(seg) else nxt
        out.append((tok, start, max(end, start + 0.01)))
    return out


def _wdseg(words, duration: float) -> str:
    rows = []
    n_frames = int(round(duration * 100))
    rows.append((0, max(0, int(words[0][1] * 100) - 1), "<s>") if words else (0, n_frames - 1, "<s>"))
    cursor = rows[-1][1] + 1
    for tok, s, e in words:
        sf_, ef = max(int(round(s * 100)), cursor), max(int(round(e * 100)) - 1, cursor)
        if sf_ - cursor >= 3:
            rows.append((cursor, sf_ - 1, "<sil>"))
        elif sf_ > cursor:
            sf_ = cursor
        rows.append((sf_, ef, tok.upper()))
        cursor = ef + 1
    rows.append((cursor, max(cursor, n_frames - 1), "</s>"))
    score = 0
    lines = [" SFrm  EFrm    SegAScr Word"]
    for s, e, w in rows:
        seg = -(e - s + 1) * (2900 + (len(w) * 37) % 500)
        score += seg
        lines.append(f"{s:5d} {e:5d} {seg:10d} {w}")
    lines.append(f" Total score:     {score}")
    return "\n".join(lines) + "\n"


def _to_16k(samples: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    x = samples.astype(np.float64) / 32768.0
    if sr != SAMPLE_RATE:
        g = np.gcd(sr, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, sr // g)
    # eSpeak's pauses are exact zeros: a little dither keeps log-energies finite downstream.
    x = x + rng.normal(0.0, 3e-5, size=len(x))
    return np.clip(x, -1.0, 1.0)


def generate(out_dir: str | Path, per_speaker: int = 60, seed: int = 0, force: bool = False,
             progress: bool = True, workers: int = 0) -> Path:
    """Write the corpus to ``out_dir`` (atomically: a ``.partial`` folder renamed when complete).

    An existing corpus made with the same settings is reused; other content is refused unless ``force``.
    Each session is synthesised in a fresh process seeded from ``seed`` (eSpeak keeps state between
    utterances), so the output is byte-identical for a seed whatever ``workers`` is.
    """
    out = Path(out_dir).expanduser().resolve()
    settings = {"version": VERSION, "per_speaker": per_speaker, "seed": seed}
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
            return out
        if not force:
            raise MmferError(f"{out} exists and is not a sample corpus made with these settings; "
                             "choose another folder or pass --force to replace it")
    Espeak.get()  # fail early, in this process, with a clear message when eSpeak is missing
    plans = plan(per_speaker, seed)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sessions = sorted({p.speaker.session for p in plans})
    n_workers = min(len(sessions), workers or os.cpu_count() or 1)
    durations: dict[str, float] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_workers, mp_context=ctx, max_tasks_per_child=1) as pool, \
            tqdm(total=len(plans), desc="synthesising", unit="utt", disable=not progress) as bar:
        futures = [pool.submit(_synth_session, tmp, [p for p in plans if p.speaker.session == s], seed)
                   for s in sessions]
        for fut in as_completed(futures):
            done = fut.result()
            durations.update(done)
            bar.update(len(done))
    by_dialog: dict[str, list[tuple[Plan, float, float, str]]] = {}
    clock: dict[str, float] = {}
    for p in plans:
        start = clock.get(p.dialog, 1.0)
        end = start + durations[p.utt_id]
        clock[p.dialog] = end + 0.4 + hash_unit(p.utt_id) * 0.8
        by_dialog.setdefault(p.dialog, []).append((p, start, end, p.text))
    for dialog, items in by_dialog.items():
        _write_breath_turn(tmp, dialog, items, clock, np.random.default_rng([seed, int(dialog[3:5]), len(items)]))
        _write_dialog_files(tmp / f"Session{int(dialog[3:5])}", dialog, items)
    _write_readme(tmp, plans, settings)
    (tmp / MARKER).write_text(json.dumps({"settings": settings, "utterances": len(plans)}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _synth_session(root: Path, plans: list[Plan], seed: int) -> dict[str, float]:
    """Synthesise one session's utterances (run in a fresh process); returns utt -> duration (s)."""
    engine = Espeak.get()
    engine.seed(seed * 1000 + plans[0].speaker.session)
    durations = {}
    for p in plans:
        speech = engine.synth(p.text, p.speaker.voice, p.prosody)
        rng = np.random.default_rng(int(hash_unit(f"{seed}/{p.utt_id}") * 2**32))
        audio = _to_16k(speech.samples, speech.sample_rate, rng)
        words = _align(p.text, speech.word_starts, speech.samples, speech.sample_rate)
        sess = root / f"Session{p.speaker.session}"
        wav = sess / "sentences" / "wav" / p.dialog / f"{p.utt_id}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        fa = sess / "sentences" / "ForcedAlignment" / p.dialog / f"{p.utt_id}.wdseg"
        fa.parent.mkdir(parents=True, exist_ok=True)
        fa.write_text(_wdseg(words, len(audio) / SAMPLE_RATE))
        durations[p.utt_id] = len(audio) / SAMPLE_RATE
    return durations


def hash_unit(s: str) -> float:
    """A deterministic number in [0, 1) from a string (Python's hash() is salted per process)."""
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) / 2**32


def _write_breath_turn(root: Path, dialog: str, items, clock, rng: np.random.Generator) -> None:
    """One breathing-only turn per dialog: real IEMOCAP has them, and the reader must drop them."""
    sp_gender = "M" if dialog[5] == "F" else "F"
    utt = f"{dialog}_{sp_gender}{900:03d}"
    dur = 0.8
    x = rng.normal(0, 0.01, int(dur * SAMPLE_RATE)) * np.hanning(int(dur * SAMPLE_RATE))
    sess = root / f"Session{int(dialog[3:5])}"
    wav = sess / "sentences" / "wav" / dialog / f"{utt}.wav"
    sf.write(wav, x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    start = clock[dialog]
    sp = next(p.speaker for p, *_ in items if p.speaker.gender == sp_gender)
    breath = Plan(utt, dialog, sp, "xxx", "none", "[BREATHING]", Prosody(), [["Neutral"], ["Other"], ["Sadness"]],
                  (3.0, 2.0, 3.0))
    items.append((breath, start, start + dur, "[BREATHING]"))


def _write_dialog_files(sess: Path, dialog: str, items) -> None:
    ev = sess / "dialog" / "EmoEvaluation"
    tr = sess / "dialog" / "transcriptions"
    ev.mkdir(parents=True, exist_ok=True)
    tr.mkdir(parents=True, exist_ok=True)
    blocks = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"]
    lines = []
    for p, s, e, text in items:
        v, a, d = p.vad
        block = [f"[{s:.4f} - {e:.4f}]\t{p.utt_id}\t{p.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]"]
        for k, cats in enumerate(p.votes, start=1):
            block.append(f"C-E{k}:\t{'; '.join(cats)};\t()")
        for k in range(1, len(p.votes) + 1):
            block.append(f"A-E{k}:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()")
        blocks.append("\n".join(block) + "\n")
        lines.append(f"{p.utt_id} [{s:08.4f}-{e:08.4f}]: {text}")
    lines.insert(1, f"{dialog}_MXX0 [{items[0][2]:08.4f}-{items[0][2] + 0.3:08.4f}]: Mm.")
    (ev / f"{dialog}.txt").write_text("\n".join(blocks) + "\n")
    (tr / f"{dialog}.txt").write_text("\n".join(lines) + "\n")


def _write_readme(root: Path, plans: list[Plan], settings: dict) -> None:
    from collections import Counter

    labels = Counter(p.label for p in plans)
    cues = Counter(p.cue for p in plans if p.label in ("ang", "hap", "sad"))
    n_emo = sum(cues.values())
    text = f"""mmfer sample corpus (synthetic, IEMOCAP_full_release layout)
=============================================================

Made by `mmfer sample-corpus` (settings: {json.dumps(settings)}). Not IEMOCAP and no real speech:
every utterance is synthesised with eSpeak NG (GPL-3.0-or-later) from an original sentence bank.
It exists so that mmfer can be run and tested end to end without the licensed corpus.

Speakers: 5 sessions x 2 synthetic voices (en-us+f1..f5, en-us+m1..m5); speaker = session + the
gender letter of the utterance id's last part, as in IEMOCAP.

Utterances: {len(plans)} spoken + one breathing-only turn per dialog (dropped by the reader).
Labels: {dict(sorted(labels.items()))}  (exc/fru/xxx exercise the 4-class refinement).

Where the emotion is (ang/hap/sad utterances, n={n_emo}):
  both channels  {cues['both']:4d} ({100 * cues['both'] / max(n_emo, 1):.0f}%)
  voice only     {cues['audio']:4d} ({100 * cues['audio'] / max(n_emo, 1):.0f}%)  neutral wording
  words only     {cues['text']:4d} ({100 * cues['text'] / max(n_emo, 1):.0f}%)  flat, neutral prosody
neu utterances are neutral in both. Audio-only and text-only models each miss one of the single-cue
groups; a fused model can get both.

Files: SessionN/dialog/EmoEvaluation, SessionN/dialog/transcriptions,
SessionN/sentences/ForcedAlignment/<dialog>/<utt>.wdseg (from eSpeak word events, 10 ms frames),
SessionN/sentences/wav/<dialog>/<utt>.wav (16 kHz mono 16-bit).
"""
    (root / "README.txt").write_text(text)
