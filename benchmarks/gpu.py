"""GPU checks, for a machine with CUDA (run where one is lent; results in benchmarks/results/gpu.json):

1. SSL encoders (issue 14): each architecture, as tiny randomly initialised models (the tests' sizes, plus
   layer-norm variants, the kind that batches), extracts the same 48 signals on CPU (float32) and on the
   GPU (float16): the features must agree to float16 tolerance, and batched GPU extraction is timed
   against the CPU (all its cores, and 2 threads like the development machine).
2. Training (issue 15): one fold of ``mmmf`` on a synthetic store on the GPU with mixed precision (bf16,
   ``train.amp: auto``) against the same fold in float32 on the GPU and on the CPU; then the same fold
   through ``mmfer-torchrun --nproc_per_node 1 ... --distributed`` (DDP over NCCL).

    python benchmarks/gpu.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ARCHS = ["wav2vec2", "wavlm", "hubert", "data2vec-audio", "whisper"]
LAYER_NORM = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}  # as the large models are built


def tiny_models(base: Path) -> dict[str, Path]:
    """The tests' tiny models, and layer-norm variants (those batch several utterances per call)."""
    import transformers as T

    from test_pretrained import TINY, _save_audio_model

    out = {k: _save_audio_model(k, base / k) for k in ARCHS}
    for kind, (cfg_cls, model_cls) in {"wav2vec2-ln": (T.Wav2Vec2Config, T.Wav2Vec2Model),
                                       "wavlm-ln": (T.WavLMConfig, T.WavLMModel),
                                       "hubert-ln": (T.HubertConfig, T.HubertModel)}.items():
        torch.manual_seed(0)
        model_cls(cfg_cls(**TINY, **LAYER_NORM)).save_pretrained(base / kind)
        T.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(base / kind)
        out[kind] = base / kind
    return out


