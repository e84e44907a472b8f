"""A tiny feature store written directly through the store's own writer: separable classes, varying
lengths, sessions and speakers. Lets model/training tests run in seconds without audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfer.corpora.schema import Corpus, save, to_table
from mmfer.features.store import feature_dir_name, finalize, shard_path, write_shard
from mmfer.io import write_json
from mmfer.streams import stream

CLASSES = ["ang", "hap", "neu", "sad"]


DIMS = {"acoustic": 8, "lexical": 6, "functionals": 10, "pooled": 12}


def make_store(path: Path, sessions: int = 4, per_speaker: int = 16, seed: int = 0,
               kinds=("acoustic", "functionals", "pooled", "lexical"), with_sessions: bool = True,
               frames: tuple[int, int] = (15, 60), one_emotion: bool | None = None,
               frames_dtype: str = "float32") -> Path:
    """``one_emotion`` (True/False): every speaker also gets a voice of its own (a random offset of the
    functionals); True: and shows one emotion only (the speaker's number mod 4). ``frames_dtype``: how the
    acoustic frames are stored (float16 like the Whisper frames: every read is then a float32 copy, not a
    view of the memory map)."""
    rng = np.random.default_rng(seed)
    pooled_rng = np.random.default_rng(seed + 1000)  # its own stream: the other streams' data stay as they were
    rows, arrays = [], {k: [] for k in kinds}
    for s in range(1, sessions + 1):
        for g in "FM":
            voice = rng.normal(0, 2, DIMS["functionals"]) if one_emotion is not None else 0.0
            for i in range(per_speaker):
                label = CLASSES[(2 * s + (g == "M")) % 4 if one_emotion else i % 4]
                c = CLASSES.index(label)
                utt = f"Ses{s:02d}{g}_impro01_{g}{i:03d}"
                n_words = int(rng.integers(3, 9))
                rows.append({
                    "utt_id": utt, "corpus": "iemocap", "session": f"Ses{s:02d}" if with_sessions else "",
                    "speaker": f"Ses{s:02d}{g}", "gender": g, "dialog": f"Ses{s:02d}F_impro01", "method": "impro",
                    "start": float(i), "end": i + 1.0, "transcript": "x", "text": "x",
                    "words": [f"w{j}" for j in range(n_words)], "word_start": None, "word_end": None,
                    "label_raw": label, "label": label, "votes": [], "valence": 3.0, "activation": 3.0,
                    "dominance": 3.0, "audio": "",
                })
                if "acoustic" in kinds:
                    t = int(rng.integers(*frames))
                    a = rng.normal(0, 1, (t, DIMS["acoustic"])).astype(np.float32) * 2 + 5  # offset: normalisation
                    hot = rng.choice(t, size=max(4, t // 3), replace=False)
                    a[hot, c] += 4.0  # the class shows in some frames only
                    arrays["acoustic"].append(a)
                if "lexical" in kinds:
                    w = rng.normal(0, 1, (n_words, DIMS["lexical"])).astype(np.float32)
                    w[int(rng.integers(0, n_words)), c] += 4.0  # one emotional word
                    arrays["lexical"].append(w)
                if "pooled" in kinds:
                    v = pooled_rng.normal(0, 1, (1, DIMS["pooled"])).astype(np.float32) + 2 * (g == "M")
                    v[0, c + 4] += 1.2  # another weak utterance-level cue
                    arrays["pooled"].append(v)
                if "functionals" in kinds:
                    f = rng.normal(0, 1, (1, DIMS["functionals"])).astype(np.float32) + 3 * (g == "M") + voice
                    f[0, c] += 1.5  # weaker than the frames' cue
                    arrays["functionals"].append(f)
    table = to_table(rows)
    modalities = tuple(m for m in ("audio", "text") if any(stream(k).modality == m for k in kinds))
    corpus = Corpus("iemocap", str(path), table, modalities, CLASSES, "4class", parsed=len(rows))
    path.mkdir(parents=True, exist_ok=True)
    save(corpus, path / "corpus.parquet")
    features = {}
    ids = table["utt_id"].tolist()
    for k in kinds:
        dtype = frames_dtype if k == "acoustic" else "float32"
        settings = {"kind": k, "name": "synthetic", "dim": DIMS[k], "dtype": dtype, "seed": seed,
                    "hop_seconds": 0.01 if k == "acoustic" else None}
        folder = path / feature_dir_name(settings)
        write_shard(shard_path(folder, 0), ids, arrays[k], {}, dtype)
        finalize(folder, 1, settings)
        features[k] = folder.name
    write_json(path / "store.json", {"store_version": 1, "corpus": corpus.meta(), "features": features})
    return path
