"""The Whisper encoder's CPU precision on RAVDESS: float32 against bfloat16 (the default where the CPU
computes it natively, ``features.whisper_precision``), on the folds of benchmarks/real.py, one machine:
`prepare` time of the RAVDESS store (Whisper frames + pooled, ComParE functionals), the Whisper linear
probe and the default `audio` model, and `mmfer compare` of each pair (bfloat16 − float32).
Writes benchmarks/results/precision.json.

    python benchmarks/precision.py [--data ../shared/data] [--work DIR] [--out FILE]

Finished stores and folds in --work are reused (their times are then those of the reuse, so give a new
--work to measure `prepare`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import real  # noqa: E402  (benchmarks/real.py: the corpus, its folds and training settings)

PRECISIONS = ("float32", "bfloat16")
MODELS = ("audio-whisper-linear", "audio")


def main() -> None:
    import soundfile as sf
    import torch

    from mmfer.analysis.compare import compare
    from mmfer.config import FeatureConfig, load_config
    from mmfer.features.prepare import prepare
    from mmfer.features.whisper import native_bfloat16
    from mmfer.training.cv import run_cv

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-precision"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "precision.json")
    a = ap.parse_args()
    manifest = (a.data / real.RAVDESS["manifest"]).resolve()
    if not manifest.is_file():
        raise SystemExit(f"RAVDESS not found under {a.data} (expected {real.RAVDESS['manifest']})")
    import pandas as pd

    audio = [manifest.parent / p for p in pd.read_csv(manifest)["audio"]]
    seconds = sum(sf.info(p).duration for p in audio)
    result: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch "
                               f"{torch.__version__}", "native_bfloat16": native_bfloat16(),
                    "date": time.strftime("%Y-%m-%d"), "audio_seconds": round(seconds, 1), "runs": {}}
    cfg = load_config(None, {"train": {**real.RAVDESS["train"], "threads": 2}})
    for precision in PRECISIONS:
        store = a.work / f"ravdess-{precision}-store"
        t = time.perf_counter()
        prepare(manifest, store, features=FeatureConfig(streams=real.RAVDESS["streams"].split(","),
                                                        whisper_precision=precision),
                progress=False, warn=lambda m: None)
        dt = time.perf_counter() - t
        entry = {"prepare_seconds": round(dt, 1), "prepare_x_real_time": round(seconds / dt, 1)}
        print(f"{precision}: prepare {dt:.0f} s ({seconds / dt:.0f}x real time)", flush=True)
        for model in MODELS:
            s = run_cv(store, model, cfg, a.work / "runs" / precision / model, progress=False,
                       echo=lambda m: print("  " + m, flush=True))
            entry[model] = {"ua": s["ua"], "ua_pooled": s["intervals"]["ua"],
                            "seconds_per_fold": s["seconds_per_fold"]}
            print(f"{precision} {model}: UA {s['ua']['mean']:.4f}", flush=True)
        result["runs"][precision] = entry
    result["bfloat16_minus_float32"] = {}
    for model in MODELS:
        r = compare(a.work / "runs" / "bfloat16" / model, a.work / "runs" / "float32" / model)
        result["bfloat16_minus_float32"][model] = {"ua": r["metrics"]["ua"], "mcnemar": r["mcnemar"],
                                                   "fold_p": r["folds"]["ua"]["p"]}
        d = r["metrics"]["ua"]
        print(f"{model}: bfloat16 - float32 UA {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["bfloat16_minus_float32"], indent=2))


if __name__ == "__main__":
    main()
