"""mmfer: Multi-Modal Multi-Focus Emotion Recognition from speech audio and transcripts."""

__version__ = "0.1.0"
