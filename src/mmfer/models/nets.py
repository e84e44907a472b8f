"""The named models: unimodal ``audio``/``text``, fused ``mmmf`` (GMU), ``concat`` and ``late``.

Every forward returns a dict with ``logits`` and what the analysis draws: ``attention`` per feature kind
([B, heads, T], zero on padding) and, for mmmf, the gate ``z`` ([B, dim]) and its mean ``gate`` ([B]).
"""

from __future__ import annotations

import torch
from torch import nn

from mmfer.config import ModelConfig
from mmfer.models.blstm import BLSTM
from mmfer.models.fusion import GMU, ConcatFusion
from mmfer.models.pooling import make_pooling

MODELS = {
    "audio": ("acoustic",),
    "text": ("lexical",),
    "mmmf": ("acoustic", "lexical"),
    "concat": ("acoustic", "lexical"),
    "late": ("acoustic", "lexical"),
}
MODALITY = {"acoustic": "audio", "lexical": "text"}


def kinds_of(model: str) -> tuple[str, ...]:
    if model not in MODELS:
        from mmfer.errors import MmferError

        raise MmferError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return MODELS[model]


class Encoder(nn.Module):
    """Input dropout -> BLSTM -> pooling head: one modality's frames/words -> one utterance vector."""

    def __init__(self, input_dim: int, cfg: ModelConfig):
        super().__init__()
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.blstm = BLSTM(input_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.pool = make_pooling(cfg.pooling, self.blstm.output_dim, cfg.attention_dim, cfg.heads)
        self.output_dim = self.pool.output_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, mask = self.blstm(self.input_dropout(x), lengths)
        return self.pool(h, mask)


class EmotionModel(nn.Module):
    def __init__(self, name: str, dims: dict[str, int], n_classes: int, cfg: ModelConfig):
        super().__init__()
        self.name = name
        self.n_classes = n_classes
        self.kinds = kinds_of(name)
        self.encoders = nn.ModuleDict({k: Encoder(dims[k], cfg) for k in self.kinds})
        self.dropout = nn.Dropout(cfg.dropout)
        if name in ("audio", "text"):
            self.classifier = nn.Linear(self.encoders[self.kinds[0]].output_dim, n_classes)
        elif name in ("mmmf", "concat"):
            fusion = GMU if name == "mmmf" else ConcatFusion
            self.fusion = fusion(self.encoders["acoustic"].output_dim, self.encoders["lexical"].output_dim,
                                 cfg.fusion_dim)
            self.classifier = nn.Linear(cfg.fusion_dim, n_classes)
        else:  # late: one classifier per modality, logits averaged
            self.heads = nn.ModuleDict({k: nn.Linear(self.encoders[k].output_dim, n_classes) for k in self.kinds})

    def forward(self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> dict:
        pooled, attention = {}, {}
        for k, enc in self.encoders.items():
            pooled[k], attention[k] = enc(inputs[k], lengths[k])
        out: dict = {"attention": attention}
        if self.name in ("audio", "text"):
            out["logits"] = self.classifier(self.dropout(pooled[self.kinds[0]]))
        elif self.name == "late":
            out["logits"] = sum(self.heads[k](self.dropout(pooled[k])) for k in self.kinds) / len(self.kinds)
        else:
            fused, z = self.fusion(pooled["acoustic"], pooled["lexical"])
            out["logits"] = self.classifier(self.dropout(fused))
            if z is not None:
                out["z"] = z
                out["gate"] = z.mean(dim=-1)
        return out


def build_model(name: str, dims: dict[str, int], n_classes: int, cfg: ModelConfig) -> EmotionModel:
    return EmotionModel(name, dims, n_classes, cfg)
