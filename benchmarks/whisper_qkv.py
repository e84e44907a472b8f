"""Whisper encoder on the CPU: the attention's query, key and value as one matrix product (the default,
``features.whisper._qkv``) against three, as transformers computes them. One thread (what each `prepare`
worker uses), the same utterances batched as `prepare` batches them, rounds alternating so that the 10-20 %
drift of these machines hits both alike; checks that the frames are the same values. Writes JSON (default
benchmarks/results/whisper_qkv.json).

    python benchmarks/whisper_qkv.py [--corpus CSV] [--utterances 128] [--rounds 6]

Default corpus: RAVDESS from ../shared/data (its first utterances).
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


def separate_layer(layer, x, mask=None):
    """The encoder layer with three projections, the query scaled after its product (transformers' way)."""
    import torch

    f = torch.nn.functional
    attn = layer.self_attn
    b, t, d = x.shape
    h = layer.self_attn_layer_norm(x)
    q = (attn.q_proj(h) * attn.scaling).view(b, t, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
    o = f.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0).transpose(1, 2).reshape(b, t, d)
    x = x + attn.out_proj(o)
    return x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=RAVDESS)
    ap.add_argument("--utterances", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "whisper_qkv.json")
    args = ap.parse_args()
    import soundfile as sf
    import torch

    from mmfer.corpora import read_corpus
    from mmfer.features import whisper

    torch.set_num_threads(1)
    table = read_corpus(args.corpus).table.head(args.utterances)
    signals = [sf.read(a, dtype="float32", always_2d=True)[0].mean(1) for a in table["audio"]]
    enc = whisper.WhisperEncoderFeatures(pad_seconds=0, precision="float32")
    enc.extract_many(signals[:4], ("acoustic", "pooled"))  # load and warm up
    fused_layer = whisper._layer
    variants = {"one product (fused)": fused_layer, "three products": separate_layer}
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    frames = {}
    try:
        for r in range(args.rounds):
            for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                whisper._layer = variants[name]
                t = time.perf_counter()
                frames[name] = enc.extract_many(signals, ("acoustic",))
                seconds[name].append(round(time.perf_counter() - t, 2))
                print(name, seconds[name][-1], "s", flush=True)
    finally:
        whisper._layer = fused_layer
    a, b = (np.concatenate([f["acoustic"] for f in frames[k]]).astype(np.float32) for k in variants)
    audio = sum(len(x) for x in signals) / whisper.SAMPLE_RATE
    mean = {k: float(np.mean(v)) for k, v in seconds.items()}
    result = {"machine": cpu_name(), "threads": 1, "precision": "float32", "corpus": str(args.corpus),
              "utterances": len(signals), "audio_seconds": round(audio, 1), "seconds": seconds,
              "x_real_time": {k: round(audio / v, 1) for k, v in mean.items()},
              "speedup": round(mean["three products"] / mean["one product (fused)"], 3),
              "max_abs_diff": float(np.abs(a - b).max()), "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
