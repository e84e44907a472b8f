"""The model every registry entry builds: one encoder per input stream, one vector per modality, a
fusion head (see models.registry for the names and models.fusion for the heads).

Every forward returns a dict with ``logits`` and what the analysis draws: ``attention`` per sequence
stream ([B, heads, T], zero on padding) and, for a gated fusion, the gate ``z`` ([B, dim]) and its mean
``gate`` ([B]).
"""

from __future__ import annotations

import torch
from torch import nn

from mmfer.config import ModelConfig
from mmfer.errors import MmferError
from mmfer.models.blstm import BLSTM
from mmfer.models.fusion import FUSIONS
from mmfer.models.pooling import make_pooling
from mmfer.models.registry import get_model
from mmfer.streams import stream


class LayerMix(nn.Module):
    """A softmax-weighted sum of an encoder's stored layers (SUPERB's recipe): [B, T, L*D] -> [B, T, D].
    Starts as the plain average; ``weights()`` says which layers the model came to use."""

    def __init__(self, n_layers: int, input_dim: int):
        super().__init__()
        self.n_layers, self.layer_dim = n_layers, input_dim // n_layers
        self.logits = nn.Parameter(torch.zeros(n_layers))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return torch.einsum("btld,l->btd", x.view(b, t, self.n_layers, self.layer_dim), self.weights())


class Encoder(nn.Module):
    """(Layer mix ->) input dropout -> BLSTM -> pooling head: one stream's frames/words -> one vector."""

    def __init__(self, input_dim: int, cfg: ModelConfig, n_layers: int = 1):
        super().__init__()
        self.mix = LayerMix(n_layers, input_dim) if n_layers > 1 else None
        width = input_dim // n_layers
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.blstm = BLSTM(width, cfg.hidden, cfg.layers, cfg.dropout)
        self.pool = make_pooling(cfg.pooling, self.blstm.output_dim, cfg.attention_dim, cfg.heads)
        self.output_dim = self.pool.output_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None:
            x = self.mix(x)
        h, mask = self.blstm(self.input_dropout(x), lengths)
        return self.pool(h, mask)


class VectorEncoder(nn.Module):
    """One vector per utterance (functionals, dialogue context): dropout -> low-rank linear map -> tanh.

    High-dimensional inputs over few utterances over-fit easily: the rank bottleneck (``vector_dim``)
    and the input dropout are the regularisers.
    """

    def __init__(self, input_dim: int, cfg: ModelConfig):
        super().__init__()
        self.input_dropout = nn.Dropout(cfg.vector_dropout)
        self.proj = nn.Linear(input_dim, cfg.vector_dim)
        self.output_dim = cfg.vector_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.tanh(self.proj(self.input_dropout(x[:, 0]))), None


class LinearExpert(nn.Module):
    """A vector stream's class scores from a linear model fitted in closed form before training (see
    training.linear.select_linear) and then frozen: W x + b, one score per class.

    Why: on a few thousand utterances a network over-fits thousands of functionals, where a strongly
    L2-regularised linear model with C chosen on the validation speakers does not. The frozen scores join
    the modality's vector, so the network learns what the frames add to them.
    """

    prefit = True

    def __init__(self, input_dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_classes)
        self.linear.requires_grad_(False)
        self.output_dim = n_classes
        self.scores_given = False  # training: the input already holds out-of-fold scores (see trainer)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (x[:, 0] if self.scores_given else self.linear(x[:, 0])), None


