"""Modality fusion heads: one utterance vector per modality in, logits (and the gate) out.

``FUSIONS`` maps the registry's fusion names to heads: ``None`` (one modality), ``gmu`` (the Gated
Multimodal Unit), and the baselines ``concat`` and ``late``. A head is built from the modality vectors'
sizes and returns a dict with ``logits`` and, when it has one, the gate ``z`` and its mean ``gate``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mmfer.config import ModelConfig


class GMU(nn.Module):
    """h = z * tanh(W_a a) + (1 - z) * tanh(W_l l),  z = sigmoid(W_z [a; l])  (Arevalo et al., 2017).

    z is the first input's share (the acoustic one in mmmf), per hidden unit; its mean over units is
    reported as the modality gate.
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


FUSIONS: dict[str | None, Callable[..., nn.Module]] = {}


def register_fusion(name: str | None):
    def deco(cls):
        FUSIONS[name] = cls
        return cls
    return deco


@register_fusion(None)
class SingleHead(nn.Module):
    """One modality: dropout, then the linear softmax layer."""

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: ModelConfig):
        super().__init__()
        (self.modality, dim), = dims.items()
        self.classifier = nn.Linear(dim, n_classes)

    def forward(self, pooled: dict[str, torch.Tensor], dropout: nn.Module) -> dict:
        return {"logits": self.classifier(dropout(pooled[self.modality]))}


class _PairHead(nn.Module):
    """Two modalities fused by ``fusion_cls`` into one vector, then the linear softmax layer."""

    fusion_cls: type[nn.Module]

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: ModelConfig):
        super().__init__()
        if len(dims) != 2:
            raise ValueError(f"{type(self).__name__} fuses two modalities, got {list(dims)}")
        self.order = list(dims)
        self.fusion = self.fusion_cls(*dims.values(), cfg.fusion_dim)
        self.classifier = nn.Linear(cfg.fusion_dim, n_classes)

    def forward(self, pooled: dict[str, torch.Tensor], dropout: nn.Module) -> dict:
        fused, z = self.fusion(*(pooled[m] for m in self.order))
        out = {"logits": self.classifier(dropout(fused))}
        if z is not None:
            out["z"] = z
            out["gate"] = z.mean(dim=-1)
        return out


@register_fusion("gmu")
class GMUHead(_PairHead):
    fusion_cls = GMU


@register_fusion("concat")
class ConcatHead(_PairHead):
    fusion_cls = ConcatFusion


@register_fusion("late")
class LateHead(nn.Module):
    """One classifier per modality, logits averaged."""

    def __init__(self, dims: dict[str, int], n_classes: int, cfg: ModelConfig):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(d, n_classes) for m, d in dims.items()})

    def forward(self, pooled: dict[str, torch.Tensor], dropout: nn.Module) -> dict:
        return {"logits": sum(h(dropout(pooled[m])) for m, h in self.heads.items()) / len(self.heads)}
