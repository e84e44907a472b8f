"""Fine-tuning the text encoder (``train.finetune_lexical``): the transformer runs inside the model, so
its weights learn with the BLSTM, the attention and the classifier.

Why an option and off by default: on CPU it did not pay (a study on IEMOCAP transcripts gained nothing
on the two folds that were affordable, at about 14 minutes per fold on 2 cores); published text results
above frozen vectors fine-tune on a GPU. The default text path stays frozen stored vectors.

The module computes what :class:`mmfer.features.lexical.TransformerEncoder` stores, differentiably: each
word's vector is the mean of its sub-word states (long word lists go through in pieces of
``MAX_WORDS_PER_PASS`` words), then the fold's training statistics z-score it as the stored vectors are.
So the network starts exactly where the frozen path is, and the word attention still maps to words.
Only the stream's *sequence* input is replaced: the closed-form sentence scores and the dialogue context
stay those of the frozen encoder (they are fitted before training, on stored vectors).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mmfer.errors import MmferError
from mmfer.features.lexical import layer_choice, minilm_path, pool_words, word_pieces


def finetune_source(settings: dict, lexical_source: str | None = None) -> str:
    """The folder of the stored text encoder: the bundled MiniLM, or a folder the user names (a run's
    own record of a path is never loaded by itself)."""
    if settings.get("extractor") != "transformer":
        raise MmferError("train.finetune_lexical needs a transformer text encoder (features.lexical 'minilm' or "
                         f"a Hugging Face folder), not {settings.get('extractor')!r}")
    if settings.get("name") == "minilm":
        return str(minilm_path())
    if lexical_source is None:
        raise MmferError(f"this model fine-tuned a local text encoder ({settings.get('source')}); pass it "
                         "yourself with --lexical FOLDER (model folders are not trusted to choose what to load)")
    return str(lexical_source)


class WordTransformer(nn.Module):
    """Words in, one z-scored vector per word out: [B] word lists -> ([B, T, D] zero-padded, [B] lengths)."""

    def __init__(self, source: str, layers: str = "last", pretrained: bool = True,
                 mean=None, std=None):
        """``pretrained`` False builds the architecture only (a checkpoint's weights follow)."""
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
            self.transformer = (AutoModel.from_pretrained(source, local_files_only=True, trust_remote_code=False)
                                if pretrained else AutoModel.from_config(config))
        except (OSError, ValueError) as err:
            raise MmferError(f"text encoder {source!r} could not be loaded to fine-tune "
                             f"({str(err).splitlines()[0][:100]}); pass its folder with --lexical FOLDER") from None
        self.source = str(Path(source))
        self.layer_idx = layer_choice(layers, int(getattr(config, "num_hidden_layers", 0)))
        dim = int(config.hidden_size)
        self.dim = dim
        self.register_buffer("mean", torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(dim) if std is None else torch.as_tensor(std, dtype=torch.float32))

    def forward(self, batch: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.mean.device
        pieces = word_pieces(batch)
        lengths = torch.tensor([max(1, len(w)) for w in batch], dtype=torch.long)
        out = torch.zeros(len(batch), int(lengths.max()) if len(batch) else 1, self.dim, device=device)
        if not pieces:
            return out, lengths
        enc = self.tokenizer([w for _, w in pieces], is_split_into_words=True, padding=True, truncation=True,
                             max_length=512, return_tensors="pt")
        res = self.transformer(**{k: v.to(device) for k, v in enc.items()},
                               output_hidden_states=self.layer_idx is not None)
        hidden = res.last_hidden_state if self.layer_idx is None else torch.stack(
            [res.hidden_states[j] for j in self.layer_idx]).mean(dim=0)
        words = pool_words(hidden.float(), enc, pieces)  # [P, n_words, D], as the stored vectors
        filled = [0] * len(batch)
        for p, (i, w) in enumerate(pieces):
            out[i, filled[i]:filled[i] + len(w)] = words[p, :len(w)]
            filled[i] += len(w)
        z = (out - self.mean) / self.std
        mask = torch.arange(out.shape[1], device=device)[None, :] < torch.tensor(filled, device=device)[:, None]
        return z * mask[..., None], lengths
