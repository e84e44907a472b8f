"""The stream table: every input stream a model can read, declared once.

A *stream* is one kind of feature in the store (one folder per stream and settings) and one input of a
model. Data preparation, models, training, the report and the predictor look a stream up here instead of
testing names: adding a stream means one entry here, its extractor (``features/``) and, when it needs a
new kind of encoder, that encoder (``models/``).

The time step of a sequence stream is *not* declared here: it belongs to the extractor and is recorded in
the store (``hop_seconds`` in the feature settings), so a 10 ms openSMILE stream and a 20 ms SSL stream
need no other change.
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("audio", "text")


@dataclass(frozen=True)
class Stream:
    name: str                  # the store's feature kind and the model's input key
    modality: str              # 'audio' or 'text': what the corpus must have for this stream
    sequence: bool             # True: [steps, dim] per utterance (BLSTM + attention); False: one vector
    reducible: bool = False    # frame averaging (model.frame_reduction) applies
    extractor: str = ""        # default extractor family (features.base.EXTRACTORS) that fills it
    attention_column: str | None = None  # predictions.parquet column holding its attention weights
    derived_from: str | None = None      # computed at load time from another stream (no extraction)
    speaker_normalised: bool = False     # takes features.normalise (speaker z-score) when asked
    closed_form: bool = False            # vector stream a linear model can be fitted to first (model.functionals)
    help: str = ""


STREAMS: dict[str, Stream] = {}


def register_stream(stream: Stream) -> Stream:
    if stream.name in STREAMS:
        raise ValueError(f"stream {stream.name!r} is declared twice")
    if stream.modality not in MODALITIES:
        raise ValueError(f"stream {stream.name!r}: modality must be one of {MODALITIES}")
    STREAMS[stream.name] = stream
    return stream


register_stream(Stream("acoustic", "audio", sequence=True, reducible=True, extractor="whisper",
                       attention_column="audio_attention", speaker_normalised=True,
                       help="acoustic frames: the Whisper-base encoder's hidden states every 20 ms (default), "
                            "openSMILE low-level descriptors every 10 ms (ComParE_2016 or eGeMAPSv02), or a "
                            "local speech encoder's"))
register_stream(Stream("lexical", "text", sequence=True, extractor="transformer", attention_column="text_attention",
                       help="one vector per word from a transformer encoder (or static word vectors)"))
register_stream(Stream("functionals", "audio", sequence=False, extractor="opensmile-functionals",
                       speaker_normalised=True, closed_form=True,
                       help="openSMILE utterance functionals (ComParE_2016 6,373 or eGeMAPSv02 88 values)"))
register_stream(Stream("pooled", "audio", sequence=False, extractor="whisper", speaker_normalised=True,
                       closed_form=True, help="mean and standard deviation of the Whisper encoder's frames over the "
                                              "utterance, per layer (for closed-form linear scores)"))
register_stream(Stream("sentence", "text", sequence=False, derived_from="lexical", closed_form=True,
                       help="the utterance's mean word vector (for the closed-form linear scores)"))
register_stream(Stream("context", "text", sequence=False, derived_from="lexical",
                       help="mean word vector of the preceding utterances of the same dialogue"))
register_stream(Stream("ngrams", "text", sequence=False, derived_from="words",
                       help="TF-IDF of word 1-2-grams, vocabulary fitted on the training part (text-tfidf)"))

TABLE_COLUMNS = {"words"}  # what a derived stream may come from besides another stream: the corpus table


def stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown stream {name!r}; known: {', '.join(STREAMS)}") from None


def modality_of(name: str) -> str:
    return stream(name).modality


def modalities_of(names) -> tuple[str, ...]:
    """The modalities a list of streams needs, in the table's canonical order."""
    wanted = {modality_of(n) for n in names}
    return tuple(m for m in MODALITIES if m in wanted)


def extracted(names) -> list[str]:
    """The streams among ``names`` that live in the store (derived ones are computed from those)."""
    out: list[str] = []
    for n in names:
        s = stream(n)
        src = s.derived_from or s.name
        if src not in out and src not in TABLE_COLUMNS:
            out.append(src)
    return out
