"""Linear models on one vector per utterance (the ``linear`` family of the registry), and the TF-IDF
n-gram transform of the ``ngrams`` stream. Trained by ``training.linear``; here so that loading and
inference (runs, serve) need nothing from training."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmfer.models.registry import get_model


class LinearModel(nn.Module):
    """logits = W x + b on a vector stream; same forward contract as EmotionModel (no attention)."""

    def __init__(self, name: str, dims: dict[str, int], n_classes: int):
        super().__init__()
        self.spec = get_model(name)
        self.name = name
        self.n_classes = n_classes
        self.kinds = self.spec.streams
        (self.kind,) = self.kinds
        self.linear = nn.Linear(dims[self.kind], n_classes)

    def forward(self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]) -> dict:
        return {"logits": self.linear(inputs[self.kind][:, 0]), "attention": {}}


class TfidfNgrams:
    """Word 1-2-gram TF-IDF with a fixed vocabulary: fitted on training text, stored in the checkpoint as
    plain lists (no pickles), applied identically at prediction time."""

    def __init__(self, vocabulary: list[str], idf: np.ndarray):
        self.vocabulary = list(vocabulary)
        self.idf = np.asarray(idf, np.float32)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}

    @staticmethod
    def grams(words: list[str]) -> list[str]:
        words = list(words)
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    @classmethod
    def fit(cls, docs: list[list[str]], min_df: int = 2, max_features: int = 50000) -> TfidfNgrams:
        from sklearn.feature_extraction.text import TfidfVectorizer

        v = TfidfVectorizer(analyzer=cls.grams, min_df=min_df, max_features=max_features, sublinear_tf=True)
        try:
            v.fit(docs)
        except ValueError:  # too few documents for min_df: keep every n-gram
            v = TfidfVectorizer(analyzer=cls.grams, sublinear_tf=True).fit(docs)
        vocab = v.get_feature_names_out().tolist()
        return cls(vocab, v.idf_)

    def transform(self, docs: list[list[str]]):
        """Sparse [n, V] float32 (CSR), rows L2-normalised, as scikit-learn's TfidfVectorizer with sublinear tf."""
        from scipy import sparse

        rows, cols, vals = [], [], []
        for r, words in enumerate(docs):
            counts: dict[int, int] = {}
            for g in self.grams(words):
                j = self.index.get(g)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            js = np.fromiter(counts, np.int64)
            v = (1.0 + np.log(np.fromiter(counts.values(), np.float64))) * self.idf[js]
            v /= np.linalg.norm(v)
            rows += [r] * len(js)
            cols += js.tolist()
            vals += v.tolist()
        return sparse.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(docs), len(self.vocabulary)))

    def to_checkpoint(self) -> dict:
        return {"vocabulary": self.vocabulary, "idf": torch.from_numpy(self.idf)}

    @classmethod
    def from_checkpoint(cls, d: dict) -> TfidfNgrams:
        return cls(d["vocabulary"], d["idf"].numpy())
