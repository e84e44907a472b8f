"""Modality fusion: the Gated Multimodal Unit, and the concat / late baselines."""

from __future__ import annotations

import torch
from torch import nn


class GMU(nn.Module):
    """h = z * tanh(W_a a) + (1 - z) * tanh(W_l l),  z = sigmoid(W_z [a; l])  (Arevalo et al., 2017).

    z is the acoustic share, per hidden unit; its mean over units is reported as the modality gate.
    """

    def __init__(self, audio_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.w_a = nn.Linear(audio_dim, dim, bias=False)
        self.w_l = nn.Linear(text_dim, dim, bias=False)
        self.w_z = nn.Linear(audio_dim + text_dim, dim, bias=False)
        self.output_dim = dim

    def forward(self, a: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: E741
        z = torch.sigmoid(self.w_z(torch.cat([a, l], dim=-1)))
        return z * torch.tanh(self.w_a(a)) + (1 - z) * torch.tanh(self.w_l(l)), z


class ConcatFusion(nn.Module):
    def __init__(self, audio_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(audio_dim + text_dim, dim)
        self.output_dim = dim

    def forward(self, a: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: E741
        return torch.tanh(self.proj(torch.cat([a, l], dim=-1))), None
