"""The bundled Whisper-base encoder as the acoustic representation: every hidden layer, every 20 ms.

Whisper-base ships with mmfer for recognition, as CTranslate2's ``model.bin``; CTranslate2's own
``encode`` returns only the last layer. So the encoder's named float16 tensors are read straight from
``model.bin`` (the layout CTranslate2's writer uses: ``ctranslate2/specs/model_spec.py``, ``_serialize``)
into a ``transformers`` ``WhisperEncoder`` folder, once, and cached as safetensors beside the joined
recogniser (``mmfer.weights``). It is run by ``features.whisper_net`` (the same modules and values, without
importing transformers). Then all seven hidden states (the embedding and the six layers) are at hand: the
model learns a softmax layer mix over them (``models.nets.LayerMix``), and the GPU path comes with torch.

One pass fills two streams:

* ``acoustic``: the frames, [frames, layers × 512] (float16 in the store), 20 ms hop;
* ``pooled``: the mean and the standard deviation of the frames over the utterance, one vector, for a
  closed-form linear expert (like the openSMILE functionals).

Whisper was trained on 30 s windows. ``pad_seconds`` says how much of that window an utterance sees:
shorter utterances are padded with silence to that length before the log-mel (30 = as Whisper was
trained; 0 = the utterance's own length, positional embeddings sliced), and only the frames of the
speech are kept. Padding costs compute in proportion and changes the representation (measured in
``benchmarks/whisper.py``). Longer than 30 s goes in 30 s windows.

Precision: on the CPU the encoder runs in bfloat16 where the processor computes it natively (AVX-512
BF16 or AMX: about twice float32's speed; per-frame cosine to float32 0.9998-1.0000 on average per
hidden state, 0.89 at worst; measured in ``benchmarks/extract.py``), else in float32; on a GPU in
float16. The precision a store was made with is in its settings, so prediction reproduces it on any
machine (``benchmarks/precision.py``: RAVDESS UA within 0.7 points of float32, not significant).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio, speech_span
from mmfer.features.base import register_extractor, resolve_device
from mmfer.weights import MODEL_BIN_SHA256, WEIGHTS_HINT, WHISPER, bundled_whisper_dir, cache_dir

HOP_SECONDS = 0.02  # one encoder frame per 2 mel frames of 10 ms
WINDOW_SECONDS = 30.0  # Whisper's training window (1,500 encoder frames)
# (padded) audio per batched encoder call: on the CPU one window's worth (the memory of one padded 30 s
# utterance; the fastest of 8-240 s: 1.21x and 1.32x the speed of one call per utterance in two runs, against
# 1.06-1.07x for 240 s; RAVDESS, one thread, benchmarks/whisper_batch.py); a GPU wants more rows per call
BATCH_SECONDS = {"cpu": 30.0, "cuda": 240.0}
CONVERTED = "encoder-safetensors-1"  # the cache subfolder's name: bump when the conversion changes

# CTranslate2's variable type ids (model_spec._dtype_to_type_id)
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX-512 BF16 or AMX); elsewhere torch
    emulates them, slower than float32."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


def resolve_precision(spec: str) -> str:
    """The CPU precision of the encoder: as asked, or 'auto' = bfloat16 where native, else float32."""
    if spec not in PRECISIONS:
        raise MmferError(f"Whisper precision {spec!r}: choose one of {', '.join(PRECISIONS)}")
    if spec != "auto":
        return spec
    return "bfloat16" if native_bfloat16() else "float32"


def read_ctranslate2(path: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The named variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``. Every size is
    checked against the file before it is read, so a damaged file is refused, never over-read."""
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:
        def unpack(fmt: str):
            raw = fh.read(struct.calcsize(fmt))
            if len(raw) != struct.calcsize(fmt):
                raise MmferError(f"{path}: truncated CTranslate2 model ({WEIGHTS_HINT})")
            return struct.unpack(fmt, raw)[0]

        def string() -> str:
            n = unpack("H")
            return fh.read(n)[:-1].decode("utf-8", "replace")

        version = unpack("I")
        if not 1 <= version <= 10:
            raise MmferError(f"{path}: not a CTranslate2 model.bin (binary version {version})")
        spec = string()
        if "Whisper" not in spec:
            raise MmferError(f"{path}: a {spec!r} model, not Whisper")
        unpack("I")  # the spec's revision
        for _ in range(unpack("I")):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype = CT2_DTYPES.get(unpack("B"))
            nbytes = unpack("I")
            if dtype is None or fh.tell() + nbytes > size or nbytes != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                raise MmferError(f"{path}: damaged variable {name!r} in the CTranslate2 model ({WEIGHTS_HINT})")
            if name.startswith(prefix):
                out[name[len(prefix):]] = np.frombuffer(fh.read(nbytes), dtype).reshape(shape)
            else:
                fh.seek(nbytes, os.SEEK_CUR)
    return out


