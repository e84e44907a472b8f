"""Whisper encoder on the CPU: one call per utterance against several unpadded utterances per call (each
as if alone: its padding masked, ``features.whisper.hidden_states``), for several budgets of padded audio
per call. One thread (what each `prepare` worker uses), rounds alternating, so that the 10-20 % drift of
these machines hits every setting alike. Also checks that the batched frames are the ones of one call per
utterance (float rounding only). Writes JSON (default benchmarks/results/whisper_batch.json).

    python benchmarks/whisper_batch.py [--corpus CSV] [--utterances 240] [--budgets 8,16,30,60,240] [--rounds 2]

Default corpus: RAVDESS from ../shared/data (a random sample of its utterances, seed 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RAVDESS = HERE.parents[1] / "shared" / "data" / "ravdess" / "manifest.csv"
sys.path.insert(0, str(HERE))

from opensmile_calls import cpu_name  # noqa: E402  (benchmarks/opensmile_calls.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=RAVDESS)
    ap.add_argument("--utterances", type=int, default=240)
    ap.add_argument("--budgets", default="8,16,30,60,240", help="seconds of padded audio per call, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "whisper_batch.json")
    args = ap.parse_args()
    import torch

    from mmfer.corpora import read_corpus
    from mmfer.features import whisper
    from mmfer.features.audio import SAMPLE_RATE, load_audio

    torch.set_num_threads(1)
    table = read_corpus(args.corpus).table
    rows = table.sample(min(args.utterances, len(table)), random_state=0)
    def at(v):
        return None if v != v else float(v)  # NaN: the whole file

    signals = [load_audio(p, start=at(s), end=at(e)) for p, s, e in zip(rows["audio"], rows["start"], rows["end"])]
    seconds = sum(map(len, signals)) / SAMPLE_RATE
    ext = whisper.WhisperEncoderFeatures(precision="float32")
    ext.extract_many(signals[:8], ("acoustic", "pooled"))  # load and warm up
    budgets = [float(b) for b in args.budgets.split(",")]
    times: dict[str, list[float]] = {"one call per utterance": [], **{f"{b:g} s per call": [] for b in budgets}}
    alone = batched = None
    saved = dict(whisper.BATCH_SECONDS)
    try:
        for _ in range(args.rounds):
            t = time.perf_counter()
            alone = [ext.extract_streams(x) for x in signals]
            times["one call per utterance"].append(time.perf_counter() - t)
            for b in budgets:
                whisper.BATCH_SECONDS["cpu"] = b
                t = time.perf_counter()
                batched = ext.extract_many(signals, ("acoustic", "pooled"))
                times[f"{b:g} s per call"].append(time.perf_counter() - t)
    finally:
        whisper.BATCH_SECONDS.update(saved)
    diff = max(float(np.abs(a["acoustic"] - b["acoustic"]).max()) for a, b in zip(alone, batched))
    cos = min(float(((a["acoustic"] * b["acoustic"]).sum(1) / np.linalg.norm(a["acoustic"], axis=1)
                     / np.linalg.norm(b["acoustic"], axis=1)).min()) for a, b in zip(alone, batched))
    base = np.mean(times["one call per utterance"])
    result = {
        "machine": cpu_name(), "threads": 1, "native_bfloat16": whisper.native_bfloat16(), "precision": "float32",
        "corpus": str(args.corpus), "utterances": len(signals), "audio_seconds": round(seconds, 1),
        "seconds": {k: [round(v, 2) for v in ts] for k, ts in times.items()},
        "x_real_time": {k: round(seconds / np.mean(ts), 1) for k, ts in times.items()},
        "speedup": {k: round(base / np.mean(ts), 3) for k, ts in times.items()},
        "last_budget_vs_alone": {"max_abs_diff": diff, "min_frame_cosine": cos},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
