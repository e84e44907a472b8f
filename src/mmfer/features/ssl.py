"""Self-supervised speech encoders from a local Hugging Face folder (``--acoustic hf:PATH``).

wav2vec 2.0, HuBERT, WavLM, data2vec-audio (``AutoModel`` + ``AutoFeatureExtractor``) and the Whisper
encoder (``WhisperModel.encoder``) give one hidden state per 20 ms for every layer. Which layers are kept
is a setting (``features.ssl_layers``): all of them (the model then learns a softmax-weighted sum, as in
SUPERB), a list, or a fixed average of a range (stored as one layer). Frames are stored as float16,
[frames, layers × dim]; ``features.ssl_pool: mean`` stores one utterance vector instead.

Never downloads and never runs code from the folder (``local_files_only``, ``trust_remote_code=False``).
Long utterances go through the encoder in chunks (20 s, 1 s of context on each side, dropped again) so
memory stays bounded; Whisper's encoder always sees 30 s windows and its frames past the audio are cut.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio
from mmfer.features.base import register_extractor, resolve_device

HOP_SECONDS = 0.02  # every supported encoder: 320 samples at 16 kHz per output frame
CHUNK_SECONDS = 20.0
CONTEXT_SECONDS = 1.0
BATCH_SECONDS = 160.0  # padded audio per batched encoder call (8 utterances of 20 s)
AUDIO_MODEL_TYPES = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper", "wav2vec2-conformer", "unispeech",
                     "unispeech-sat", "sew", "sew-d"}


def parse_layers(spec: str, n_hidden: int) -> tuple[list[int], bool]:
    """'all' → every hidden state (0 = the feature projection, n = the last layer); '3,6,9' → those;
    'mean:6-9' → the average of 6..9 (one stored layer). Returns (indices, averaged)."""
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(n_hidden + 1)), False
    averaged = spec.startswith("mean:")
    body = spec[5:] if averaged else spec
    try:
        if "-" in body:
            a, b = (int(x) for x in body.split("-", 1))
            idx = list(range(a, b + 1))
        else:
            idx = [int(x) for x in body.split(",") if x.strip()]
    except ValueError:
        raise MmferError(f"--layers {spec!r}: use 'all', a list like '3,6,9', a range '6-9' or 'mean:6-9'") from None
    bad = [i for i in idx if not 0 <= i <= n_hidden]
    if not idx or bad:
        raise MmferError(f"--layers {spec!r}: this encoder has hidden states 0-{n_hidden}")
    return idx, averaged


def hf_source(spec: str) -> Path | None:
    """The folder of an ``hf:PATH`` spec, or None when the spec names something else."""
    return Path(spec[3:]).expanduser() if spec.startswith("hf:") else None


@register_extractor
class SSLEncoder:
    family = "hf-audio"
    wants_gpu = True  # a Ray shard task asks for a GPU when the cluster has one
    stream = "acoustic"
    input = "audio"

    def __init__(self, source: str | Path, layers: str = "all", pool: str = "none", device: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.source = Path(source).expanduser().resolve()
        if not (self.source / "config.json").is_file():
            raise MmferError(f"--acoustic hf:{source}: no config.json there; give a local Hugging Face audio "
                             "encoder folder (mmfer never downloads models)")
        try:
            self.config = AutoConfig.from_pretrained(str(self.source), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise MmferError(f"--acoustic hf:{source}: not loadable ({str(err).splitlines()[0][:120]})") from None
        if self.config.model_type not in AUDIO_MODEL_TYPES:
            raise MmferError(f"--acoustic hf:{source}: a '{self.config.model_type}' model is not an audio encoder "
                             f"(supported: {', '.join(sorted(AUDIO_MODEL_TYPES))})")
        self.whisper = self.config.model_type == "whisper"
        n_hidden = self.config.encoder_layers if self.whisper else self.config.num_hidden_layers
        self.layer_spec = layers
        self.layers, self.averaged = parse_layers(layers, n_hidden)
        if pool not in ("none", "mean"):
            raise MmferError(f"--pool {pool!r}: 'none' (frames) or 'mean' (one vector per utterance)")
        self.pool = pool
        self.n_stored = 1 if self.averaged else len(self.layers)
        self.layer_dim = int(self.config.d_model if self.whisper else self.config.hidden_size)
        self.dim = self.n_stored * self.layer_dim
        self.name = self.source.name
        self.hop_seconds = None if pool == "mean" else HOP_SECONDS
        self.device_spec = device

    @classmethod
    def from_settings(cls, settings: dict):
        return cls(settings["source"], settings["layers"], settings["pool"])

    @classmethod
    def from_config(cls, features):
        return cls(hf_source(features.acoustic), features.ssl_layers, features.ssl_pool)

    @staticmethod
    def accepts(features) -> bool:
        return str(features.acoustic).startswith("hf:")

    def settings(self) -> dict:
        from importlib.metadata import version  # not transformers itself: seconds to import

        digest = hashlib.sha1((self.source / "config.json").read_bytes()).hexdigest()[:12]
        weights = sorted(p.name for p in self.source.glob("*.safetensors")) or sorted(
            p.name for p in self.source.glob("*.bin"))
        return {"kind": self.stream, "extractor": self.family, "name": self.name, "source": str(self.source),
                "config_sha1": digest, "weights": weights, "transformers": version("transformers"),
                "layers": self.layer_spec, "layer_indices": self.layers, "averaged": self.averaged,
                "stored_layers": self.n_stored, "layer_dim": self.layer_dim, "pool": self.pool,
                "sample_rate": SAMPLE_RATE, "hop_seconds": self.hop_seconds, "dim": self.dim, "dtype": "float16"}

    def bytes_per_second(self) -> float:
        """Disk cost of one second of audio (float16)."""
        return 0.0 if self.pool == "mean" else self.dim * 2 / HOP_SECONDS

    @cached_property
    def device(self) -> str:
        return resolve_device(self.device_spec)

    @cached_property
    def processor(self):
        from transformers import AutoFeatureExtractor

        try:
            return AutoFeatureExtractor.from_pretrained(str(self.source), local_files_only=True,
                                                        trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise MmferError(f"{self.source}: no feature extractor config (preprocessor_config.json): "
                             f"{str(err).splitlines()[0][:100]}") from None

    @cached_property
    def model(self):
        import torch
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(self.source), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise MmferError(f"{self.source}: weights not loadable ({str(err).splitlines()[0][:120]})") from None
        if self.whisper:
            model = model.encoder
        model = model.eval().to(self.device)
        if self.device == "cuda":
            model = model.to(torch.float16)
        return model

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        """[frames, n_stored * layer_dim] for one chunk (float32)."""
        import torch

        window = 30.0 if self.whisper else None
        inputs = self.processor(x, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        key = "input_features" if self.whisper else "input_values"
        values = inputs[key].to(self.device)
        if self.device == "cuda":
            values = values.to(torch.float16)
        with torch.inference_mode():
            out = self.model(values, output_hidden_states=True)
        states = torch.stack([out.hidden_states[i][0] for i in self.layers]).float()  # [L, T, D]
        if window:
            states = states[:, : max(1, math.ceil(len(x) / (HOP_SECONDS * SAMPLE_RATE)))]
        if self.averaged:
            states = states.mean(dim=0, keepdim=True)
        return states.permute(1, 0, 2).reshape(states.shape[1], -1).cpu().numpy()

    def extract(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """[frames, dim] float32 (stored as float16); one row when pooled."""

        if sr != SAMPLE_RATE:
            raise MmferError(f"SSL encoders take {SAMPLE_RATE} Hz audio (got {sr})")
        chunk = int((28.0 if self.whisper else CHUNK_SECONDS) * SAMPLE_RATE)
        ctx = 0 if self.whisper else int(CONTEXT_SECONDS * SAMPLE_RATE)
        hop = int(HOP_SECONDS * SAMPLE_RATE)
        parts = []
        for start in range(0, max(len(x), 1), chunk):
            lo = max(0, start - ctx)
            piece = x[lo: min(len(x), start + chunk + ctx)]
            h = self._hidden(piece)
            skip = (start - lo) // hop
            keep = max(1, math.ceil(min(chunk, len(x) - start) / hop))
            parts.append(h[skip: skip + keep])
        frames = np.concatenate(parts).astype(np.float32)
        if self.pool == "mean":
            frames = frames.mean(axis=0, keepdims=True)
        return frames

    @property
    def batches(self) -> bool:
        """Several utterances per encoder call only where padding cannot change the result: encoders that
        take an attention mask (layer-norm feature encoders, e.g. the large models). Group-norm ones
        (wav2vec 2.0 / HuBERT base) normalise over time, padding included, so they go one at a time."""
        return (not self.whisper and getattr(self.config, "feat_extract_norm", "group") == "layer"
                and bool(getattr(self.processor, "return_attention_mask", False)))

    def extract_many(self, signals: list[np.ndarray]) -> list[np.ndarray]:
        """Like :meth:`extract` for each signal, batched by length (similar lengths together, at most
        BATCH_SECONDS of padded audio per call) where :attr:`batches` allows it."""
        import torch

        out: list[np.ndarray | None] = [None] * len(signals)
        chunk = int(CHUNK_SECONDS * SAMPLE_RATE)
        short = sorted((i for i, x in enumerate(signals) if len(x) <= chunk), key=lambda i: len(signals[i]))
        if not self.batches:
            short = []
        for i in set(range(len(signals))) - set(short):
            out[i] = self.extract(signals[i])
        group: list[int] = []
        for i in [*short, None]:
            if i is not None and (len(group) + 1) * len(signals[i]) <= BATCH_SECONDS * SAMPLE_RATE:
                group.append(i)
                continue
            if group:
                inputs = self.processor([signals[j] for j in group], sampling_rate=SAMPLE_RATE, padding=True,
                                        return_attention_mask=True, return_tensors="pt")
                values = inputs["input_values"].to(self.device)
                if self.device == "cuda":
                    values = values.to(torch.float16)
                with torch.inference_mode():
                    hidden = self.model(values, attention_mask=inputs["attention_mask"].to(self.device),
                                        output_hidden_states=True).hidden_states
                lengths = self.model._get_feat_extract_output_lengths(
                    torch.tensor([len(signals[j]) for j in group])).tolist()
                states = torch.stack([hidden[k] for k in self.layers]).float()  # [L, B, T, D]
                if self.averaged:
                    states = states.mean(dim=0, keepdim=True)
                for b, j in enumerate(group):
                    s = states[:, b, : max(1, int(lengths[b]))]
                    frames = s.permute(1, 0, 2).reshape(s.shape[1], -1).cpu().numpy()
                    out[j] = frames.mean(axis=0, keepdims=True) if self.pool == "mean" else frames
            group = [i] if i is not None else []
        return out  # type: ignore[return-value]

    def __call__(self, audio_path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
        return self.extract(load_audio(audio_path, start=start, end=end))