def encoder_state(v: dict[str, np.ndarray]):
    """CTranslate2's encoder variables -> (transformers WhisperConfig, WhisperEncoder state dict). The
    attention's fused query/key/value projection is split again (Whisper's key projection has no bias)."""
    import torch
    from transformers import WhisperConfig

    layers = sorted({int(k.split("/")[0][6:]) for k in v if k.split("/")[0][6:].isdigit()})
    if not layers or "position_encodings/encodings" not in v:
        raise MmferError(f"not a Whisper encoder: no layers or positions in the model ({WEIGHTS_HINT})")
    config = WhisperConfig(d_model=int(v["layer_norm/gamma"].shape[0]), encoder_layers=len(layers),
                           encoder_attention_heads=int(v["num_heads"]),
                           encoder_ffn_dim=int(v["layer_0/ffn/linear_0/weight"].shape[0]),
                           num_mel_bins=int(v["conv1/weight"].shape[1]),
                           max_source_positions=int(v["position_encodings/encodings"].shape[0]))

    def t(name: str):
        return torch.from_numpy(np.array(v[name], np.float16))  # a copy: the buffer is read-only

    sd = {"conv1.weight": t("conv1/weight"), "conv1.bias": t("conv1/bias"), "conv2.weight": t("conv2/weight"),
          "conv2.bias": t("conv2/bias"), "embed_positions.weight": t("position_encodings/encodings"),
          "layer_norm.weight": t("layer_norm/gamma"), "layer_norm.bias": t("layer_norm/beta")}
    for i in layers:
        p, q = f"layer_{i}/", f"layers.{i}."
        qw, kw, vw = torch.chunk(t(p + "self_attention/linear_0/weight"), 3)
        qb, _, vb = torch.chunk(t(p + "self_attention/linear_0/bias"), 3)
        sd.update({q + "self_attn.q_proj.weight": qw, q + "self_attn.q_proj.bias": qb,
                   q + "self_attn.k_proj.weight": kw,
                   q + "self_attn.v_proj.weight": vw, q + "self_attn.v_proj.bias": vb,
                   q + "self_attn.out_proj.weight": t(p + "self_attention/linear_1/weight"),
                   q + "self_attn.out_proj.bias": t(p + "self_attention/linear_1/bias"),
                   q + "self_attn_layer_norm.weight": t(p + "self_attention/layer_norm/gamma"),
                   q + "self_attn_layer_norm.bias": t(p + "self_attention/layer_norm/beta"),
                   q + "final_layer_norm.weight": t(p + "ffn/layer_norm/gamma"),
                   q + "final_layer_norm.bias": t(p + "ffn/layer_norm/beta"),
                   q + "fc1.weight": t(p + "ffn/linear_0/weight"), q + "fc1.bias": t(p + "ffn/linear_0/bias"),
                   q + "fc2.weight": t(p + "ffn/linear_1/weight"), q + "fc2.bias": t(p + "ffn/linear_1/bias")})
    return config, {k: x.contiguous() for k, x in sd.items()}


def source_digest(source: Path) -> str:
    """What identifies a local CTranslate2 Whisper folder: its model.bin's size and time and its config
    (hashing the weights on every start would cost more than the encoding of a short clip). The bundled
    weights are identified by their recorded sha256 instead."""
    st = (source / "model.bin").stat()
    config = (source / "config.json").read_bytes() if (source / "config.json").is_file() else b""
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode() + config).hexdigest()[:12]


