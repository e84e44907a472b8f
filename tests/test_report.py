from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from mmfer.analysis import plots
from mmfer.analysis.report import build_report
from mmfer.config import load_config
from mmfer.corpora.iemocap import parse_wdseg
from mmfer.errors import MmferError
from mmfer.training.cv import run_cv
from synthetic_store import make_store

CFG = {"model": {"hidden": 8, "attention_dim": 8, "fusion_dim": 8, "frame_reduction": 2},
       "train": {"max_epochs": 2, "threads": 1}}
SECTIONS = ("results", "confusion", "gate", "examples", "curves")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("r")
    store = make_store(base / "store", per_speaker=8)
    for m in ("audio", "mmmf"):
        run_cv(store, m, load_config(None, CFG), base / "runs" / m, progress=False, echo=lambda s: None)
    return base


def _images(page: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for alt, data in re.findall(r'alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page):
        out.setdefault(alt, []).append(base64.b64decode(data))
    return out


def test_report_has_every_section_with_real_images(runs):
    path = build_report([runs / "runs"], runs / "report")
    page = path.read_text()
    for s in SECTIONS:
        assert f"<section id='{s}'>" in page
    imgs = _images(page)
    assert {"confusion matrix audio", "confusion matrix mmmf", "per-class recall", "gate distribution mmmf",
            "probabilities", "word attention", "frame attention", "learning curves mmmf"} <= set(imgs)
    for pngs in imgs.values():
        for png in pngs:
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "confident and right" in page and "audio-led" in page and "text-led" in page
    assert page.count("<tr><td>mmmf</td><td>Ses0") == 4  # per-fold rows


def test_report_with_one_unimodal_model(runs):
    page = build_report([runs / "runs" / "audio"], runs / "r1").read_text()
    for s in SECTIONS:
        assert f"<section id='{s}'>" in page
    assert "No GMU model among these runs" in page
    imgs = _images(page)
    assert "frame attention" in imgs and "word attention" not in imgs


def test_frame_attention_boundaries_at_wdseg_times(iemocap_root: Path):
    wd = iemocap_root / "Session1/sentences/ForcedAlignment/Ses01F_impro01/Ses01F_impro01_F000.wdseg"
    words, starts, ends = parse_wdseg(wd)
    fig = plots.frame_attention(np.zeros(16000 * 2), 16000, np.full(60, 1 / 60), 0.03, words, starts, ends)
    ax = fig.axes[0]
    xs = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == plots.BOUNDARY_GID)
    assert xs == pytest.approx(sorted(starts + ends))
    assert xs[0] == pytest.approx(0.10) and xs[-1] == pytest.approx(1.51)
    assert [t.get_text() for t in ax.texts] == words
    # the attention steps cover exactly 60 x 30 ms
    patch = fig.axes[1].patches[0]
    assert patch.get_path().vertices[:, 0].max() == pytest.approx(1.8)
    # frames that start later (the extractor left out the leading quiet) are drawn where they are
    late = plots.frame_attention(np.zeros(16000 * 3), 16000, np.full(60, 1 / 60), 0.03, offset=0.4)
    xs = late.axes[1].patches[0].get_path().vertices[:, 0]
    assert xs.min() == pytest.approx(0.4) and xs.max() == pytest.approx(2.2)


def test_report_refuses_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(MmferError, match="no finished cv run"):
        build_report([tmp_path / "run"], tmp_path / "out")
