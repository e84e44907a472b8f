"""The extractor catalogue: the built-in extractors loaded, and extractors found by stream, by config or by
their stored settings; streams grouped into passes and computed once per pass (see ``features.base``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

import mmfer.features.acoustic  # noqa: F401  (importing the modules registers their extractors)
import mmfer.features.lexical  # noqa: F401
import mmfer.features.ssl  # noqa: F401
import mmfer.features.whisper  # noqa: F401
from mmfer.errors import MmferError
from mmfer.features.base import EXTRACTORS


def extractor_class(family: str) -> type:
    if family not in EXTRACTORS:
        raise MmferError(f"unknown feature extractor {family!r}; known: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[family]


def extractor_from_settings(settings: dict):
    """Rebuild the extractor that wrote features with these settings (store meta or checkpoint)."""
    return extractor_class(settings["extractor"]).from_settings(settings)


def streams_of(cls) -> tuple[str, ...]:
    """The streams one pass of this extractor class can fill."""
    return tuple(getattr(cls, "streams", (cls.stream,)))


def _build(cls, features: Any, stream_name: str):
    return cls.from_config(features, kind=stream_name) if len(streams_of(cls)) > 1 else cls.from_config(features)


def extractor_for(stream_name: str, features: Any):
    """The extractor the ``features`` config section asks for, for one stream: a registered extractor of
    that stream whose ``accepts(features)`` says so (e.g. ``hf:PATH`` for an SSL encoder), else the
    stream's default."""
    from mmfer.streams import stream

    for cls in EXTRACTORS.values():
        if stream_name in streams_of(cls) and getattr(cls, "accepts", None) and cls.accepts(features):
            return _build(cls, features, stream_name)
    return _build(extractor_class(stream(stream_name).extractor), features, stream_name)


def pass_key(settings: dict) -> str:
    """Streams whose settings give the same key are filled by one pass of one extractor."""
    cls = extractor_class(settings["extractor"])
    shared = {k: settings.get(k) for k in cls.pass_keys} if len(streams_of(cls)) > 1 else settings
    return json.dumps(shared, sort_keys=True)


def passes(settings_by_kind: dict[str, dict]) -> list[tuple[dict, list[str]]]:
    """(the first stream's settings, the streams it fills) per pass, in the streams' order."""
    out: dict[str, tuple[dict, list[str]]] = {}
    for kind, settings in settings_by_kind.items():
        out.setdefault(pass_key(settings), (settings, []))[1].append(kind)
    return list(out.values())


_CACHE: dict[str, Any] = {}


def cached_extractor(settings: dict):
    """The extractor these settings name, built once per process (and shared by the streams of a pass)."""
    key = pass_key(settings)
    if key not in _CACHE:
        _CACHE[key] = extractor_from_settings(settings)
    return _CACHE[key]


def run_pass(ext, kinds: list[str], signal: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
    """One extractor's arrays for the streams ``kinds`` of one signal."""
    if hasattr(ext, "extract_streams"):
        return ext.extract_streams(signal, tuple(kinds))
    (kind,) = kinds
    return {kind: ext.extract(signal, sample_rate)}


def run_pass_many(ext, kinds: list[str], signals: list[np.ndarray], sample_rate: int) -> list[dict[str, np.ndarray]]:
    """:func:`run_pass` for several signals: an extractor that batches (an SSL or Whisper encoder: several
    utterances per call, each as if alone) gets them together, any other one at a time."""
    if not hasattr(ext, "extract_many"):
        return [run_pass(ext, kinds, x, sample_rate) for x in signals]
    if hasattr(ext, "extract_streams"):
        return ext.extract_many(signals, tuple(kinds))
    (kind,) = kinds
    return [{kind: a} for a in ext.extract_many(signals)]


def extract_audio(signal: np.ndarray, sample_rate: int, settings_by_kind: dict[str, dict],
                  extractor=cached_extractor) -> dict[str, np.ndarray]:
    """Every audio stream of ``settings_by_kind`` for one signal, each pass run once. ``extractor`` turns
    a stream's settings into its extractor (the Predictor passes its own, which checks trust)."""
    out: dict[str, np.ndarray] = {}
    for settings, kinds in passes(settings_by_kind):
        out.update(run_pass(extractor(settings), kinds, signal, sample_rate))
    return out


def extract_audio_many(signals: list[np.ndarray], sample_rate: int, settings_by_kind: dict[str, dict],
                       extractor=cached_extractor) -> list[dict[str, np.ndarray]]:
    """:func:`extract_audio` for several signals, an encoder's passes batched (:func:`run_pass_many`)."""
    out: list[dict[str, np.ndarray]] = [{} for _ in signals]
    for settings, kinds in passes(settings_by_kind):
        for mine, got in zip(out, run_pass_many(extractor(settings), kinds, signals, sample_rate)):
            mine.update(got)
    return out
