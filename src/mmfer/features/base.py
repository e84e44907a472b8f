"""The extractor contract and registry (after lhotse's ``FeatureExtractor``/``register_extractor`` and
audinterface's signal-in, frames-out ``process_signal``).

An extractor fills one stream (``mmfer.streams``). It has

* ``family``: its registry key; ``stream``: the stream it fills; ``input``: ``"audio"`` or ``"words"``;
* ``name``, ``dim``, ``dtype`` and ``hop_seconds`` (seconds per output row; ``None`` for one vector per
  utterance);
* ``settings()``: a JSON-able dict that names it completely (``extractor`` = family, ``kind`` = stream).
  The store keeps it beside the features (a changed setting makes a new folder), and checkpoints keep it,
  so prepare's worker processes and the predictor rebuild the very same extractor with
  :func:`extractor_from_settings`;
* ``extract(signal, sample_rate)`` -> ``[rows, dim]`` for audio extractors, ``encode(list of word
  lists)`` -> one ``[words, dim]`` array each for word extractors.

``from_config(features)`` builds the extractor a ``features`` config section asks for.

One *pass* of an extractor may fill several streams: an extractor with ``streams`` (e.g. the Whisper
encoder: its frames and their utterance statistics) takes ``from_config(features, kind=...)``, gives
``settings(kind)`` per stream, names the settings the pass itself depends on (``pass_keys``), and has
``extract_streams(signal, kinds) -> {stream: array}``. :func:`passes` groups a model's or a config's
audio streams by pass, so prepare, predict and serve compute each pass once per utterance
(:func:`extract_audio`). Looking extractors up (``extractor_for``, ``extractor_from_settings``, passes)
lives in ``features.extractors``, which loads the built-in ones; this module is only the contract.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class Extractor(Protocol):
    family: ClassVar[str]
    stream: ClassVar[str]
    input: ClassVar[str]
    name: str
    dim: int
    hop_seconds: float | None

    def settings(self) -> dict: ...

    @classmethod
    def from_settings(cls, settings: dict) -> Extractor: ...

    @classmethod
    def from_config(cls, features: Any) -> Extractor: ...


EXTRACTORS: dict[str, type] = {}


def register_extractor(cls: type) -> type:
    if cls.family in EXTRACTORS:
        raise ValueError(f"extractor {cls.family!r} is registered twice")
    EXTRACTORS[cls.family] = cls
    return cls


def stacked_layers(settings: dict[str, dict]) -> dict[str, int]:
    """Streams whose frames hold several encoder layers side by side (``stored_layers`` in their feature
    settings): the model learns a weighted sum of them."""
    return {k: int(s["stored_layers"]) for k, s in settings.items()
            if int(s.get("stored_layers", 1)) > 1 and s.get("hop_seconds")}


def resolve_device(spec: str) -> str:
    """An encoder's device: as asked, or 'auto' = the GPU when torch sees one."""
    if spec != "auto":
        return spec
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
