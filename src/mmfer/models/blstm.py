"""A bidirectional LSTM that is exact on zero-padded batches, without pack_padded_sequence.

The forward direction runs on the padded batch as is: padding comes after every real step, so it never
reaches a real step's state. The backward direction runs on each sequence reversed *within its own
length* (a gather), which again puts the padding last; its outputs are reversed back the same way.
Outputs at padded steps are zeroed. Same result as packing, at padded-batch speed on CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x[b, :L_b] reversed for each b, padding left in place. Its own inverse."""
    b, t = x.shape[:2]
    steps = torch.arange(t, device=x.device).unsqueeze(0).expand(b, t)
    rev = lengths.unsqueeze(1) - 1 - steps
    idx = torch.where(rev >= 0, rev, steps)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


def length_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class BLSTM(nn.Module):
    def __init__(self, input_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        dims = [input_dim] + [2 * hidden] * (layers - 1)
        self.fwd = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.bwd = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.dropout = nn.Dropout(dropout)
        self.hidden = hidden
        self.output_dim = 2 * hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, D], [B] -> outputs [B, T, 2H] (zero on padding), mask [B, T]."""
        for i, (f, b) in enumerate(zip(self.fwd, self.bwd)):
            if i:
                x = self.dropout(x)
            out_f, _ = f(x)
            out_b, _ = b(reverse_within_length(x, lengths))
            x = torch.cat([out_f, reverse_within_length(out_b, lengths)], dim=-1)
        mask = length_mask(lengths, x.shape[1])
        return x * mask.unsqueeze(-1), mask


class PackedBLSTM(nn.Module):
    """The textbook packed version, kept for the benchmark and as the reference in tests."""

    def __init__(self, input_dim: int, hidden: int, layers: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
