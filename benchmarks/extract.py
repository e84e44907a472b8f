"""Feature-extraction benchmark on the sample corpus: `prepare` with all default streams x real time (1 worker,
all cores), the acoustic stream alone (the Whisper pass: frames and pooled), lexical sentences/s, and how
fast the store feeds an epoch. Writes JSON (default benchmarks/results/extract.json).

The Whisper pass runs in bfloat16 where the CPU computes it natively (the default, ``whisper_precision``
auto); ``whisper_precision`` in the results compares it with float32: speed and per-frame cosine.

Targets: `prepare` with all default streams >= 50x real time on all cores (issue 25); one epoch of features
loads faster than the model trains on it (compare `epoch_load_seconds` with benchmarks/train.py's seconds
per epoch).

    python benchmarks/extract.py [--corpus DIR] [--out FILE] [--ssl-only]

SSL encoders: no real weights can be fetched here, so their speed is measured with randomly initialised
models of the real *sizes* (wav2vec 2.0 / WavLM base: 12 layers × 768; Whisper-base encoder: 6 × 512)
built from a config: the arithmetic, hence the speed, is the same as with trained weights.
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

SSL_SIZES = {
    "wav2vec2-base (random weights)": ("wav2vec2", {}),
    "wavlm-base (random weights)": ("wavlm", {}),
    "whisper-base encoder (random weights)": ("whisper", {"d_model": 512, "encoder_layers": 6, "decoder_layers": 1,
                                                          "encoder_attention_heads": 8, "decoder_attention_heads": 8,
                                                          "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048}),
}


def whisper_precision(corpus: Path, n: int = 60) -> dict:
    """The bundled Whisper encoder's pass in float32 and in bfloat16 on this CPU, all cores, over ``n`` sample
    utterances: x real time, and per hidden state the min and mean per-frame cosine of bfloat16 to float32."""
    import numpy as np
    import torch

    from mmfer.features.audio import load_audio
    from mmfer.features.whisper import WhisperEncoderFeatures, native_bfloat16

    signals = [load_audio(a) for a in read_corpus(corpus).table["audio"][:n]]
    seconds = sum(len(x) for x in signals) / 16000
    out: dict = {"utterances": n, "audio_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                 "native_bfloat16": native_bfloat16()}
    frames = {}
    for precision in ("float32", "bfloat16"):
        enc = WhisperEncoderFeatures(precision=precision, device="cpu")
        enc.extract(signals[0])
        t = time.perf_counter()
        frames[precision] = [enc.extract(x).reshape(-1, enc.n_hidden + 1, enc.layer_dim) for x in signals]
        out[f"{precision}_x_real_time"] = round(seconds / (time.perf_counter() - t), 1)
    a, b = (np.concatenate(frames[p]) for p in ("float32", "bfloat16"))
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    out["cosine_min_per_layer"] = [round(float(c), 4) for c in cos.min(0)]
    out["cosine_mean_per_layer"] = [round(float(c), 4) for c in cos.mean(0)]
    return out


def ssl_speed(corpus: Path, n: int = 20) -> dict:
    """× real time of each SSL architecture at its real size, all layers kept, on this machine's CPU (and
    GPU when there is one), over ``n`` sample utterances."""
    import torch
    import transformers as T

    from mmfer.features.audio import load_audio
    from mmfer.features.ssl import SSLEncoder

    table = read_corpus(corpus).table
    signals = [load_audio(a) for a in table["audio"][:n]]
    seconds = sum(len(x) for x in signals) / 16000
    out = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, kw) in SSL_SIZES.items():
            folder = Path(tmp) / kind
            torch.manual_seed(0)
            if kind == "whisper":
                T.WhisperModel(T.WhisperConfig(**kw)).save_pretrained(folder)
                T.WhisperFeatureExtractor().save_pretrained(folder)
            else:
                cfg_cls, model_cls = {"wav2vec2": (T.Wav2Vec2Config, T.Wav2Vec2Model),
                                      "wavlm": (T.WavLMConfig, T.WavLMModel)}[kind]
                model_cls(cfg_cls(**kw)).save_pretrained(folder)
                T.Wav2Vec2FeatureExtractor().save_pretrained(folder)
            for device in devices:
                enc = SSLEncoder(folder, layers="all", device=device)
                enc.extract(signals[0])
                t = time.perf_counter()
                for x in signals:
                    enc.extract(x)
                dt = time.perf_counter() - t
                out[f"{name}, {device}"] = {"x_real_time": round(seconds / dt, 2), "stored_layers": enc.n_stored,
                                            "gb_per_hour_all_layers": round(enc.bytes_per_second() * 3600 / 1e9, 2)}
    return {"utterances": n, "audio_seconds": round(seconds, 1), "threads": torch.get_num_threads(), "encoders": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="sample corpus folder (made when missing)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    ap.add_argument("--ssl-only", action="store_true", help="measure only the SSL encoders; merge into --out")
    args = ap.parse_args()
    if args.ssl_only:
        corpus = args.corpus or generate(Path(tempfile.mkdtemp(prefix="mmfer-bench-")) / "corpus", progress=False)
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["ssl"] = ssl_speed(corpus)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["ssl"], indent=2))
        return
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
        seconds = time.perf_counter() - t
        result[f"prepare_seconds_{workers}_workers"] = round(seconds, 2)
        result[f"prepare_x_realtime_{workers}_workers"] = round(audio_seconds / seconds, 1)
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
    result["whisper_precision"] = whisper_precision(corpus)
    result["ssl"] = ssl_speed(corpus)
    result["targets"] = {"prepare_x_realtime>=50": result[f"prepare_x_realtime_{cores}_workers"] >= 50}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