def converted_encoder(source: Path, digest: str, cache: Path | None = None) -> Path:
    """The encoder of the CTranslate2 Whisper folder ``source`` (identified by ``digest``) as a
    transformers folder (config.json, model.safetensors) in the cache, converted on first use, atomically."""
    target = (cache or cache_dir()) / f"whisper-encoder-{digest}" / CONVERTED
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from safetensors.torch import save_file

    config, state = encoder_state(read_ctranslate2(source / "model.bin"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"))
        config.to_json_file(str(tmp / "config.json"))
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_encoder(folder: Path, device: str = "cpu", precision: str = "float32"):
    """The converted encoder, in eval mode: float16 on a GPU (float32 when asked), else ``precision``. Its
    modules are ``features.whisper_net``'s (transformers' names and values, without importing transformers:
    seconds saved in every worker and every `mmfer predict`)."""
    from mmfer.features import whisper_net

    return whisper_net.load(folder, device, encoder_dtype(device, precision))


def encoder_dtype(device: str, precision: str):
    """The torch dtype the encoder computes in on ``device`` for a resolved ``precision``."""
    import torch

    if precision == "float32":
        return torch.float32
    return torch.float16 if device == "cuda" else torch.bfloat16


def hidden_states(encoder, mel, lengths=None, depth: int | None = None):
    """All hidden states of the encoder for log-mel ``mel`` [B, n_mels, frames]: a list of [B, T, D]
    (the embedding, then each layer; the last one after the final layer norm, as transformers and
    CTranslate2 return it). The positional embeddings are sliced to the input's length, so shorter inputs
    than Whisper's 30 s need no padding.

    ``depth`` < the number of layers stops after that many layers (states 0..depth, the same values as
    the full pass's: the final layer norm belongs to the last layer only). Why: the encoder's cost is its
    layers', so features that keep only the lower layers need not pay for the upper ones.

    ``lengths`` (mel frames per row, a LongTensor) lets log-mels of different lengths share one call, each
    computed as if alone: the rows are zero beyond their length (as the convolutions' own padding), the
    first convolution's output is zeroed there too (so the second one sees zeros at the edge, as alone),
    and attention ignores a row's padded frames. One call over several utterances makes the encoder
    1.2-1.3x faster on the CPU (more rows per matrix product; ``benchmarks/whisper_batch.py``)."""
    import torch

    x = torch.nn.functional.gelu(encoder.conv1(mel))
    mask = None
    if lengths is not None and bool((lengths < mel.shape[-1]).any()):
        x = x * (torch.arange(x.shape[-1], device=x.device) < lengths[:, None])[:, None, :].to(x.dtype)
        frames = (lengths + 1) // 2  # the stride-2 convolution's output frames of each row
        mask = (torch.arange((x.shape[-1] + 1) // 2, device=x.device) < frames[:, None])[:, None, None, :]
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    states = [x]
    n = len(encoder.layers) if depth is None else min(depth, len(encoder.layers))
    for layer in encoder.layers[:n]:
        x = _layer(layer, x, mask)
        states.append(x)
    if n == len(encoder.layers):
        states[-1] = encoder.layer_norm(x)
    return states


def _qkv(attn):
    """The attention's query, key and value projections as one (weight, bias), the query's scaling folded
    in; made once per layer (on its device and dtype) and kept on the module. Why: one product of three
    times the width instead of three makes the encoder 1.06x faster on one CPU thread, with the same
    values (``benchmarks/whisper_qkv.py``; Whisper's scaling, 1/8, is exact in any float format)."""
    import torch

    fused = getattr(attn, "_mmfer_qkv", None)
    if fused is None or fused[0].device != attn.q_proj.weight.device or fused[0].dtype != attn.q_proj.weight.dtype:
        # ordinary tensors (not inference ones) without a graph, even when called in inference mode
        with torch.inference_mode(False), torch.no_grad():
            k_bias = attn.k_proj.bias if attn.k_proj.bias is not None else torch.zeros_like(attn.q_proj.bias)
            fused = (torch.cat([attn.q_proj.weight * attn.scaling, attn.k_proj.weight, attn.v_proj.weight]),
                     torch.cat([attn.q_proj.bias * attn.scaling, k_bias, attn.v_proj.bias]))
        attn._mmfer_qkv = fused
    return fused


def _layer(layer, x, mask=None):
    """transformers' ``WhisperEncoderLayer.forward`` in inference, with a key mask (True = a frame of the
    row's own speech) for rows of different lengths; the query is scaled before attention, as there (by
    its projection, :func:`_qkv`)."""
    import torch

    f = torch.nn.functional
    attn = layer.self_attn
    b, t, d = x.shape
    h = layer.self_attn_layer_norm(x)
    if all(isinstance(m, torch.nn.Linear) for m in (attn.q_proj, attn.k_proj, attn.v_proj)):
        q, k, v = f.linear(h, *_qkv(attn)).view(b, t, 3, -1, attn.head_dim).permute(2, 0, 3, 1, 4)
    else:  # projections replaced by other callables (benchmarks/int8.py's int8 products): each its own call
        q, k, v = ((p(h) * s).view(b, t, -1, attn.head_dim).transpose(1, 2)
                   for p, s in ((attn.q_proj, attn.scaling), (attn.k_proj, 1.0), (attn.v_proj, 1.0)))
    o = f.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0).transpose(1, 2).reshape(b, t, d)
    x = x + attn.out_proj(o)
    x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
    if x.dtype == torch.float16:  # as transformers: keep float16 finite
        limit = torch.finfo(x.dtype).max - 1000
        x = torch.clamp(x, min=-limit, max=limit)
    return x


def parse_layers(spec: str, n_hidden: int) -> list[int]:
    """The SSL encoders' layer spec ('all', '3,5', '3-6'; ``features.ssl.parse_layers``) plus 'last'; a
    fixed average ('mean:A-B') is refused: the layers are stored side by side or pooled per layer."""
    from mmfer.features.ssl import parse_layers as ssl_layers

    spec = str(spec).strip().lower()
    if spec == "last":
        return [n_hidden]
    idx, averaged = ssl_layers(spec, n_hidden)
    if averaged:
        raise MmferError(f"Whisper layers {spec!r}: use 'all', 'last', a list like '3,6' or a range '2-5' (no "
                         "'mean:', the model mixes the layers itself)")
    return idx


def whisper_source(spec: str) -> str | None:
    """The source an ``--acoustic`` spec names: 'bundled' for 'whisper', the folder of 'whisper:PATH', or
    None when the spec names something else."""
    if spec == "whisper":
        return "bundled"
    if spec.startswith("whisper:") and len(spec) > 8:
        return str(Path(spec[8:]).expanduser().resolve())
    return None


def _layers(frames: np.ndarray, idx: list[int]) -> np.ndarray:
    """frames[:, idx] of contiguous [T, L, D] float32 hidden states, without a copy when ``idx`` is a run of
    consecutive layers (the default keeps all of them: a copy of every frame costs as much as a layer)."""
    if idx == list(range(idx[0], idx[-1] + 1)):
        return frames[:, idx[0]: idx[-1] + 1]
    return frames[:, idx]


@register_extractor
class WhisperEncoderFeatures:
    """Hidden states of a Whisper encoder (the bundled Whisper-base, or a local CTranslate2 Whisper folder)."""

    family = "whisper"
    stream = "acoustic"
    streams = ("acoustic", "pooled")  # one encoder pass fills both
    input = "audio"
    wants_gpu = True
    pass_keys = ("extractor", "name", "source", "model", "pad_seconds", "layers", "pool_layers", "transformers",
                 "sample_rate", "precision", "trim_db")

    def __init__(self, source: str = "bundled", pad_seconds: float = 0.0, layers: str = "all",
                 pool_layers: str = "all", device: str = "auto", kind: str = "acoustic", precision: str = "auto",
                 trim_db: float = 0.0):
        if not 0 <= float(pad_seconds) <= WINDOW_SECONDS:
            raise MmferError(f"Whisper padding {pad_seconds} s: choose 0 (the utterance's own length) to "
                             f"{WINDOW_SECONDS:g} (Whisper's window)")
        self.source = str(source)
        self.pad_seconds = float(pad_seconds)
        self.trim_db = float(trim_db)
        self.layer_spec, self.pool_spec = str(layers), str(pool_layers)
        self.device_spec = device
        self.kind = kind
        self.precision = resolve_precision(precision)
        folder = self.folder
        self.digest = MODEL_BIN_SHA256[:12] if self.source == "bundled" else source_digest(folder)
        config = json.loads((converted_encoder(folder, self.digest) / "config.json").read_text())
        self.n_hidden, self.layer_dim = int(config["encoder_layers"]), int(config["d_model"])
        self.n_mels = int(config["num_mel_bins"])
        self.layers = parse_layers(self.layer_spec, self.n_hidden)
        self.pool_layers = parse_layers(self.pool_spec, self.n_hidden)
        # the encoder runs only as deep as the highest layer either stream keeps (one pass serves both)
        self.depth = max(self.layers + self.pool_layers)
        self.name = WHISPER if self.source == "bundled" else folder.name
        self.hop_seconds = HOP_SECONDS if kind == "acoustic" else None
        self.dim = self.dims[kind]
        self._lock = threading.Lock()

    @property
    def dims(self) -> dict[str, int]:
        return {"acoustic": len(self.layers) * self.layer_dim, "pooled": 2 * len(self.pool_layers) * self.layer_dim}

    @cached_property
    def folder(self) -> Path:
        if self.source == "bundled":
            return bundled_whisper_dir()
        folder = Path(self.source)
        if not (folder / "model.bin").is_file():
            raise MmferError(f"--acoustic whisper:{folder}: no model.bin there; give a local CTranslate2 (faster-"
                             "whisper) Whisper folder, or 'whisper' for the bundled Whisper-base")
        return folder

    @classmethod
    def from_settings(cls, settings: dict):
        # stores made before the precision was recorded were float32
        return cls(settings["source"], settings["pad_seconds"], settings["layers"], settings["pool_layers"],
                   kind=settings["kind"], precision=settings.get("precision", "float32"),
                   trim_db=settings.get("trim_db", 0.0))  # stores made before trimming kept every frame

    @classmethod
    def from_config(cls, features, kind: str = "acoustic"):
        source = whisper_source(features.acoustic)
        # the frames' layers are the acoustic stream's setting only when Whisper fills it (else e.g. hf:PATH's)
        layers = features.ssl_layers if source is not None else "all"
        return cls(source or "bundled", features.whisper_pad, layers, features.pooled_layers, kind=kind,
                   precision=features.whisper_precision, trim_db=features.whisper_trim)

    @staticmethod
    def accepts(features) -> bool:
        return whisper_source(str(features.acoustic)) is not None

    def pass_settings(self) -> dict:
        """What the one encoder pass depends on (the same for both streams it fills: ``pass_keys``)."""
        from importlib.metadata import version  # not transformers itself: seconds to import

        return {"extractor": self.family, "name": self.name, "source": self.source, "model": self.digest,
                "pad_seconds": self.pad_seconds, "layers": self.layer_spec, "pool_layers": self.pool_spec,
                "transformers": version("transformers"), "sample_rate": SAMPLE_RATE, "precision": self.precision,
                # recorded only when used: stores made before the option keep their folders (and stay reused)
                **({"trim_db": self.trim_db} if self.trim_db > 0 else {})}

    def settings(self, kind: str | None = None) -> dict:
        kind = kind or self.kind
        own = ({"layer_indices": self.layers, "stored_layers": len(self.layers), "layer_dim": self.layer_dim,
                "hop_seconds": HOP_SECONDS, "dtype": "float16"} if kind == "acoustic" else
               {"pool_indices": self.pool_layers, "pool": "mean and std over the frames, per layer",
                "hop_seconds": None, "dtype": "float32"})
        return {"kind": kind, **self.pass_settings(), **own, "dim": self.dims[kind]}

    def bytes_per_second(self) -> float:
        """Disk cost of one second of audio in the frames stream (float16)."""
        return self.dims["acoustic"] * 2 / HOP_SECONDS if self.kind == "acoustic" else 0.0

    @cached_property
    def device(self) -> str:
        return resolve_device(self.device_spec)

    @cached_property
    def encoder(self):
        return load_encoder(converted_encoder(self.folder, self.digest), self.device, self.precision)

    @cached_property
    def mel(self):
        from mmfer.features.whisper_net import LogMel

        return LogMel(self.n_mels)

    def windows(self, n: int) -> list[tuple[int, int, int]]:
        """(start, end, padded length) in samples of each encoder window of an n-sample signal."""
        window = int(WINDOW_SECONDS * SAMPLE_RATE)
        pad = int(self.pad_seconds * SAMPLE_RATE)
        out = []
        for start in range(0, max(n, 1), window):
            end = min(n, start + window)
            out.append((start, end, min(window, max(end - start, pad))))
        return out

    def _log_mel(self, x: np.ndarray, length: int) -> np.ndarray:
        """[n_mels, frames] of ``x`` padded with zeros to ``length`` samples (Whisper's log-mel)."""
        return self.mel(x, length)

    def _encode(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """[T, depth + 1, D] float32 hidden states (the embedding and every layer up to ``depth``), contiguous,
        per log-mel; log-mels of different lengths are encoded together, each as if alone
        (:func:`hidden_states`), and cut to their frames."""
        import torch

        dtype = encoder_dtype(self.device, self.precision)
        longest = max(m.shape[-1] for m in mels)
        batch = np.zeros((len(mels), mels[0].shape[0], longest), np.float32)
        for row, m in zip(batch, mels):
            row[:, : m.shape[-1]] = m
        lengths = torch.tensor([m.shape[-1] for m in mels])
        mel = torch.from_numpy(batch).to(self.device, dtype)
        with self._lock, torch.inference_mode():
            states = torch.stack(hidden_states(self.encoder, mel, lengths.to(self.device), self.depth), dim=2)
            states = states.float().cpu().numpy()  # [B, T, L, D]
        return [h[: (n + 1) // 2] for h, n in zip(states, lengths.tolist())]  # a row's first frames: contiguous

    def _frames(self, x: np.ndarray) -> np.ndarray:
        """[frames, depth + 1, D]: the hidden states up to ``depth`` of the speech's frames, window by window."""
        parts = []
        for start, end, length in self.windows(len(x)):
            (h,) = self._encode([self._log_mel(x[start:end], length)])
            parts.append(h[: max(1, math.ceil((end - start) / (HOP_SECONDS * SAMPLE_RATE)))])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def split(self, frames: np.ndarray, kinds=("acoustic", "pooled")) -> dict[str, np.ndarray]:
        """The hidden states of an utterance's frames [T, depth + 1, D] -> the streams asked for."""
        out = {}
        if "acoustic" in kinds:
            out["acoustic"] = _layers(frames, self.layers).reshape(len(frames), -1)
        if "pooled" in kinds:
            sel = _layers(frames, self.pool_layers)
            # mean and E[x^2] accumulated in float64 straight from the float32 frames (no float64 copy)
            mean = sel.mean(axis=0, dtype=np.float64)
            square = np.einsum("tld,tld->ld", sel, sel, dtype=np.float64) / len(sel)
            std = np.sqrt(np.maximum(square - mean * mean, 0.0))
            out["pooled"] = np.concatenate([mean, std], axis=-1).reshape(1, -1).astype(np.float32)
        return out

    def _cut(self, x: np.ndarray) -> np.ndarray:
        """What is encoded: the whole signal, or without its leading and trailing quiet (``trim_db``); the
        frames then start at the cut, which :func:`~mmfer.features.audio.frame_offset` finds again."""
        a, b = speech_span(x, self.trim_db)
        return x[a:b]

    def extract_streams(self, x: np.ndarray, kinds=("acoustic", "pooled")) -> dict[str, np.ndarray]:
        """One encoder pass over a 16 kHz mono signal -> the asked streams' arrays."""
        return self.split(self._frames(self._cut(x)), kinds)

    def extract(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        if sr != SAMPLE_RATE:
            raise MmferError(f"the Whisper encoder takes {SAMPLE_RATE} Hz audio (got {sr})")
        return self.extract_streams(x, (self.kind,))[self.kind]

    def extract_many(self, signals: list[np.ndarray], kinds=None) -> list[dict[str, np.ndarray]]:
        """Like :meth:`extract_streams` for each signal. Signals that fit one window are encoded together,
        each as if alone (its own log-mel; :func:`hidden_states` masks the others' padding), shortest first
        so that a call's rows are of similar length, at most BATCH_SECONDS of (padded) audio per call;
        longer ones window by window."""
        kinds = kinds or (self.kind,)
        signals = [self._cut(x) for x in signals]
        out: list[dict | None] = [None] * len(signals)
        single: list[tuple[int, int]] = []  # (encoded length in samples, index)
        for i, x in enumerate(signals):
            w = self.windows(len(x))
            if len(w) == 1:
                single.append((w[0][2], i))
            else:
                out[i] = self.split(self._frames(x), kinds)
        single.sort()
        budget = BATCH_SECONDS["cuda" if self.device == "cuda" else "cpu"] * SAMPLE_RATE
        k = 0
        while k < len(single):
            n = 1  # rows of this call: sorted, so the last one sets the padded length
            while k + n < len(single) and (n + 1) * single[k + n][0] <= budget:
                n += 1
            chunk = single[k:k + n]
            states = self._encode([self._log_mel(signals[i], length) for length, i in chunk])
            for (_, i), h in zip(chunk, states):
                keep = max(1, math.ceil(len(signals[i]) / (HOP_SECONDS * SAMPLE_RATE)))
                out[i] = self.split(h[:keep], kinds)
            k += n
        return out  # type: ignore[return-value]

    def __call__(self, audio_path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
        return self.extract(load_audio(audio_path, start=start, end=end))
