"""Would int8 matrix products make the Whisper encoder cheap enough on a CPU without native bfloat16?
(issue 25's `prepare` >= 50x; on such a CPU the encoder runs in float32 and is most of `prepare`).
Writes benchmarks/results/int8.json.

Each encoder layer is recomputed here from its weights (checked: with every product in float32 it gives
the transformers encoder's states exactly), with its linear products in int8 through torch's ``_int_mm``
(VNNI on x86): weights per output channel, activations per frame, both symmetric, the query/key/value
products fused into one. Variants:

* ``all``: every product of every layer in int8;
* ``all, top-8 channels in float32``: the 8 input channels with the largest values in each call are taken
  out of the int8 product and added back in float32 (LLM.int8()'s decomposition, channels chosen per call);
* ``feed-forward only``: the two feed-forward products in int8, attention in float32;
* ``fused``: the encoder's own code path (``features.whisper.hidden_states``) with its linear modules
  swapped: torch's fused dynamic int8 product (``torch.ops.quantized.linear_dynamic``, fbgemm: activations
  quantised per call, over all frames, inside the kernel, dequantised there too) for every product but the
  second feed-forward one, which stays per frame (``_int_mm`` as above): its input (after the GELU) is
  where per-call scales lost most while this variant was chosen (the pooled vector's fidelity fell by about
  a tenth with it per call).
  The unfused ``_int_mm`` path spends as long quantising and dequantising around the product as in it.

For each: × real time of the encoder, one thread, against float32 in the same run, and the cosine of each
frame's hidden states to float32 (mean, 0.1 % quantile and minimum per hidden state), and of the pooled
vector (mean and std over the frames, centred on the utterances' mean) to float32's.

``--end-to-end DIR``: for float32 and ``fused``, the default RAVDESS store (`prepare`, 2 workers, timed) and
the 6-fold `cv` of ``audio-whisper-linear`` and ``audio`` on it (benchmarks/real.py's protocol), the
encoder swapped in every worker; added to the JSON as ``end_to_end``. About 12 minutes on 2 cores.

    python benchmarks/int8.py [--n 60] [--end-to-end DIR] [--out FILE]
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

from opensmile_calls import cpu_name  # noqa: E402  (benchmarks/opensmile_calls.py)

RAVDESS = HERE.parent.parent / "shared" / "data" / "ravdess" / "manifest.csv"
VARIANTS = {"float32 (recomputed)": ("none", 0), "all": ("all", 0), "all, top-8 channels in float32": ("all", 8),
            "feed-forward only": ("mlp", 0)}


def int8_linear(weight, bias, topk: int):
    """x [T, K] -> x W^T + b with int8 products (see the module docstring)."""
    import torch

    w = weight.detach().float()
    scale = w.abs().amax(1).clamp(min=1e-8) / 127.0
    wq = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).t().contiguous()
    wt, b = w.t().contiguous(), bias.detach().float()

    def apply(x):
        if topk:
            idx = x.abs().amax(0).topk(topk).indices
            kept, x = x[:, idx], x.index_fill(1, idx, 0.0)
        step = x.abs().amax(1, keepdim=True).clamp_(min=1e-8).div_(127.0)
        y = torch.addcmul(b, torch._int_mm((x / step).round_().to(torch.int8), wq).float().mul_(step), scale)
        return y.addmm_(kept, wt[idx]) if topk else y

    return apply


class FramewiseInt8:
    """A linear module's product in int8 through ``_int_mm``, activations per frame (``int8_linear``), for
    inputs of any leading shape."""

    def __init__(self, linear):
        import torch

        self.n = linear.out_features
        bias = linear.bias if linear.bias is not None else torch.zeros(self.n)
        self.apply = int8_linear(linear.weight, bias, 0)

    def __call__(self, x):
        return self.apply(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], self.n)


class FusedInt8:
    """A linear module as torch's fused dynamic int8 product (fbgemm): weights per output channel,
    activations per call, quantisation and dequantisation inside the kernel."""

    def __init__(self, linear):
        import torch

        w = linear.weight.detach().float()
        self.n = w.shape[0]
        scale = w.abs().amax(1).clamp(min=1e-8) / 127.0
        qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(self.n, dtype=torch.long), 0, torch.qint8)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.n)
        self.packed = torch.ops.quantized.linear_prepack(qw, bias)

    def __call__(self, x):
        import torch

        return torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]), self.packed, False).view(
            *x.shape[:-1], self.n)


def fused_encoder(encoder):
    """A copy of the encoder whose products are int8 (the ``fused`` variant: see the module docstring)."""
    import copy
    import warnings

    warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")  # torch's deprecation of qint8 tensors
    enc = copy.deepcopy(encoder)
    for layer in enc.layers:
        swaps = {(layer.self_attn, n): FusedInt8 for n in ("q_proj", "k_proj", "v_proj", "out_proj")}
        swaps.update({(layer, "fc1"): FusedInt8, (layer, "fc2"): FramewiseInt8})
        for (owner, name), make in swaps.items():
            wrapped = make(getattr(owner, name))
            del owner._modules[name]  # a plain callable in the module's place (forward calls it by name)
            object.__setattr__(owner, name, wrapped)
    return enc


def float_linear(weight, bias):
    import torch

    w, b = weight.detach().float(), bias.detach().float()
    return lambda x: torch.nn.functional.linear(x, w, b)


def layer_fn(layer, where: str, topk: int):
    """One Whisper encoder layer as a function of one utterance's [T, D] states."""
    import torch

    F = torch.nn.functional
    a = layer.self_attn
    heads, head_dim, scaling = a.num_heads, a.head_dim, a.scaling

    def make(w, b, quantised):
        return int8_linear(w, b, topk) if quantised else float_linear(w, b)

    qkv = make(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
               torch.cat([a.q_proj.bias, torch.zeros_like(a.q_proj.bias), a.v_proj.bias]), where == "all")
    out = make(a.out_proj.weight, a.out_proj.bias, where == "all")
    fc1 = make(layer.fc1.weight, layer.fc1.bias, where in ("all", "mlp"))
    fc2 = make(layer.fc2.weight, layer.fc2.bias, where in ("all", "mlp"))
    ln1, ln2 = layer.self_attn_layer_norm, layer.final_layer_norm

    def forward(x):
        t, d = x.shape
        h = qkv(ln1(x)).view(t, 3, heads, head_dim).permute(1, 2, 0, 3)
        o = F.scaled_dot_product_attention(h[0] * scaling, h[1], h[2], scale=1.0).transpose(0, 1).reshape(t, d)
        x = x + out(o)
        return x + fc2(F.gelu(fc1(ln2(x))))

    return forward


def states(encoder, layers, mel):
    """[T, 7, D] hidden states of one log-mel [1, n_mels, frames] (as features.whisper.hidden_states)."""
    import torch

    F = torch.nn.functional
    x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).permute(0, 2, 1)[0]
    x = x + encoder.embed_positions.weight[: x.shape[0]]
    out = [x]
    for layer in layers:
        x = layer(x)
        out.append(x)
    out[-1] = encoder.layer_norm(x)
    return torch.stack(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="RAVDESS utterances (every k-th of the manifest)")
    ap.add_argument("--end-to-end", type=Path, metavar="DIR", help="also prepare and cross-validate RAVDESS here")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8.json")
    a = ap.parse_args()
    import torch

    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio
    from mmfer.features.whisper import WhisperEncoderFeatures, hidden_states

    torch.set_num_threads(1)
    audio = read_corpus(RAVDESS).table["audio"].tolist()
    signals = [load_audio(p) for p in audio[::max(1, len(audio) // a.n)][:a.n]]
    seconds = sum(map(len, signals)) / 16000
    ext = WhisperEncoderFeatures(precision="float32")
    encoder = ext.encoder
    mels = [torch.from_numpy(ext._log_mel(x, len(x)))[None] for x in signals]

    def timed(fn):
        fn(mels[0])
        t = time.perf_counter()
        out = [fn(m) for m in mels]
        return time.perf_counter() - t, out

    def pooled(h):
        return torch.cat([h.mean(0), h.std(0)], -1).flatten()

    result = {"machine": cpu_name(), "platform": platform.machine(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "utterances": len(signals), "audio_seconds": round(seconds, 1),
              "threads": 1, "variants": {}}
    with torch.inference_mode():
        base_s, ref = timed(lambda m: torch.stack(hidden_states(encoder, m), 2)[0])
        pf = torch.stack([pooled(h) for h in ref])
        mu = pf.mean(0)
        result["float32_x_real_time"] = round(seconds / base_s, 1)
        fused = fused_encoder(encoder)
        for name, (where, topk) in {**VARIANTS, "fused": (None, 0)}.items():
            if where is None:
                s, got = timed(lambda m: torch.stack(hidden_states(fused, m), 2)[0])
            else:
                layers = [layer_fn(layer, where, topk) for layer in encoder.layers]
                s, got = timed(lambda m, layers=layers: states(encoder, layers, m))
            cos = torch.cat([torch.nn.functional.cosine_similarity(r, g, dim=-1) for r, g in zip(ref, got)])
            pq = torch.stack([pooled(h) for h in got])
            pc = torch.nn.functional.cosine_similarity(pf - mu, pq - mu, dim=-1)
            result["variants"][name] = {
                "x_real_time": round(seconds / s, 1), "speed_vs_float32": round(base_s / s, 2),
                "frame_cosine_mean": [round(float(v), 4) for v in cos.mean(0)],
                "frame_cosine_q001": [round(float(v), 3) for v in cos.quantile(0.001, dim=0)],
                "frame_cosine_min": [round(float(v), 3) for v in cos.min(0).values],
                "pooled_centred_cosine_median": round(float(pc.median()), 4),
                "pooled_centred_cosine_min": round(float(pc.min()), 4)}
            print(name, json.dumps(result["variants"][name]), flush=True)
    if a.end_to_end:
        result["end_to_end"] = end_to_end(a.end_to_end)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")


def end_to_end(work: Path) -> dict:
    """float32 and ``fused``: RAVDESS's default store (timed) and the 6-fold UA of the Whisper probe and of
    ``audio`` on it. The swapped encoder reaches the workers through ``features.whisper.load_encoder``
    (they fork from this process)."""
    import shutil

    import soundfile as sf
    import torch

    import mmfer.features.whisper as whisper
    from mmfer.config import FeatureConfig, load_config
    from mmfer.corpora import read_corpus
    from mmfer.features import extractors
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    torch.set_num_threads(2)
    load = whisper.load_encoder
    audio_seconds = sum(sf.info(p).duration for p in read_corpus(RAVDESS).table["audio"])
    out = {"corpus": str(RAVDESS), "audio_seconds": round(audio_seconds, 1),
           "protocol": "kfold-speaker, 6 folds (as benchmarks/real.py)"}
    for name in ("float32", "fused"):
        whisper.load_encoder = load if name == "float32" else (lambda *a, **k: fused_encoder(load(*a, **k)))
        store = work / f"ravdess-{name}"
        shutil.rmtree(store, ignore_errors=True)
        extractors._CACHE.clear()  # no encoder built before the swap (the workers fork from this process)
        t = time.perf_counter()
        prepare(RAVDESS, store, features=FeatureConfig(streams=["acoustic", "functionals", "pooled"]),
                progress=False, warn=lambda m: None)
        seconds = time.perf_counter() - t
        row = {"prepare_seconds": round(seconds, 1), "prepare_x_real_time": round(audio_seconds / seconds, 1)}
        for model in ("audio-whisper-linear", "audio"):
            cfg = load_config(None, {"train": {"protocol": "kfold-speaker", "folds": 6, "threads": 2}})
            s = run_cv(store, model, cfg, store / "runs" / model, progress=False, echo=lambda m: None)
            row[model] = {"ua": round(100 * s["ua"]["mean"], 1), "ua_std": round(100 * s["ua"]["std"], 1),
                          "seconds_per_fold": round(s["seconds_per_fold"]["mean"], 1)}
        out[name] = row
        print(name, json.dumps(row), flush=True)
    whisper.load_encoder = load
    return out


if __name__ == "__main__":
    main()
