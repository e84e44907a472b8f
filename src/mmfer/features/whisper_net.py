"""The Whisper encoder's modules and log-mel in plain torch, for inference without importing transformers.

Why: ``transformers``' Whisper modelling code takes 2-4 s to import, paid by every `prepare` worker, by
`mmfer predict` and by the page's server before the first utterance; the encoder itself is a few standard
modules. This module holds them under transformers' own parameter names, so the converted folder (a
transformers folder: config.json, model.safetensors; ``features.whisper.converted_encoder``) loads into it
unchanged, and :func:`features.whisper.hidden_states` runs it exactly as it runs transformers'
``WhisperEncoder`` (tests/test_whisper.py checks both, and the log-mel, to the bit). The log-mel follows
``WhisperFeatureExtractor``'s torch path (Hann window, power spectrum, Slaney mel filters, log10, 8 dB floor
below the maximum, (x + 4) / 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

N_FFT, HOP = 400, 160  # Whisper's STFT at 16 kHz: 25 ms windows every 10 ms


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, d // heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)


class Layer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.activation_fn = nn.GELU()
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)


class Encoder(nn.Module):
    """Whisper's encoder: two convolutions, positions, the layers, a final layer norm (its forward is
    ``features.whisper.hidden_states``)."""

    def __init__(self, n_mels: int, d: int, heads: int, ffn: int, n_layers: int, positions: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(positions, d)
        self.layers = nn.ModuleList(Layer(d, heads, ffn) for _ in range(n_layers))
        self.layer_norm = nn.LayerNorm(d)


def load(folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Encoder:
    """The converted encoder folder -> :class:`Encoder` in eval mode, every parameter loaded (strict)."""
    from safetensors.torch import load_file

    c = json.loads((Path(folder) / "config.json").read_text())
    # built on the CPU and overwritten (0.15 s of random initialisation; the meta device would import
    # torch's decompositions first, 1.7 s)
    enc = Encoder(c["num_mel_bins"], c["d_model"], c["encoder_attention_heads"], c["encoder_ffn_dim"],
                  c["encoder_layers"], c["max_source_positions"])
    state = {k: v.to(dtype) for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    enc.load_state_dict(state, strict=True, assign=True)
    return enc.eval().to(device)


def _mel_to_hertz(m: np.ndarray) -> np.ndarray:
    f = 200.0 * m / 3.0
    high = m >= 15.0
    f[high] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (m[high] - 15.0))
    return f


def mel_filters(n_mels: int, sampling_rate: int = 16000) -> np.ndarray:
    """[N_FFT // 2 + 1, n_mels] float64 Slaney mel filter bank from 0 Hz to 8 kHz, area-normalised: the
    matrix ``WhisperFeatureExtractor`` builds (transformers' ``mel_filter_bank``, computed the same way)."""
    mel_max = 15.0 + np.log(8000.0 / 1000.0) * (27.0 / np.log(6.4))  # 8 kHz on the Slaney scale
    mel_freqs = np.linspace(0.0, mel_max, n_mels + 2)
    filter_freqs = _mel_to_hertz(mel_freqs)
    fft_freqs = np.linspace(0, sampling_rate // 2, N_FFT // 2 + 1)
    diff = np.diff(filter_freqs)
    slopes = np.expand_dims(filter_freqs, 0) - np.expand_dims(fft_freqs, 1)
    down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    filters *= np.expand_dims(2.0 / (filter_freqs[2: n_mels + 2] - filter_freqs[:n_mels]), 0)
    return filters


class LogMel:
    """Whisper's log-mel of a 16 kHz signal zero-padded to ``length`` samples: [n_mels, length // HOP]."""

    def __init__(self, n_mels: int):
        self.filters = torch.from_numpy(mel_filters(n_mels)).to(torch.float32)
        self.window = torch.hann_window(N_FFT)

    def __call__(self, x: np.ndarray, length: int) -> np.ndarray:
        w = np.zeros((1, length), np.float32)
        w[0, : min(len(x), length)] = x[:length]
        stft = torch.stft(torch.from_numpy(w), N_FFT, HOP, window=self.window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(self.filters.T @ power, min=1e-10).log10()
        top = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
        return ((torch.maximum(log_spec, top - 8.0) + 4.0) / 4.0)[0].numpy()
