"""Batch prediction speed: `mmfer predict MODEL INPUT --out FILE` in × real time on this machine.

    python benchmarks/predict.py [--runs mmfer-quickstart/runs] [--sample mmfer-quickstart/corpus]

Two cases on the sample corpus (targets from the recordings issue):
* a ~5-minute recording made of sample utterances with pauses, transcripts recognised (Whisper-base,
  --language en), model mmmf (5 fold models): target ≥ 2× real time;
* a manifest of 200 utterances with typed transcripts (no recognition), model mmmf: target ≥ 20×.
Writes benchmarks/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("mmfer-quickstart/runs"))
    ap.add_argument("--sample", type=Path, default=Path("mmfer-quickstart/corpus"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "predict.json")
    a = ap.parse_args()

    import pandas as pd
    import soundfile as sf

    from mmfer.corpora import read_corpus
    from mmfer.features.audio import SAMPLE_RATE, load_audio
    from mmfer.serve.batch import BatchPredictor
    from mmfer.serve.inputs import expand_inputs
    from mmfer.serve.predictor import Predictor
    from mmfer.speech.asr import recogniser

    t = read_corpus(a.sample).table
    pred = Predictor(a.runs / "mmmf")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        parts, k = [], 0
        while sum(len(p) for p in parts) < 300 * SAMPLE_RATE:
            pause = np.zeros(int(SAMPLE_RATE * (1 + k % 3 * 0.5)), np.float32)
            parts += [load_audio(t.iloc[k % len(t)]["audio"]), pause]
            k += 1
        long = Path(tmp) / "recording.flac"
        sf.write(long, np.concatenate(parts), SAMPLE_RATE)
        seconds = sum(len(p) for p in parts) / SAMPLE_RATE
        batch = BatchPredictor(pred, recogniser("whisper-base"), language="en")
        start = time.perf_counter()
        rows = batch.run(expand_inputs([long]), Path(tmp) / "a.csv", progress=False)
        wall = time.perf_counter() - start
        results["recording, recognised"] = {"audio_seconds": round(seconds, 1), "segments": len(rows),
                                            "errors": sum(1 for r in rows if r.get("error")),
                                            "wall_seconds": round(wall, 1), "x_real_time": round(seconds / wall, 2),
                                            "target": 2.0}
        sub = t.iloc[:200]
        manifest = Path(tmp) / "m.csv"
        pd.DataFrame({"id": sub["utt_id"], "audio": sub["audio"], "text": sub["transcript"]}).to_csv(manifest,
                                                                                                       index=False)
        seconds = sum(sf.info(p).duration for p in sub["audio"])
        batch = BatchPredictor(pred, None)
        start = time.perf_counter()
        rows = batch.run(expand_inputs([manifest], allow_outside=True), Path(tmp) / "b.csv", progress=False)
        wall = time.perf_counter() - start
        results["utterances, typed"] = {"audio_seconds": round(seconds, 1), "utterances": len(rows),
                                        "errors": sum(1 for r in rows if r.get("error")),
                                        "wall_seconds": round(wall, 1), "x_real_time": round(seconds / wall, 2),
                                        "target": 20.0}
    out = {"model": "mmmf (5 fold models)", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "date": time.strftime("%Y-%m-%d"), "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:24s} {r['x_real_time']:6.2f}x real time (target ≥ {r['target']:g}x), {r['audio_seconds']:.0f} s "
              f"of audio in {r['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
