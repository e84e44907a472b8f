"""Training benchmark: utterances/s (forward + backward) for each model on realistic varying lengths,
next to the naive packed-sequence BLSTM on the same batches; optionally the quickstart's wall time and
per-model UA on the sample corpus. Writes JSON (default benchmarks/results/train.json).

    python benchmarks/train.py [--quickstart DIR] [--run-quickstart] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmfer.config import ModelConfig
from mmfer.data import pad
from mmfer.models import MODELS, build_model
from mmfer.models.blstm import BLSTM, PackedBLSTM


def batches(n_batches: int, batch: int, mean_len: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        lengths = np.clip(rng.normal(mean_len, mean_len * 0.35, batch), 20, 3 * mean_len).astype(int)
        out.append(pad([rng.normal(0, 1, (n, dim)).astype(np.float32) for n in lengths]))
    return out


def time_fwd_bwd(fn, data, params) -> float:
    opt = torch.optim.SGD(params, lr=1e-3)
    fn(*data[0]).sum().backward()  # warm-up
    t = time.perf_counter()
    for x, lengths in data:
        opt.zero_grad()
        fn(x, lengths).sum().backward()
        opt.step()
    return time.perf_counter() - t


def blstm_comparison(device: torch.device) -> dict:
    """2-layer BLSTM, hidden 128, batches of 32 x ~450 frames of 65 LLDs (the models issue's setting)."""
    data = [(x.to(device), n.to(device)) for x, n in batches(4, 32, 450, 65)]
    ours = BLSTM(65, 128, 2).to(device)
    packed = PackedBLSTM(65, 128, 2).to(device)
    t_ours = time_fwd_bwd(lambda x, n: ours(x, n)[0], data, ours.parameters())
    t_packed = time_fwd_bwd(packed, data, packed.parameters())
    return {"seconds_per_batch_padded_exact": round(t_ours / len(data), 3),
            "seconds_per_batch_packed": round(t_packed / len(data), 3),
            "speedup": round(t_packed / t_ours, 2)}


DIMS = {"acoustic": 65, "lexical": 384, "functionals": 6373, "sentence": 384, "context": 384}


def model_throughput(device: torch.device) -> dict:
    """Quickstart-sized models (defaults): audio frames reduced as in training, ~12 words per utterance,
    one vector per utterance for the vector streams; every neural model of the registry."""
    cfg = ModelConfig()
    seqs = {"acoustic": batches(6, 32, 300 // cfg.frame_reduction, 65, seed=1),
            "lexical": batches(6, 32, 12, 384, seed=2)}
    out = {}
    for name, spec in MODELS.items():
        if spec.family != "neural":
            continue
        model = build_model(name, DIMS, 4, cfg).to(device).train()
        data = []
        for i in range(6):
            xs, ns = {}, {}
            for k in spec.streams:
                if k in seqs:
                    xs[k], ns[k] = seqs[k][i]
                else:
                    xs[k], ns[k] = torch.randn(32, 1, DIMS[k]), torch.ones(32, dtype=torch.long)
            data.append(({k: v.to(device) for k, v in xs.items()}, {k: v.to(device) for k, v in ns.items()}))

        def fn(xs, ns, model=model):
            return model(xs, ns)["logits"]

        secs = time_fwd_bwd(fn, data, [p for p in model.parameters() if p.requires_grad])
        out[name] = round(32 * len(data) / secs, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quickstart", type=Path, help="read UA from a finished quickstart folder")
    ap.add_argument("--run-quickstart", action="store_true", help="run the quickstart (fresh) and time it")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    result: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        result[dev.type] = {"utterances_per_second": model_throughput(dev), "blstm": blstm_comparison(dev)}
    qs = args.quickstart
    if args.run_quickstart:
        from mmfer.quickstart import quickstart

        qs = Path(tempfile.mkdtemp(prefix="mmfer-qs-")) / "qs"
        t = time.perf_counter()
        quickstart(qs, echo=lambda m: None)
        result["quickstart_wall_seconds"] = round(time.perf_counter() - t, 1)
    if qs:
        result["quickstart_ua"] = {}
        for run in sorted((Path(qs) / "runs").glob("*/summary.json")):
            s = json.loads(run.read_text())
            result["quickstart_ua"][s["model"]] = {"mean": round(s["ua"]["mean"], 4), "std": round(s["ua"]["std"], 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
