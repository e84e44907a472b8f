"""Feature-extraction benchmark on the sample corpus: acoustic x real time (1 worker, all cores), lexical
sentences/s, and how fast the store feeds an epoch. Writes JSON (default benchmarks/results/extract.json).

Targets: acoustic >= 50x real time per core; one epoch of features loads faster than the model trains
on it (compare `epoch_load_seconds` with benchmarks/train.py's seconds per epoch).

    python benchmarks/extract.py [--corpus DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import soundfile as sf

from mmfer.corpora import read_corpus
from mmfer.corpora.sample import generate
from mmfer.data import UtteranceSet, fit_normalizers
from mmfer.features.lexical import make_encoder
from mmfer.features.prepare import prepare
from mmfer.features.store import FeatureStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="sample corpus folder (made when missing)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmfer-bench-"))
    corpus = args.corpus or generate(work / "corpus", progress=False)
    table = read_corpus(corpus).table
    audio_seconds = sum(sf.info(a).duration for a in table["audio"])
    cores = os.cpu_count() or 1
    result: dict = {"utterances": len(table), "audio_seconds": round(audio_seconds, 1), "cores": cores}
    for workers in sorted({1, cores}):
        store = work / f"store-{workers}"
        t = time.perf_counter()
        prepare(corpus, store, workers=workers, progress=False, warn=lambda m: None, lexical="minilm")
        result[f"prepare_seconds_{workers}_workers"] = round(time.perf_counter() - t, 2)
        # acoustic alone: rebuild just that feature set
        fs = FeatureStore(store)
        shutil.rmtree(fs.features["acoustic"].path)
        t = time.perf_counter()
        prepare(corpus, store, workers=workers, progress=False, warn=lambda m: None)
        dt = time.perf_counter() - t
        result[f"acoustic_x_realtime_{workers}_workers"] = round(audio_seconds / dt, 1)
    result["acoustic_x_realtime_per_core"] = round(result[f"acoustic_x_realtime_{cores}_workers"] / cores, 1)
    enc = make_encoder("minilm")
    words = [list(w) for w in table["words"]]
    enc.encode(words[:8])
    t = time.perf_counter()
    for i in range(0, len(words), 64):
        enc.encode(words[i:i + 64])
    result["lexical_sentences_per_second"] = round(len(words) / (time.perf_counter() - t), 1)
    store = FeatureStore(work / f"store-{cores}")
    ids = store.usable_ids(["acoustic", "lexical"])
    t = time.perf_counter()
    norms = fit_normalizers(store, ids, ["acoustic", "lexical"])
    data = UtteranceSet.from_store(store, ids, store.corpus.labels, ["acoustic", "lexical"], norms, 3)
    result["fold_load_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    n = sum(len(b.ids) for b in data.batches(32, shuffle=True))
    result["epoch_batches_seconds"] = round(time.perf_counter() - t, 3)
    result["epoch_utterances"] = n
    result["targets"] = {"acoustic_x_realtime_per_core>=50": result["acoustic_x_realtime_per_core"] >= 50}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
