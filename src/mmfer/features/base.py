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
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from mmfer.errors import MmferError


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


def _load_builtin() -> None:
    # importing the modules registers their extractors; kept lazy so importing the registry is cheap
    import mmfer.features.acoustic  # noqa: F401
    import mmfer.features.lexical  # noqa: F401
    import mmfer.features.ssl  # noqa: F401


def extractor_class(family: str) -> type:
    _load_builtin()
    if family not in EXTRACTORS:
        raise MmferError(f"unknown feature extractor {family!r}; known: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[family]


def extractor_from_settings(settings: dict):
    """Rebuild the extractor that wrote features with these settings (store meta or checkpoint)."""
    return extractor_class(settings["extractor"]).from_settings(settings)


def extractor_for(stream_name: str, features: Any):
    """The extractor the ``features`` config section asks for, for one stream: a registered extractor of
    that stream whose ``accepts(features)`` says so (e.g. ``hf:PATH`` for an SSL encoder), else the
    stream's default."""
    from mmfer.streams import stream

    _load_builtin()
    for cls in EXTRACTORS.values():
        if cls.stream == stream_name and getattr(cls, "accepts", None) and cls.accepts(features):
            return cls.from_config(features)
    return extractor_class(stream(stream_name).extractor).from_config(features)


def stacked_layers(settings: dict[str, dict]) -> dict[str, int]:
    """Streams whose frames hold several encoder layers side by side (``stored_layers`` in their feature
    settings): the model learns a weighted sum of them."""
    return {k: int(s["stored_layers"]) for k, s in settings.items()
            if int(s.get("stored_layers", 1)) > 1 and s.get("hop_seconds")}
