"""What recognition errors cost: `mmmf` and `text` on the sample corpus with recognised transcripts
(`mmfer prepare --transcribe`, bundled Whisper-base, --language en) next to the same models with the
true transcripts (the quickstart's runs, same folds, same seed and config).

    python benchmarks/transcribed.py [--quickstart mmfer-quickstart] [--work DIR]

Writes benchmarks/results/transcribed.json. Resumable: the store's recognition journal and finished
cv folds are reused. Recognition of the 540 utterances takes ~12 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("text", "mmmf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quickstart", type=Path, default=Path("mmfer-quickstart"),
                    help="a finished `mmfer quickstart` folder (corpus/, runs/)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-transcribed"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "transcribed.json")
    a = ap.parse_args()

    import pandas as pd

    from mmfer.api import prepare
    from mmfer.config import load_config
    from mmfer.corpora.text import clean_text, words_of
    from mmfer.io import read_json
    from mmfer.speech.asr import recogniser
    from mmfer.speech.wer import word_errors
    from mmfer.training.cv import run_cv

    store = a.work / "store"
    rec = recogniser("whisper-base", language="en")
    start = time.perf_counter()
    prepare(a.quickstart / "corpus", store, transcribe=rec, language="en", warn=lambda m: None)
    prepare_seconds = time.perf_counter() - start
    t = pd.read_parquet(store / "corpus.parquet")
    errors = n = 0
    for typed, heard in zip(t["transcript"], t["words"]):
        ref = [w for w in words_of(clean_text(typed)) if w.strip("!?")]
        errors += word_errors(ref, [w for w in heard if w.strip("!?")])
        n += len(ref)
    cfg = load_config(None, {"train": {"seed": 0}})  # the quickstart's config
    rows = {}
    for m in MODELS:
        recognised = run_cv(store, m, cfg, a.work / "runs" / m, echo=lambda s: None)
        typed = read_json(a.quickstart / "runs" / m / "summary.json")
        rows[m] = {k: {"ua": round(s["ua"]["mean"], 4), "ua_std": round(s["ua"]["std"], 4),
                       "wa": round(s["wa"]["mean"], 4)}
                   for k, s in (("typed", typed), ("recognised", recognised))}
    out = {"corpus": "sample corpus (quickstart: 10 speakers, 5 sessions, leave one session out)",
           "utterances": len(t), "wer": round(errors / max(n, 1), 4), "recogniser": rec.settings(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
           "prepare_seconds_this_run": round(prepare_seconds, 1), "models": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"WER {out['wer']:.1%} on {len(t)} utterances")
    for m, r in rows.items():
        print(f"{m:5s} UA typed {r['typed']['ua']:.3f}  recognised {r['recognised']['ua']:.3f}")


if __name__ == "__main__":
    main()
