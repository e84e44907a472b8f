"""Speech recognition benchmark: word error rate and speed of the bundled Whisper-base (faster-whisper,
int8, greedy) on real speech (RAVDESS, ../shared/data) and on the synthetic sample corpus.

    python benchmarks/asr.py [--ravdess ../shared/data/ravdess/manifest.csv] [--sample DIR] [--n 80]

Writes benchmarks/results/asr.json. WER is over words as mmfer tokenises them (lower case, punctuation
dropped except ! and ?, which are removed here too: recognisers and typists differ on them). Speed is
audio seconds per wall second on this machine, with the language given (`--language en`) and detected.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def words(text: str) -> list[str]:
    from mmfer.corpora.text import clean_text, words_of

    return [w for w in words_of(clean_text(text)) if w.strip("!?")]


def measure(rec, items: list[tuple[str, str]], language: str | None) -> dict:
    from mmfer.features.audio import SAMPLE_RATE, load_audio
    from mmfer.speech.wer import word_errors

    errors = n_ref = 0
    audio = wall = 0.0
    for path, ref in items:
        x = load_audio(path)
        t = time.perf_counter()
        heard = rec.transcribe(x, language=language)
        wall += time.perf_counter() - t
        audio += len(x) / SAMPLE_RATE
        r = words(ref)
        errors += word_errors(r, words(heard.text))
        n_ref += len(r)
    return {"utterances": len(items), "audio_seconds": round(audio, 1), "wer": round(errors / max(n_ref, 1), 4),
            "x_real_time": round(audio / wall, 2), "language": language or "detected"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ravdess", type=Path, default=HERE.parent.parent / "shared/data/ravdess/manifest.csv")
    ap.add_argument("--sample", type=Path, default=None, help="sample corpus folder (default: made in /tmp)")
    ap.add_argument("--n", type=int, default=80, help="RAVDESS utterances (evenly spread); sample: 60")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "asr.json")
    a = ap.parse_args()

    import pandas as pd
    import torch

    from mmfer.corpora import read_corpus
    from mmfer.corpora.sample import generate
    from mmfer.speech.asr import recogniser

    torch.set_num_threads(os.cpu_count() or 1)
    rec = recogniser("whisper-base")
    results = {}
    if a.ravdess.is_file():
        m = pd.read_csv(a.ravdess)
        rows = m.iloc[:: max(1, len(m) // a.n)].head(a.n)
        items = [(str(a.ravdess.parent / p), t) for p, t in zip(rows["audio"], rows["text"])]
        results["ravdess"] = [measure(rec, items, "en"), measure(rec, items, None)]
    sample = a.sample or Path("/tmp/mmfer-bench-asr-sample")
    if not (sample / "README.txt").is_file():
        generate(sample, per_speaker=60, seed=0, progress=False)  # the quickstart's corpus
    t = read_corpus(sample).table
    rows = t.iloc[:: max(1, len(t) // 60)].head(60)
    results["sample"] = [measure(rec, list(zip(rows["audio"], rows["transcript"])), "en")]
    out = {"recogniser": rec.settings(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "date": time.strftime("%Y-%m-%d"), "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for corpus, runs in results.items():
        for r in runs:
            print(f"{corpus:8s} language {r['language']:9s} WER {r['wer']:.1%}  {r['x_real_time']:.2f}x real time "
                  f"({r['utterances']} utterances, {r['audio_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