class ModalityJoin(nn.Module):
    """Several streams of one modality -> one vector: concatenation (the GMU fuses *across* modalities)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.output_dim = sum(dims)

    def forward(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        return vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)


class EmotionModel(nn.Module):
    def __init__(self, name: str, dims: dict[str, int], n_classes: int, cfg: ModelConfig,
                 layers: dict[str, int] | None = None, word_model: nn.Module | None = None):
        """``word_model`` (models.tuned.WordTransformer): the text encoder trained with the model
        (``train.finetune_lexical``); the ``lexical`` input is then computed from the batch's words."""
        super().__init__()
        layers = layers or {}
        self.spec = get_model(name)
        self.name = name
        self.n_classes = n_classes
        self.kinds = self.spec.streams
        self.encoders = nn.ModuleDict({k: self._encoder(k, dims[k], n_classes, cfg, layers.get(k, 1))
                                       for k in self.kinds})
        self.dropout = nn.Dropout(cfg.dropout)
        self.by_modality = {m: [k for k in self.kinds if stream(k).modality == m] for m in self.spec.modalities}
        self.joins = {m: ModalityJoin([self.encoders[k].output_dim for k in ks]) for m, ks in self.by_modality.items()}
        self.head = FUSIONS[self.spec.fusion]({m: j.output_dim for m, j in self.joins.items()}, n_classes, cfg)
        # several modalities: the closed-form experts' class scores also reach the logits directly, each with
        # a learned scale (stacking); see start_from_prefit
        experts = [k for k in self.kinds if getattr(self.encoders[k], "prefit", False)]
        self.expert_kinds = experts if self.spec.fusion is not None and cfg.stack_experts else []
        self.expert_scale = nn.Parameter(torch.ones(len(self.expert_kinds))) if self.expert_kinds else None
        several = len(self.by_modality) > 1
        self.aux_heads = nn.ModuleDict({m: nn.Linear(j.output_dim, n_classes) for m, j in self.joins.items()}
                                       ) if several and cfg.aux_weight > 0 else None
        self.modality_dropout = cfg.modality_dropout if several else 0.0
        if word_model is not None and "lexical" not in self.kinds:
            raise MmferError(f"train.finetune_lexical: model '{name}' reads no words (no 'lexical' stream)")
        self.word_model = word_model

    @staticmethod
    def _encoder(kind: str, dim: int, n_classes: int, cfg: ModelConfig, n_layers: int = 1) -> nn.Module:
        s = stream(kind)
        if s.sequence:
            return Encoder(dim, cfg, n_layers)
        if s.closed_form and cfg.functionals == "linear":
            return LinearExpert(dim, n_classes)
        return VectorEncoder(dim, cfg)

    def prefit_encoders(self) -> dict[str, LinearExpert]:
        return {k: e for k, e in self.encoders.items() if getattr(e, "prefit", False)}

    @torch.no_grad()
    def start_from_prefit(self, weights: dict[str, float] | None = None) -> None:
        """Start as the prefitted linear models alone; the network learns what to add to them.

        One modality: the experts' scores pass through the classifier, each scaled by its weight
        (``weights``, chosen on validation; default 1), and the other parts of the vector get zero weight.
        Several (with ``stack_experts``): the fusion head's classifier starts at zero, so the logits are the
        sum of the experts' scores (a product of experts: the closed-form models of each modality fused),
        which the fusion head then corrects. Either way the start is itself a candidate that the validation
        part judges ("epoch 0")."""
        weights = weights or {}
        head = self.head
        if self.expert_scale is not None:
            classifiers = [head.classifier] if hasattr(head, "classifier") else list(head.heads.values())
            for clf in classifiers:
                clf.weight.zero_()
                clf.bias.zero_()
            return
        if not hasattr(head, "classifier") or len(self.by_modality) != 1:
            return
        (kinds,) = self.by_modality.values()
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        col = 0
        for k in kinds:
            width = self.encoders[k].output_dim
            if k in self.prefit_encoders():
                head.classifier.weight[:, col:col + width] = weights.get(k, 1.0) * torch.eye(width)
            col += width

    def forward(self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor],
                words: list[list[str]] | None = None) -> dict:
        if self.word_model is not None:
            if words is None:
                raise ValueError("this model fine-tunes its text encoder: pass the batch's words")
            x, n = self.word_model(words)
            inputs, lengths = {**inputs, "lexical": x}, {**lengths, "lexical": n.to(x.device)}
        pooled, attention = {}, {}
        for k, enc in self.encoders.items():
            pooled[k], att = enc(inputs[k], lengths[k])
            if att is not None:
                attention[k] = att
        by_modality = {m: self.joins[m]([pooled[k] for k in ks]) for m, ks in self.by_modality.items()}
        if self.training and self.modality_dropout > 0:
            by_modality = drop_modality(by_modality, self.modality_dropout)
        out = self.head(by_modality, self.dropout)
        if self.aux_heads is not None:
            out["aux_logits"] = {m: h(self.dropout(by_modality[m])) for m, h in self.aux_heads.items()}
        if self.expert_scale is not None:
            out["logits"] = out["logits"] + sum(w * pooled[k] for w, k in zip(self.expert_scale, self.expert_kinds))
        out["attention"] = attention
        return out


def drop_modality(vectors: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """With probability ``p`` per utterance, zero one modality's vector (chosen uniformly), never all."""
    names = list(vectors)
    b = next(iter(vectors.values())).shape[0]
    device = next(iter(vectors.values())).device
    hit = torch.rand(b, device=device) < p
    which = torch.randint(len(names), (b,), device=device)
    return {m: v * (~(hit & (which == i))).to(v.dtype)[:, None] for i, (m, v) in enumerate(vectors.items())}


def build_model(name: str, dims: dict[str, int], n_classes: int, cfg: ModelConfig,
                layers: dict[str, int] | None = None, word_model: nn.Module | None = None) -> EmotionModel:
    """``layers``: streams holding several encoder layers per frame (features.base.stacked_layers);
    ``word_model``: a text encoder to fine-tune (see EmotionModel)."""
    return EmotionModel(name, dims, n_classes, cfg, layers, word_model)
