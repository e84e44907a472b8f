from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmfer.errors import MmferError
from mmfer.features import prepare as prep
from mmfer.features.acoustic import AcousticExtractor
from mmfer.features.audio import AudioError, load_audio
from mmfer.features.lexical import StaticVectors, make_encoder
from mmfer.features.store import FeatureStore


def _tone(path: Path, seconds: float, sr: int = 16000, channels: int = 1) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


@pytest.mark.parametrize("name, dim", [("compare", 65), ("egemaps", 25)])
def test_acoustic_shapes_and_conversion(tmp_path: Path, name: str, dim: int):
    ext = AcousticExtractor(name)
    mono = ext(_tone(tmp_path / "a.wav", 1.0))
    stereo = ext(_tone(tmp_path / "b.wav", 1.0, sr=44100, channels=2))
    assert mono.shape[1] == dim and mono.dtype == np.float32
    assert abs(len(mono) - 100) <= 6 and abs(len(stereo) - len(mono)) <= 1  # 10 ms frames, rate converted
    assert np.isfinite(mono).all()


def test_bad_audio_reasons(tmp_path: Path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF????WAVEjunkjunkjunk")
    _tone(tmp_path / "short.wav", 0.05)
    reasons = {}
    for name in ("missing.wav", "empty.wav", "junk.wav", "short.wav"):
        with pytest.raises(AudioError) as info:
            load_audio(tmp_path / name)
        reasons[name] = info.value.reason
    assert reasons["missing.wav"] == "missing audio file" and reasons["empty.wav"] == "empty audio file"
    assert reasons["junk.wav"].startswith("unreadable audio") and reasons["short.wav"].startswith("audio too short")


def _digest(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name not in ("corpus.parquet",)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from iemocap_fixture import write_iemocap

    root = write_iemocap(tmp_path_factory.mktemp("c"))
    store = tmp_path_factory.mktemp("s") / "store"
    prep.prepare(root, store, workers=2, shard_size=2, progress=False)
    return root, store


def test_store_reopens_and_loads_single_utterances(prepared):
    root, store = prepared
    fs = FeatureStore(store)
    assert fs.modalities == ("audio", "text")
    table = fs.corpus.table.set_index("utt_id")
    ac, lx, po = fs.features["acoustic"], fs.features["lexical"], fs.features["pooled"]
    assert ac.dim == 7 * 512 and lx.dim == 384 and lx.data.dtype == np.float16 and ac.data.dtype == np.float16
    assert po.dim == 7 * 1024 and po.data.dtype == np.float32 and fs.features["functionals"].dim == 6373
    assert isinstance(ac.data, np.memmap)
    for u in table.index:
        dur = sf.info(table.loc[u, "audio"]).duration
        assert abs(ac.length(u) - dur * 50) <= 1 and po.length(u) == 1  # 20 ms frames; one pooled vector
        assert lx.get(u).shape == (len(table.loc[u, "words"]), 384)  # one vector per word
    again = FeatureStore(store)
    u = "Ses01F_impro01_M000"
    assert np.array_equal(again.features["acoustic"].get(u), ac.get(u))
    # the stored streams are what the extractor computes for that file, in one pass
    from mmfer.features.whisper import WhisperEncoderFeatures

    expected = WhisperEncoderFeatures().extract_streams(load_audio(table.loc[u, "audio"]))
    assert np.allclose(ac.get(u), expected["acoustic"], atol=2e-2, rtol=1e-2)
    assert np.allclose(po.get(u), expected["pooled"], atol=1e-3, rtol=1e-3)


def test_finished_prepare_is_a_noop(prepared):
    root, store = prepared
    def features():
        return {p: p.stat().st_mtime_ns for p in store.glob("*-*/*") if p.is_file()}

    before = features()
    res = prep.prepare(root, store, progress=False)
    assert sorted(res.reused) == ["acoustic", "functionals", "lexical", "pooled"]
    assert len(before) == 16 and features() == before  # nothing re-extracted or rewritten


@pytest.fixture()
def one_thread():
    """torch on one thread, as in each of the fixture's two worker processes: a float sum split over another
    number of threads may differ in its last bit, and the test compares stores byte by byte."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resume_after_interruption_equals_clean_run(prepared, tmp_path: Path, monkeypatch, one_thread):
    root, clean = prepared
    store = tmp_path / "store"
    calls = {"n": 0}
    real = prep.extract_shard

    def flaky(settings, *args):
        calls["n"] += "acoustic" in settings
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the Whisper pass's second shard
        return real(settings, *args)

    monkeypatch.setattr(prep, "extract_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(root, store, workers=1, shard_size=2, progress=False)
    folder = next(store.glob("acoustic-*"))
    assert not (folder / "meta.json").exists() and not (store / "store.json").exists()  # not complete
    assert len(list((folder / "parts").glob("*.npz"))) == 1  # first shard kept
    with pytest.raises(MmferError, match="not a finished feature store"):
        FeatureStore(store)
    monkeypatch.setattr(prep, "extract_shard", real)
    done = []
    record = lambda path, *a: (done.append(f"{path.parent.parent.name[:8]}/{path.name}"), real_write(path, *a))  # noqa: E731
    monkeypatch.setattr(prep, "write_shard", record)
    prep.prepare(root, store, workers=1, shard_size=2, progress=False)
    assert [d for d in done if d.startswith("acoustic")] == ["acoustic/shard-00001.npz", "acoustic/shard-00002.npz"]
    assert _digest(store) == _digest(clean)


real_write = prep.write_shard


def test_passes_share_one_map_word_pass_first_in_few_units(prepared, tmp_path: Path, one_thread):
    """On a CPU the passes go to the executor as one map (a pass's last shards share the workers with the
    next pass's first), the word pass first and its shards together in one unit; the store is the same."""
    from mmfer.engine import Serial

    root, clean = prepared
    calls = []

    class Recording(Serial):
        def has_gpus(self):
            return False

        def map(self, fn, jobs, cpus=1, gpus=0):
            calls.append([[sorted(job[0]) for job in unit] for (unit,) in jobs])
            return super().map(fn, jobs, cpus, gpus)

    prep.prepare(root, tmp_path / "store", shard_size=2, progress=False, executor=Recording())
    (units,) = calls
    n = len(units[0])
    assert n >= 2 and units[0] == [["lexical"]] * n  # every word shard in the first unit
    assert [u for unit in units[1:] for u in unit] == [["acoustic", "pooled"]] * n + [["functionals"]] * n
    assert all(len(unit) == 1 for unit in units[1:])  # audio shards one per unit
    assert _digest(tmp_path / "store") == _digest(clean)


def test_passes_asking_for_other_resources_map_separately():
    plan = lambda gpu: prep._Pass({}, [], [], [], [], [], gpu, False)  # noqa: E731
    a, b, c, d = plan(True), plan(False), plan(False), plan(True)
    assert prep._groups([a, b, c, d]) == [[a], [b, c], [d]]
    assert prep._groups([b, c]) == [[b, c]]


def test_a_merge_that_fails_in_the_background_is_reported_and_resumed(prepared, tmp_path: Path, monkeypatch,
                                                                     one_thread):
    """A pass's shards are merged in a background thread while the next pass extracts: a merge that fails
    (here: the Whisper frames', disk full) still fails the prepare, with its own message, after the later
    passes ran; the next prepare merges the kept shards and extracts nothing again."""
    root, clean = prepared
    store = tmp_path / "store"
    real = prep.finalize

    def full(folder, *a):
        if folder.name.startswith("acoustic"):
            raise MmferError(f"{folder}: no space left on the device")
        return real(folder, *a)

    monkeypatch.setattr(prep, "finalize", full)
    with pytest.raises(MmferError, match="no space left"):
        prep.prepare(root, store, workers=1, shard_size=2, progress=False)
    assert (next(store.glob("functionals-*")) / "meta.json").is_file()  # the passes after it finished
    assert not (store / "store.json").exists()
    monkeypatch.setattr(prep, "finalize", real)
    monkeypatch.setattr(prep, "extract_shard", lambda *a: pytest.fail("a kept shard was extracted again"))
    prep.prepare(root, store, workers=1, shard_size=2, progress=False)
    assert _digest(store) == _digest(clean)


def test_merging_shards_holds_one_copy_buffer_not_the_stream(tmp_path: Path, monkeypatch):
    import tracemalloc

    from mmfer.features import store as st

    rng = np.random.default_rng(0)
    (tmp_path / "parts").mkdir()
    frames = {}
    for k in range(4):  # 4 shards of 3 utterances, 8 MB of float16 frames in all
        ids = [f"u{k}{i}" for i in range(3)]
        arrays = [rng.standard_normal((int(n), 1024), dtype=np.float32) for n in rng.integers(300, 400, 3)]
        frames.update(zip(ids, arrays))
        st.write_shard(st.shard_path(tmp_path, k), ids, arrays, {}, "float16")
    monkeypatch.setattr(st, "COPY_BYTES", 1 << 20)
    tracemalloc.start()
    meta = st.finalize(tmp_path, 4, {"kind": "acoustic", "name": "x", "dim": 1024, "dtype": "float16"})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 << 20, f"the merge held {peak / 2**20:.1f} MB"  # loading the shards took 8 MB and more
    fs = st.FeatureSet.open(tmp_path)
    assert meta["frames"] == sum(map(len, frames.values())) and fs.ids == list(frames)
    for u, a in frames.items():
        np.testing.assert_array_equal(fs.get(u), a.astype(np.float16).astype(np.float32))


def test_a_shard_is_held_in_its_store_dtype(tmp_path: Path, monkeypatch):
    """A batching encoder's float32 states become the store's float16 as each batch arrives: the shard
    never holds its float32 copy whole (Whisper's states of 64 utterances of 30 s: 1.4 GB)."""
    monkeypatch.setattr(prep, "HOLD_SECONDS", 1.5)  # two utterances of 1 s: two batches
    batches = []

    class Encoder:
        def extract_many(self, signals):
            batches.append(len(signals))
            return [np.ones((len(x) // 320, 8), np.float32) for x in signals]

    paths = [(str(_tone(tmp_path / f"{i}.wav", 1.0)), None, None) for i in range(2)]
    arrays, errors = prep._audio(Encoder(), {"acoustic": {"dtype": "float16"}}, ["a", "b"], paths)
    assert batches == [1, 1] and not errors
    assert [(a.dtype, a.shape) for a in arrays["acoustic"]] == [(np.float16, (50, 8))] * 2


def test_bad_audio_is_reported_not_fatal(tmp_path: Path):
    from iemocap_fixture import write_iemocap

    root = write_iemocap(tmp_path / "c")
    wav = root / "Session1" / "sentences" / "wav" / "Ses01F_impro01"
    (wav / "Ses01F_impro01_F000.wav").unlink()
    (wav / "Ses01F_impro01_M000.wav").write_bytes(b"not audio at all")
    # shards of two: the two failures fill one shard, which must still merge (it held no frames at all)
    res = prep.prepare(root, tmp_path / "s", workers=1, shard_size=2, progress=False)
    with (tmp_path / "s" / "errors.csv").open() as fh:
        rows = {(r["utt_id"], r["stage"]): r["reason"] for r in csv.DictReader(fh)}
    assert rows["Ses01F_impro01_F000", "acoustic"] == "missing audio file"
    assert rows["Ses01F_impro01_F000", "functionals"] == "missing audio file"  # every audio stream says so
    assert rows["Ses01F_impro01_F000", "pooled"] == "missing audio file"
    assert rows["Ses01F_impro01_M000", "acoustic"].startswith("unreadable audio")
    assert len(res.errors) == 6
    fs = FeatureStore(tmp_path / "s")
    assert len(fs.usable_ids(["acoustic", "lexical"])) == 4 and len(fs.usable_ids(["lexical"])) == 6
    with pytest.raises(MmferError, match="2 utterance\\(s\\) failed extraction"):
        prep.prepare(root, tmp_path / "s", strict=True, progress=False)


def test_changed_setting_builds_a_new_feature_set(prepared, tmp_path: Path):
    root, _ = prepared
    store = tmp_path / "s"
    prep.prepare(root, store, workers=1, progress=False)
    first = json.loads((store / "store.json").read_text())["features"]["acoustic"]
    prep.prepare(root, store, acoustic="egemaps", workers=1, progress=False)
    second = json.loads((store / "store.json").read_text())["features"]["acoustic"]
    assert first != second and (store / first / "meta.json").is_file()
    assert FeatureStore(store).features["acoustic"].dim == 25


def test_transcript_only_manifest_has_no_acoustic_stage(tmp_path: Path):
    (tmp_path / "m.csv").write_text("id,text,label,speaker\na,I am furious,ang,s1\nb,what a day,hap,s2\n")
    vec = tmp_path / "glove.txt"
    vec.write_text("i 1 0 0\nam 0 1 0\nfurious 0 0 1\n")
    prep.prepare(tmp_path / "m.csv", tmp_path / "s", lexical=str(vec), progress=False)
    fs = FeatureStore(tmp_path / "s")
    assert list(fs.features) == ["lexical"] and fs.modalities == ("text",)
    assert fs.features["lexical"].get("a").tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert fs.features["lexical"].get("b").tolist() == [[0, 0, 0]] * 3  # unknown words: zeros


def test_minilm_word_vectors_average_their_pieces():
    import torch

    enc = make_encoder("minilm")
    words = ["i", "don't", "know", "[laughter]"]
    (vecs,) = enc.encode([words])
    assert vecs.shape == (4, 384)
    batch = enc.tokenizer([words], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**batch).last_hidden_state[0].numpy()
    ids = batch.word_ids(0)
    pieces = [k for k, w in enumerate(ids) if w == 1]
    assert len(pieces) == 3  # don ' t
    assert np.allclose(vecs[1], hidden[pieces].mean(axis=0), atol=1e-5)
    long = [f"w{i}" for i in range(300)]  # longer than one encoder window
    assert enc.encode([long])[0].shape == (300, 384)


def test_a_local_text_encoder_is_described_without_importing_transformers(tmp_path: Path):
    """prepare's parent builds every extractor for its settings: a local folder's encoder reads config.json,
    and transformers (about a second to import) waits for the first words; a broken config is named."""
    import subprocess
    import sys

    code = ("import sys; from mmfer.features.lexical import make_encoder; e = make_encoder('minilm'); "
            "s = e.settings(); print(e.dim, s['dim'], 'transformers' in sys.modules); e.tokenizer; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["384", "384", "False", "True"]
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MmferError, match=r"config\.json: not a readable model config"):
        make_encoder(str(tmp_path))


def test_lexical_errors(tmp_path: Path):
    with pytest.raises(MmferError, match="never downloads models at run time"):
        make_encoder("no-such-org/no-such-model")
    bad = tmp_path / "v.txt"
    bad.write_text("a 1 2\nb 1 x\n")
    with pytest.raises(MmferError, match=r"v\.txt:2: not a vectors line"):
        StaticVectors(bad)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def test_worker_processes_share_the_cores():
    """Extraction workers (and batch prediction's read-ahead) split the cores instead of each taking all."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from mmfer.engine import init_worker

    with ProcessPoolExecutor(2, initializer=init_worker, initargs=(2,)) as pool:
        assert pool.submit(_threads).result() == max(1, (os.cpu_count() or 1) // 2)
    with ProcessPoolExecutor(1, initializer=init_worker, initargs=(1,)) as pool:
        assert pool.submit(_threads).result() == (os.cpu_count() or 1)


def _voice(seconds: float, seed: int) -> np.ndarray:
    """A gliding, amplitude-modulated harmonic tone in noise with a silent start: pitch, voicing and
    spectral features all vary."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 110 + 80 * t / seconds + 10 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.4 * np.sin(2 * np.pi * 2 * t))
    x = 0.2 * x + 0.01 * rng.standard_normal(len(t))
    x[: int(0.2 * 16000)] = 0.001 * rng.standard_normal(int(0.2 * 16000))
    return x.astype(np.float32)


@pytest.mark.parametrize("cls, name", [("functionals", "compare"), ("lld", "compare"), ("functionals", "egemaps")])
def test_forked_opensmile_equals_a_fresh_opensmile_call(cls: str, name: str):
    """The openSMILE server (one graph, forked per signal) gives openSMILE's own values to the bit."""
    from mmfer.features.acoustic import FunctionalsExtractor

    ext = (FunctionalsExtractor if cls == "functionals" else AcousticExtractor)(name)
    for i, seconds in enumerate((0.4, 1.3, 2.7)):
        x = _voice(seconds, i)
        own = np.nan_to_num(ext.smile.process_signal(x, 16000).to_numpy(dtype=np.float32), nan=0.0, posinf=0.0,
                            neginf=0.0)
        got = ext.extract(x)
        assert got.shape == own.shape and got.dtype == np.float32
        assert np.array_equal(got, own)
    proc = ext.forked._proc
    assert proc is not None and proc.poll() is None  # the values came from the server, not the fallback


def test_forked_opensmile_restarts_or_falls_back(monkeypatch):
    from mmfer.features import smile_fork
    from mmfer.features.acoustic import FunctionalsExtractor

    x = _voice(1.0, 7)
    ext = FunctionalsExtractor("compare")
    first = ext.extract(x)
    old = ext.forked._proc
    old.kill()
    old.wait()
    assert np.array_equal(ext.extract(x), first)  # a server that died is replaced
    assert ext.forked._proc is not old and ext.forked._proc.poll() is None
    proc = ext.forked._proc
    del ext  # the server ends with its extractor
    import gc

    gc.collect()
    assert proc.wait(timeout=10) == 0

    monkeypatch.setattr(smile_fork, "SERVER", Path("/nonexistent/smile_server.py"))
    broken = FunctionalsExtractor("compare")
    assert broken.forked.process(x) is None and broken.forked._failed
    assert np.array_equal(broken.extract(x), first)  # no server: openSMILE's own call, same values


def test_a_forked_process_gets_its_own_opensmile_server():
    """A worker forked after its parent used openSMILE (a pool after a prediction), even while another thread
    of the parent was in a call, uses a server of its own: the parent's is busy with the parent's calls, and
    both writing into one pipe would mix their answers."""
    import os
    import select

    from mmfer.features.acoustic import FunctionalsExtractor

    ext = FunctionalsExtractor("compare")
    a, b = _voice(1.1, 3), _voice(0.9, 4)
    want_a, want_b = ext.extract(a), ext.extract(b)
    parent_server = ext.forked._proc.pid
    r, w = os.pipe()
    with ext.forked._lock:  # as if another thread of the parent were in a call at the fork
        pid = os.fork()
        if pid == 0:  # the child: its own server, the right values
            ok = False
            try:
                ok = all(np.array_equal(ext.extract(b), want_b) for _ in range(3)) and \
                    ext.forked._proc.pid != parent_server
            finally:
                os.write(w, b"1" if ok else b"0")
                os._exit(0)
    os.close(w)
    same = [np.array_equal(ext.extract(a), want_a) for _ in range(3)]  # meanwhile, the parent's own calls
    ready, _, _ = select.select([r], [], [], 60)
    child_ok = os.read(r, 1) if ready else b"hung"
    os.close(r)
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert child_ok == b"1" and all(same) and ext.forked._proc.pid == parent_server
