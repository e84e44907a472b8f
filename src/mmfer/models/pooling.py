"""Pooling heads: a BLSTM's step outputs -> one utterance vector (plus where it looked)."""

from __future__ import annotations

import torch
from torch import nn


class ContextAttention(nn.Module):
    """Context-based attention: a_t = softmax_t(v^T tanh(W h_t)), u = sum_t a_t h_t.

    ``heads`` > 1 learns several context vectors v ("multi-focus") and concatenates their pooled vectors.
    Padded steps get exactly zero weight, so they change nothing.
    """

    def __init__(self, dim: int, attention_dim: int = 64, heads: int = 1):
        super().__init__()
        self.proj = nn.Linear(dim, attention_dim)
        self.context = nn.Linear(attention_dim, heads, bias=False)
        self.output_dim = dim * heads

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.context(torch.tanh(self.proj(h)))            # [B, T, H]
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1).transpose(1, 2)     # [B, H, T]
        pooled = torch.bmm(weights, h)                             # [B, H, D]
        return pooled.flatten(1), weights


class MeanPool(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.output_dim = dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = mask.float() / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.bmm(w.unsqueeze(1), h).squeeze(1), w.unsqueeze(1)


class LastState(nn.Module):
    """Forward direction's last real step joined with the backward direction's first step."""

    def __init__(self, dim: int):
        super().__init__()
        self.output_dim = dim

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = h.shape[-1] // 2
        last = mask.sum(1) - 1
        rows = torch.arange(h.shape[0], device=h.device)
        pooled = torch.cat([h[rows, last, :half], h[:, 0, half:]], dim=-1)
        w = torch.zeros(mask.shape, device=h.device)
        w[rows, last] = 1.0
        return pooled, w.unsqueeze(1)


def make_pooling(kind: str, dim: int, attention_dim: int, heads: int) -> nn.Module:
    if kind == "attention":
        return ContextAttention(dim, attention_dim, heads)
    if kind == "mean":
        return MeanPool(dim)
    if kind == "last":
        return LastState(dim)
    raise ValueError(f"unknown pooling {kind!r}")
