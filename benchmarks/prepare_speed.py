"""`prepare` wall time of two variants in alternating rounds on the same corpus and machine: timings on these
2-core machines move by 10-20 % from run to run, so one run of each says little.

* ``--compare smile`` (default): openSMILE's graph kept between calls (``features.smile_fork``, the default)
  against ``opensmile.Smile`` per signal, as before. Writes benchmarks/results/prepare_speed.json.
* ``--compare trim``: the Whisper encoder without the utterances' quiet edges (``features.whisper_trim`` 40 dB)
  against every sample encoded (0, the default). Writes benchmarks/results/prepare_trim.json.
* ``--compare depth``: the Whisper encoder run to layer 4 of 6 (``features.ssl_layers`` and ``pooled_layers``
  ``0-4``: the encoder stops after the highest layer kept) against all layers. Writes
  benchmarks/results/prepare_depth.json.

    python benchmarks/prepare_speed.py [--compare smile|trim|depth] [--corpus CSV|DIR] [--streams ...] [--rounds 2]

Default corpus: RAVDESS from ../shared/data (89 min of audio; the streams of benchmarks/real.py's store).
Both stores are compared at the end: the functionals must be the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from mmfer.corpora import read_corpus
from mmfer.features import smile_fork
from mmfer.features.prepare import prepare
from mmfer.features.store import FeatureStore

HERE = Path(__file__).resolve().parent
RAVDESS = HERE.parents[1] / "shared" / "data" / "ravdess" / "manifest.csv"
sys.path.insert(0, str(HERE))

from opensmile_calls import cpu_name  # noqa: E402  (benchmarks/opensmile_calls.py)

VARIANTS = {  # name -> (openSMILE's graph kept, feature overrides)
    "smile": {"forked": (True, {}), "per_call": (False, {})},
    "trim": {"trim40": (True, {"whisper_trim": 40.0}), "untrimmed": (True, {"whisper_trim": 0.0})},
    "depth": {"layers0-4": (True, {"ssl_layers": "0-4", "pooled_layers": "0-4"}),
              "all_layers": (True, {"ssl_layers": "all", "pooled_layers": "all"})},
}


def timed(corpus: Path, store: Path, streams: list[str], forked: bool, overrides: dict | None = None) -> float:
    """One fresh `prepare` (its pool's workers are forked from here, so they inherit the switch)."""
    real = smile_fork.available
    smile_fork.available = real if forked else (lambda: False)
    try:
        shutil.rmtree(store, ignore_errors=True)
        t = time.perf_counter()
        prepare(corpus, store, streams=streams, progress=False, warn=lambda m: None, allow_outside=True,
                **(overrides or {}))
        return time.perf_counter() - t
    finally:
        smile_fork.available = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=sorted(VARIANTS), default="smile")
    ap.add_argument("--corpus", type=Path, default=RAVDESS)
    ap.add_argument("--streams", default="acoustic,functionals,pooled")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.out = args.out or HERE / "results" / ("prepare_speed.json" if args.compare == "smile" else
                                               f"prepare_{args.compare}.json")
    variants = VARIANTS[args.compare]
    first, second = variants
    import torch

    from mmfer.features.whisper import native_bfloat16

    streams = args.streams.split(",")
    table = read_corpus(args.corpus).table
    seconds = sum(sf.info(a).duration for a in table["audio"])
    work = Path(tempfile.mkdtemp(prefix="mmfer-prepare-"))
    runs: dict[str, list[float]] = {first: [], second: []}
    for r in range(args.rounds):
        for name in (first, second) if r % 2 == 0 else (second, first):
            forked, overrides = variants[name]
            runs[name].append(round(timed(args.corpus, work / name, streams, forked, overrides), 1))
            print(name, runs[name][-1], "s", flush=True)
    same = None
    if "functionals" in streams:
        a, b = (FeatureStore(work / n).features["functionals"].path / "data.npy" for n in (first, second))
        same = np.array_equal(np.load(a), np.load(b))
    shutil.rmtree(work, ignore_errors=True)
    result = {"compare": args.compare, "variants": {k: v[1] for k, v in variants.items()},
              "machine": cpu_name(), "cores": torch.get_num_threads(), "native_bfloat16": native_bfloat16(),
              "corpus": str(args.corpus), "utterances": len(table), "audio_seconds": round(seconds, 1),
              "streams": streams, "seconds": runs,
              "x_real_time": {k: [round(seconds / s, 1) for s in v] for k, v in runs.items()},
              "functionals_identical": same}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
