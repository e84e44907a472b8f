"""Could one Whisper encoder pass serve both the recogniser and the acoustic features (issue 25)?

Measured on the first utterances of the sample corpus (`make quickstart`'s corpus), one process, 2 cores:

* recognition (faster-whisper `transcribe`, beam 1) and the share of it spent in CTranslate2's encoder on
  the 30 s padded mel;
* mmfer's feature pass (the transformers Whisper encoder, all hidden states, the utterance's own length);
* decoding from an encoder output of the utterance's own length (what a shared unpadded pass would give the
  recogniser), against the padded one, by word error rate.

    python benchmarks/shared_pass.py [--corpus mmfer-quickstart/corpus] [--n 40]

Writes benchmarks/results/shared_pass.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _norm(x: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", x.lower()).split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("mmfer-quickstart/corpus"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "shared_pass.json")
    a = ap.parse_args()
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from mmfer.config import FeatureConfig
    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio
    from mmfer.features.extractors import extractor_for
    from mmfer.speech.asr import recogniser
    from mmfer.speech.wer import word_errors

    table = read_corpus(a.corpus).table.iloc[: a.n]
    sigs = [load_audio(p) for p in table["audio"]]
    refs = list(table["text"])

    def wer(hyps: list[str]) -> float:
        return sum(word_errors(_norm(r), _norm(h)) for r, h in zip(refs, hyps)) / sum(len(_norm(r)) for r in refs)

    rec = recogniser("auto", language="en")
    rec.transcribe(sigs[0])  # load the model
    m = rec._model
    tok = Tokenizer(m.hf_tokenizer, True, task="transcribe", language="en")
    prompt = [*tok.sot_sequence, tok.no_timestamps]

    def decode(mel) -> str:
        r = m.model.generate(m.encode(mel), [prompt], beam_size=1, max_length=224)
        return tok.decode([i for i in r[0].sequences_ids[0] if i < tok.eot])

    out: dict = {"utterances": len(sigs), "audio_seconds": round(sum(len(s) for s in sigs) / 16000, 1)}
    t = time.perf_counter()
    hyps = [rec.transcribe(s).text for s in sigs]
    out["recognition"] = {"seconds": round(time.perf_counter() - t, 2), "wer": round(wer(hyps), 3)}
    t = time.perf_counter()
    for s in sigs:
        m.encode(pad_or_trim(m.feature_extractor(s)))
    out["ct2_encoder_padded_30s_seconds"] = round(time.perf_counter() - t, 2)
    ext = extractor_for("acoustic", FeatureConfig())
    ext.extract_streams(sigs[0])
    t = time.perf_counter()
    for s in sigs:
        ext.extract_streams(s)
    out["mmfer_feature_pass_seconds"] = round(time.perf_counter() - t, 2)
    for name, prep in (("decode_padded_30s", pad_or_trim), ("decode_own_length", lambda x: x)):
        t = time.perf_counter()
        hyps = [decode(prep(m.feature_extractor(s))) for s in sigs]
        out[name] = {"seconds": round(time.perf_counter() - t, 2), "wer": round(wer(hyps), 3)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
