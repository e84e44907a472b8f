"""The embedded sample corpus (synthetic speech in IEMOCAP layout). eSpeak NG is loaded only here."""

from mmfer.corpora.sample.generate import generate

__all__ = ["generate"]
