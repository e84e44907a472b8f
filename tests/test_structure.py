"""The plug-in points: stream table, extractor / model / fusion / corpus-reader registries, run folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmfer.corpora import READERS, detect
from mmfer.errors import MmferError
from mmfer.features.base import EXTRACTORS
from mmfer.features.extractors import extractor_class, extractor_from_settings
from mmfer.models.fusion import FUSIONS
from mmfer.models.registry import MODELS, get_model, preference_order
from mmfer.streams import STREAMS, extracted, modalities_of

SRC = Path(__file__).resolve().parent.parent / "src" / "mmfer"


def test_every_model_reads_declared_streams_and_known_fusion():
    for spec in MODELS.values():
        assert set(spec.streams) <= set(STREAMS), spec
        assert spec.fusion in FUSIONS or spec.family == "linear"
    assert get_model("audio").modalities == ("audio",) and get_model("mmmf").modalities == ("audio", "text")
    assert extracted(get_model("mmmf").streams) == ["acoustic", "functionals", "pooled", "lexical"]  # not derived
    assert modalities_of(["context"]) == ("text",)
    with pytest.raises(MmferError, match="unknown model 'nope'"):
        get_model("nope")


def test_preference_order_comes_from_the_registry():
    with_text = preference_order(("audio", "text"))
    assert with_text[0] == "mmmf" and with_text.index("audio") < with_text.index("audio-svm")
    audio_only = preference_order(("audio",))
    assert audio_only[0] == "audio" and all(get_model(m).modalities == ("audio",) for m in audio_only)


def test_extractors_rebuild_from_their_settings():
    extractor_class("opensmile-lld")  # loads the built-in ones
    assert {"opensmile-lld", "opensmile-functionals", "transformer", "static-vectors", "whisper"} <= set(EXTRACTORS)
    for family, name, hop, dim in (("opensmile-lld", "egemaps", 0.01, 25),
                                   ("opensmile-functionals", "egemaps", None, 88)):
        ext = EXTRACTORS[family](name)
        again = extractor_from_settings(ext.settings())
        assert type(again) is type(ext) and again.name == name
        assert again.hop_seconds == hop and again.dim == dim and ext.settings()["kind"] == ext.stream
    with pytest.raises(MmferError, match="unknown feature extractor"):
        extractor_class("nope")


def test_functionals_extractor_gives_one_vector(sample_corpus):
    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio

    ext = EXTRACTORS["opensmile-functionals"]("egemaps")
    x = ext.extract(load_audio(read_corpus(sample_corpus).table.iloc[0]["audio"]))
    assert x.shape == (1, 88) and x.std() > 0


def test_corpus_readers_are_detected_by_protocol(tmp_path, iemocap_root):
    assert {"iemocap", "manifest"} <= set(READERS)
    csv = tmp_path / "m.csv"
    csv.write_text("id,text,label,speaker\na,hi,neu,s\n")
    assert detect(iemocap_root) == "iemocap" and detect(csv) == "manifest"
    c = READERS["manifest"].read(csv)
    assert c.has("splits") is False and set(c.capabilities) == {"word_times", "dialogues", "sessions", "splits"}
    assert READERS["iemocap"].read(iemocap_root).has("word_times")


def test_serve_and_analysis_do_not_import_training():
    for folder in ("serve", "analysis"):
        for f in (SRC / folder).rglob("*.py"):
            assert "mmfer.training" not in f.read_text(), f
    code = ("import sys, mmfer.serve.predictor, mmfer.analysis.report; "
            "print(any(m.startswith('mmfer.training') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cli_help_does_not_import_torch():
    """`mmfer --help` and `mmfer cv --help` (the model registry's list) print without torch's 2 s import."""
    code = ("import sys\nfrom typer.testing import CliRunner\nimport mmfer.cli\n"
            "r = CliRunner().invoke(mmfer.cli.app, ['cv', '--help'])\n"
            "assert r.exit_code == 0 and 'mmmf' in r.output, r.output\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from mmfer.models import EmotionModel, build_model  # the lazy names still resolve

    assert callable(build_model) and EmotionModel.__name__ == "EmotionModel"


def _stage_order() -> dict[str, int]:
    """The stage order docs/architecture.md states: each line of its 'stage order' block is one stage, the
    names on it the top-level modules or folders of src/mmfer in that stage."""
    text = (SRC.parent.parent / "docs" / "architecture.md").read_text()
    block = text.split("<!-- stage order -->")[1].split("```")[1]
    lines = [line.split(":", 1)[1].split() for line in block.strip().splitlines() if ":" in line]
    return {name: i for i, names in enumerate(lines) for name in names}


def _imports(path: Path, module: str) -> list[str]:
    """Every mmfer module a file imports (import statements anywhere, also inside functions)."""
    import ast

    out = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            head = ".".join(p for p in (base, node.module or "") if p)
            out += [f"{head}.{a.name}" for a in node.names]  # from mmfer import runs: mmfer.runs
    return [m for m in out if m == "mmfer" or m.startswith("mmfer.")]


def test_no_import_goes_up_the_stage_order():
    order = _stage_order()

    def stage(module: str) -> int:
        parts = module.split(".")
        return order["__init__" if len(parts) == 1 else parts[1]]

    assert set(order) >= {p.stem if p.is_file() else p.name for p in SRC.iterdir()
                          if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))}
    upward = []
    for f in SRC.rglob("*.py"):
        module = ".".join(f.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for target in _imports(f, module):
            if stage(target) > stage(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward
