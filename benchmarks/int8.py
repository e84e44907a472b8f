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
* ``feed-forward only``: the two feed-forward products in int8, attention in float32.

For each: × real time of the encoder, one thread, against float32 in the same run, and the cosine of each
frame's hidden states to float32 (mean, 0.1 % quantile and minimum per hidden state), and of the pooled
vector (mean and std over the frames, centred on the utterances' mean) to float32's.

    python benchmarks/int8.py [--n 60] [--out FILE]
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
        for name, (where, topk) in VARIANTS.items():
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
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
