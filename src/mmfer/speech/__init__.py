"""Speech in, words and segments out: recognition (ASR), segmentation of long recordings, alignment.

This sits between reading audio and extracting features: it turns a recording into utterances with
transcripts and word times, which the feature extractors and the model then use as if a person had
cut and typed them.
"""