def signals(n: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals, 2-8 s at 16 kHz: harmonic tones with a moving pitch, in noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = np.arange(int(16000 * rng.uniform(2, 8))) / 16000
        f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        out.append((0.1 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up (model load, kernels)
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def base_size_models(base: Path) -> dict[str, Path]:
    """Random weights at the real base size (12 layers of 768, 95M parameters), layer-norm so they batch:
    what the speed of a real encoder looks like, where the tiny ones measure only overheads."""
    import transformers as T

    out = {}
    for kind, (cfg_cls, model_cls) in {"wav2vec2-base-size-ln": (T.Wav2Vec2Config, T.Wav2Vec2Model),
                                       "wavlm-base-size-ln": (T.WavLMConfig, T.WavLMModel)}.items():
        torch.manual_seed(0)
        model_cls(cfg_cls(**LAYER_NORM)).save_pretrained(base / kind)
        T.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(base / kind)
        out[kind] = base / kind
    return out


def ssl_checks(base: Path, size: str = "tiny") -> dict:
    from mmfer.features.ssl import SSLEncoder

    xs = signals() if size == "tiny" else signals(16, seed=1)
    audio_seconds = sum(len(x) for x in xs) / 16000
    results = {}
    models = tiny_models(base) if size == "tiny" else base_size_models(base)
    for name, folder in models.items():
        cpu = SSLEncoder(folder, layers="all", device="cpu")
        gpu = SSLEncoder(folder, layers="all", device="cuda")
        a, b = cpu.extract_many(xs), gpu.extract_many(xs)
        scale = max(float(np.abs(x).max()) for x in a)
        err = max(float(np.abs(x - y).max()) for x, y in zip(a, b)) / scale
        cos = min(float((x * y).sum(1).min() / 1) for x, y in zip(
            [v / np.linalg.norm(v, axis=1, keepdims=True) for v in a],
            [v / np.linalg.norm(v, axis=1, keepdims=True) for v in b]))
        t_gpu = timed(lambda g=gpu: g.extract_many(xs))
        t_cpu = timed(lambda c=cpu: c.extract_many(xs), repeat=1)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        t_cpu2 = timed(lambda c=cpu: c.extract_many(xs), repeat=1)
        torch.set_num_threads(threads)
        results[name] = {
            "batched": gpu.batches, "frames_equal": all(len(x) == len(y) for x, y in zip(a, b)),
            "max_abs_error_relative": round(err, 5), "min_frame_cosine": round(cos, 5),
            "agree_to_float16_tolerance": bool(err < 2e-2 and cos > 0.999),
            "gpu_x_real_time": round(audio_seconds / t_gpu, 1),
            "cpu_x_real_time": round(audio_seconds / t_cpu, 1), "cpu_threads": threads,
            "cpu_2_threads_x_real_time": round(audio_seconds / t_cpu2, 1),
            "speedup_vs_cpu": round(t_cpu / t_gpu, 1), "speedup_vs_2_threads": round(t_cpu2 / t_gpu, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
    return {"signals": len(xs), "audio_seconds": round(audio_seconds, 1), "models": results}


def training_checks(base: Path) -> dict:
    from mmfer.config import load_config
    from mmfer.features.store import FeatureStore
    from mmfer.training.fold import train_fold
    from mmfer.training.folds import make_folds
    from synthetic_store import make_store

    store_path = make_store(base / "store", per_speaker=96, frames=(200, 800))
    store = FeatureStore(store_path)
    classes = list(store.corpus.labels)
    fold = make_folds(store.corpus.table, 2)[0]
    out = {}
    for name, over in (("gpu_bf16", {"device": "cuda", "amp": "auto"}), ("gpu_fp32", {"device": "cuda", "amp": "off"}),
                       ("cpu_fp32", {"device": "cpu", "amp": "auto"})):
        cfg = load_config(None, {"train": {"max_epochs": 10, "patience": 10, **over}})
        t = time.perf_counter()
        m = train_fold(store, fold, "mmmf", cfg, classes, base / f"run-{name}", progress=False).metrics
        out[name] = {"seconds": round(time.perf_counter() - t, 2), "ua": round(m["ua"], 4),
                     "epochs": sum(1 for h in m["history"] if h["epoch"] > 0),
                     "first_loss": round(m["history"][1]["train_loss"], 4) if len(m["history"]) > 1 else None,
                     "last_loss": round(m["history"][-1]["train_loss"], 4)}
        print(name, json.dumps(out[name]), flush=True)
    cfg_file = base / "ddp.yaml"
    cfg_file.write_text("train: {max_epochs: 10, patience: 10, device: cuda}\n")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mmfer.training.launch", "--nproc_per_node", "1", "--master_port",
                        "29611", "-m", "mmfer", "cv", str(store_path), "--model", "mmmf", "--distributed", "--fold",
                        fold.name, "--out", str(base / "run-ddp"), "--config", str(cfg_file)],
                       capture_output=True, text=True, env={**os.environ})
    ddp = {"returncode": r.returncode, "seconds": round(time.perf_counter() - t, 2)}
    if r.returncode == 0:
        m = json.loads((base / "run-ddp" / "fold-1" / "metrics.json").read_text())
        ddp.update(ua=round(m["ua"], 4), epochs=sum(1 for h in m["history"] if h["epoch"] > 0))
    else:
        ddp["log"] = [line for line in r.stderr.splitlines() if "error" in line.lower()][:8]
    out["ddp_nccl_1_gpu"] = ddp
    print("ddp", json.dumps(ddp), flush=True)
    return {"store": {"utterances": len(store.corpus.table), "frames_per_utterance": "200-800"}, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    ap.add_argument("--skip", default="", help="comma-separated: ssl, base, training")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: these checks need a GPU")
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        if "ssl" not in args.skip:
            result["ssl"] = ssl_checks(Path(tmp) / "models")
        if "base" not in args.skip:
            result["ssl_base_size"] = ssl_checks(Path(tmp) / "base-models", "base")
        if "training" not in args.skip:
            result["training"] = training_checks(Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
