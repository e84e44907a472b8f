"""How much of Whisper's 30 s window an utterance should see: accuracy per second of compute.

For each padding (``features.whisper_pad``: 0 = the utterance's own length, 30 = Whisper's training
window) and each trim of the quiet edges (``--trims``, ``features.whisper_trim`` in dB; 0 = none),
extract the pooled Whisper vector of a corpus (one pass, timed) and cross-validate the linear probe
``audio-whisper-linear`` on it with the package defaults (C chosen on validation speakers). Writes
benchmarks/results/whisper.json.

    python benchmarks/whisper.py --corpus mmfer-quickstart/corpus --name sample [--pads 0,8,30]
    python benchmarks/whisper.py --corpus ../shared/data/ravdess/manifest.csv --name ravdess --actors 8
    python benchmarks/whisper.py --corpus ../shared/data/ravdess/manifest.csv --name ravdess-trim --folds 6 \
        --pads 0 --trims 0,40,60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def subset(manifest: Path, actors: int, work: Path) -> Path:
    """The first ``actors`` speakers of a manifest (absolute audio paths), for a cheaper measurement."""
    import pandas as pd

    m = pd.read_csv(manifest)
    keep = sorted(m["speaker"].unique())[:actors]
    m = m[m["speaker"].isin(keep)].copy()
    m["audio"] = [str((manifest.parent / a).resolve()) for a in m["audio"]]
    out = work / f"{manifest.parent.name}-{actors}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    m.to_csv(out, index=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--pads", default="0,8,30")
    ap.add_argument("--trims", default="0", help="features.whisper_trim values (dB; 0 = no trimming)")
    ap.add_argument("--actors", type=int, default=0, help="only the first N speakers of a manifest")
    ap.add_argument("--folds", type=int, default=0, help="kfold-speaker with this many folds (0: the protocol's auto)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-whisper"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "whisper.json")
    a = ap.parse_args()
    import soundfile as sf

    from mmfer.api import prepare
    from mmfer.config import load_config
    from mmfer.corpora import read_corpus
    from mmfer.training.cv import run_cv

    corpus = subset(a.corpus, a.actors, a.work) if a.actors else a.corpus
    c = read_corpus(corpus)
    audio_seconds = sum(sf.info(p).duration for p in c.table["audio"])
    rows = []
    for pad, trim in ((float(p), float(t)) for p in a.pads.split(",") for t in a.trims.split(",")):
        store = a.work / f"{a.name}-pad{pad:g}" if not trim else a.work / f"{a.name}-pad{pad:g}-trim{trim:g}"
        t = time.perf_counter()
        prepare(corpus, store, streams=["pooled"], whisper_pad=pad, whisper_trim=trim, workers=2, progress=False,
                warn=lambda m: None)
        seconds = time.perf_counter() - t
        train = {"threads": 2, **({"protocol": "kfold-speaker", "folds": a.folds} if a.folds else {})}
        s = run_cv(store, "audio-whisper-linear", load_config(None, {"train": train}), store / "run",
                   progress=False, echo=lambda m: None)
        rows.append({"pad_seconds": pad, "trim_db": trim, "extract_seconds": round(seconds, 1),
                     "x_real_time": round(audio_seconds / seconds, 1), "ua": s["ua"], "wa": s["wa"],
                     "folds": len(s["folds"]), "protocol": s["protocol"]})
        print(f"{a.name} pad {pad:>4g} s, trim {trim:g} dB: UA {100 * s['ua']['mean']:.1f} ± "
              f"{100 * s['ua']['std']:.1f}, "
              f"extraction {seconds:.0f} s ({audio_seconds / seconds:.1f}x real time, 2 workers)", flush=True)
    results = json.loads(a.out.read_text()) if a.out.is_file() else {}
    results[a.name] = {"corpus": str(a.corpus), "actors": a.actors or None, "utterances": len(c.table),
                       "audio_seconds": round(audio_seconds, 1), "rows": rows, "date": time.strftime("%Y-%m-%d")}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
